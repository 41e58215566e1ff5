// The gradient of y = a · b for the broadcast factor b (see train_elementwise's `p.k`): one invocation per value of
// b, db = Σ g · a over the values it multiplied (the positions of a channel, or the channels at a position), in a
// fixed order.
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    var acc = 0.0;
    if (p.k == 0u) {
        acc = g[i] * a[i];
    } else if (p.k == 1u) {
        for (var q = 0u; q < hw; q++) {
            acc += g[i * hw + q] * a[i * hw + q];
        }
    } else {
        let base = (i / hw) * p.c * hw + i % hw;
        for (var c = 0u; c < p.c; c++) {
            acc += g[base + c * hw] * a[base + c * hw];
        }
    }
    db[i] = acc;
}
