// Concatenation along the channels: forward (`p.flag` = 0) copies an input of `p.c` channels into the output of
// `p.co` channels from channel `p.k` on; backward (`p.flag` = 1) copies that slice of the output's gradient back.
// One invocation per input value.
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    let q = i % hw;
    let c = (i / hw) % p.c;
    let img = i / (hw * p.c);
    let o = (img * p.co + p.k + c) * hw + q;
    if (p.flag == 0u) {
        dst[o] = src[i];
    } else {
        dst[i] = src[o];
    }
}
