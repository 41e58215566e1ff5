// The gradient of a stride-1 convolution's input: dx[n, ci, iy, ix] = Σ g[n, o, iy + pad − ky, ix + pad − kx] · w[o, ci, ky, kx].
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let ci = (i / (p.w * p.h)) % p.c;
    let img = i / (p.w * p.h * p.c);
    var acc = 0.0;
    for (var o = 0u; o < p.co; o++) {
        let plane = (img * p.co + o) * p.ho * p.wo;
        let wbase = (o * p.c + ci) * p.k * p.k;
        for (var ky = 0u; ky < p.k; ky++) {
            let oy = i32(iy + p.pad) - i32(ky);
            if (oy < 0 || oy >= i32(p.ho)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let ox = i32(ix + p.pad) - i32(kx);
                if (ox < 0 || ox >= i32(p.wo)) {
                    continue;
                }
                acc += g[plane + u32(oy) * p.wo + u32(ox)] * wt[wbase + ky * p.k + kx];
            }
        }
    }
    dx[i] = acc;
}
