// The gradient of a stride-1 convolution's weights, per image: partial[img, o, ci, ky, kx] = Σ_oy,ox g[img, o, oy, ox] ·
// x[img, ci, oy + ky − pad, ox + kx − pad], one invocation per image and weight (train_sum_rows then adds the images
// in order: deterministic, and parallel enough for a large GPU).
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let weights = p.co * p.c * p.k * p.k;
    let img = i / weights;
    let at = i % weights;
    let kx = at % p.k;
    let ky = (at / p.k) % p.k;
    let ci = (at / (p.k * p.k)) % p.c;
    let o = at / (p.k * p.k * p.c);
    // Output rows and columns whose tap (ky, kx) lands inside the image.
    let oy0 = u32(max(i32(p.pad) - i32(ky), 0));
    let oy1 = u32(clamp(i32(p.h) + i32(p.pad) - i32(ky), 0, i32(p.ho)));
    let ox0 = u32(max(i32(p.pad) - i32(kx), 0));
    let ox1 = u32(clamp(i32(p.w) + i32(p.pad) - i32(kx), 0, i32(p.wo)));
    let gp = (img * p.co + o) * p.ho * p.wo;
    let xp = (img * p.c + ci) * p.h * p.w;
    var acc = 0.0;
    for (var oy = oy0; oy < oy1; oy++) {
        let iy = oy + ky - p.pad;
        for (var ox = ox0; ox < ox1; ox++) {
            acc += g[gp + oy * p.wo + ox] * x[xp + iy * p.w + ox + kx - p.pad];
        }
    }
    partial[i] = acc;
}
