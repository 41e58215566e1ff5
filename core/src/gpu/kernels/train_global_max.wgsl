// Global max-pooling over the positions of each of `p.n · p.c` planes, first maximum: forward (`p.flag` = 0,
// one invocation per plane: y and the position in `arg`) or backward (`p.flag` = 1, one per input value: the
// plane's gradient to its maximum, 0 elsewhere).
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> arg: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    if (p.flag == 0u) {
        var best = v[i * hw];
        var at = 0u;
        for (var q = 1u; q < hw; q++) {
            if (v[i * hw + q] > best) {
                best = v[i * hw + q];
                at = q;
            }
        }
        out[i] = best;
        arg[i] = at;
    } else {
        let plane = i / hw;
        out[i] = select(0.0, v[plane], arg[plane] == i % hw);
    }
}
