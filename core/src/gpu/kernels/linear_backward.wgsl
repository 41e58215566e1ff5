// dx[n, i] = Σ_o g[n, o] · w[o, i]; `p.c` inputs, `p.co` outputs.
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let j = i % p.c;
    let img = i / p.c;
    var acc = 0.0;
    for (var o = 0u; o < p.co; o++) {
        acc += g[img * p.co + o] * wt[o * p.c + j];
    }
    dx[i] = acc;
}
