// y = x1 · sigmoid(ReLU(t)), t the spatial branch's pre-activation (convolution with BatchNorm folded in).
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    let q = i % hw;
    let img = i / (p.c * hw);
    y[i] = x1[i] * sigmoid(max(t[img * hw + q], 0.0));
}
