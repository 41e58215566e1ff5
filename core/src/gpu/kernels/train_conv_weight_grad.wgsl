// The gradient of a convolution's weights (stride s = `p.spare3`, 0 means 1): Σ_oy,ox g[img, o, oy, ox] ·
// x[img, ci, s·oy + ky − pad, s·ox + kx − pad]. `p.flag` 0: one invocation per image and weight writes
// partial[img, o, ci, ky, kx] (train_sum_rows then adds the images in order: parallel enough for a small layer on a
// large GPU); 1: one invocation per weight adds the images in order itself (a large layer, without a buffer of
// per-image partials). Deterministic either way.
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

// The first output position whose tap lands at or after input 0, and the end of those landing before `size`.
fn tap_range(kk: u32, size: u32, out: u32, s: u32) -> vec2<u32> {
    let lo = i32(p.pad) - i32(kk);
    let first = select(0u, u32((lo + i32(s) - 1) / i32(s)), lo > 0);
    let hi = i32(size) + i32(p.pad) - i32(kk);
    let end = select(0u, min(u32((hi + i32(s) - 1) / i32(s)), out), hi > 0);
    return vec2<u32>(first, max(first, end));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let s = max(p.spare3, 1u);
    let weights = p.co * p.c * p.k * p.k;
    let at = i % weights;
    let kx = at % p.k;
    let ky = (at / p.k) % p.k;
    let ci = (at / (p.k * p.k)) % p.c;
    let o = at / (p.k * p.k * p.c);
    let ys = tap_range(ky, p.h, p.ho, s);
    let xs = tap_range(kx, p.w, p.wo, s);
    var first = i / weights;
    var end = first + 1u;
    if (p.flag == 1u) {
        first = 0u;
        end = p.n;
    }
    var acc = 0.0;
    for (var img = first; img < end; img++) {
        let gp = (img * p.co + o) * p.ho * p.wo;
        let xp = (img * p.c + ci) * p.h * p.w;
        var sum = 0.0;
        for (var oy = ys.x; oy < ys.y; oy++) {
            let iy = oy * s + ky - p.pad;
            for (var ox = xs.x; ox < xs.y; ox++) {
                sum += g[gp + oy * p.wo + ox] * x[xp + iy * p.w + ox * s + kx - p.pad];
            }
        }
        acc += sum;
    }
    partial[i] = acc;
}
