// y[n, o] = b[o] + Σ_i x[n, i] · w[o, i]; `p.c` inputs, `p.co` outputs.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let o = i % p.co;
    let img = i / p.co;
    var acc = bias[o];
    for (var j = 0u; j < p.c; j++) {
        acc += x[img * p.c + j] * wt[o * p.c + j];
    }
    y[i] = acc;
}
