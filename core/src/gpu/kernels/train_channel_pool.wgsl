// Max (`p.k` = 0, first maximum) or mean (`p.k` = 1) over the `p.c` channels at each position: forward (`p.flag` = 0,
// one invocation per image and position; the max's channel in `arg`) or backward (`p.flag` = 1, one per input
// value).
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
        let img = i / hw;
        let q = i % hw;
        let base = img * p.c * hw + q;
        var acc = v[base];
        var at = 0u;
        for (var c = 1u; c < p.c; c++) {
            let x = v[base + c * hw];
            if (p.k == 0u) {
                if (x > acc) {
                    acc = x;
                    at = c;
                }
            } else {
                acc += x;
            }
        }
        if (p.k == 1u) {
            acc = acc / f32(p.c);
        }
        out[i] = acc;
        arg[i] = at;
    } else {
        let q = i % hw;
        let c = (i / hw) % p.c;
        let o = (i / (hw * p.c)) * hw + q;
        if (p.k == 0u) {
            out[i] = select(0.0, v[o], arg[o] == c);
        } else {
            out[i] = v[o] / f32(p.c);
        }
    }
}
