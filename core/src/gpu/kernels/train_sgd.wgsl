// SGD with momentum and L2 weight decay in place, PyTorch's rule and order of operations: g = ∇ + λ·w,
// b = μ·b + g (b = g on the first step, `p.flag` = 1), w = w − lr·b. lr, μ, λ: bitcast(p.spare0, 1, 2).
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let lr = bitcast<f32>(p.spare0);
    let mu = bitcast<f32>(p.spare1);
    let wd = bitcast<f32>(p.spare2);
    let g = grad[i] + wd * w[i];
    var m = g;
    if (p.flag == 0u) {
        m = mu * b[i] + g;
    }
    b[i] = m;
    w[i] = w[i] - lr * m;
}
