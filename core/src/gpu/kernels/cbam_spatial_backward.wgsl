// CBAM backward, spatial gate: dt = ReLU-rule(Σ_ch dy · x1 · g(1 − g), t) per position, g = sigmoid(ReLU(t)).
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x1: array<f32>;
@group(0) @binding(3) var<storage, read> t: array<f32>;
@group(0) @binding(4) var<storage, read_write> dt: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    let q = i % hw;
    let img = i / hw;
    let g = sigmoid(max(t[i], 0.0));
    var dg = 0.0;
    for (var ch = 0u; ch < p.c; ch++) {
        let j = (img * p.c + ch) * hw + q;
        dg += dy[j] * x1[j];
    }
    dt[i] = relu_back(dg * g * (1.0 - g), t[i]);
}
