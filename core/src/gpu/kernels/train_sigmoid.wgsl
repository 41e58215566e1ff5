// Sigmoid, forward (`p.flag` = 0: y = σ(x)) or backward (`p.flag` = 1: dx = dy · y · (1 − y) from the output y).
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    if (p.flag == 0u) {
        out[i] = sigmoid(a[i]);
    } else {
        out[i] = a[i] * b[i] * (1.0 - b[i]);
    }
}
