// CBAM backward, channel gate: dlogit[n, ch] = (Σ_q dx1 · x) · gate (1 − gate).
@group(0) @binding(1) var<storage, read> dx1: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogit: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    var dgate = 0.0;
    for (var q = 0u; q < hw; q++) {
        dgate += dx1[i * hw + q] * x[i * hw + q];
    }
    let g = gate[i];
    dlogit[i] = dgate * g * (1.0 - g);
}
