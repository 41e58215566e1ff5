// Each pooled gradient to its window's maximum; every other input position (a dropped odd row or column too) gets 0.
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> arg: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let plane = i / (p.w * p.h);
    let ox = ix / 2u;
    let oy = iy / 2u;
    var v = 0.0;
    if (ox < p.wo && oy < p.ho) {
        let o = (plane * p.ho + oy) * p.wo + ox;
        if (arg[o] == (iy % 2u) * 2u + ix % 2u) {
            v = g[o];
        }
    }
    dx[i] = v;
}
