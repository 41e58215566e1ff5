// out[c] = Σ_n Σ_q v[n, c, q] over `p.n` images of `p.c` channels of `p.h · p.w` positions: one workgroup per
// channel, each invocation summing a strided share, then a tree in workgroup memory (a fixed order: deterministic).
// A convolution's bias gradient.
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = wid.x + wid.y * groups.x;
    let hw = p.h * p.w;
    let m = p.n * hw;
    var acc = 0.0;
    if (c < p.c) {
        for (var j = t; j < m; j += 256u) {
            acc += v[((j / hw) * p.c + c) * hw + j % hw];
        }
    }
    partial[t] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u && c < p.c) {
        out[c] = partial[0];
    }
}
