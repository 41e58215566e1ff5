// Square convolution, stride 1: y[n, o, oy, ox] = b[o] + Σ x[n, ci, oy + ky − pad, ox + kx − pad] · w[o, ci, ky, kx].
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let o = (i / (p.wo * p.ho)) % p.co;
    let img = i / (p.wo * p.ho * p.co);
    var acc = bias[o];
    for (var ci = 0u; ci < p.c; ci++) {
        let plane = (img * p.c + ci) * p.h * p.w;
        let wbase = (o * p.c + ci) * p.k * p.k;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = i32(oy + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let ix = i32(ox + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                acc += x[plane + u32(iy) * p.w + u32(ix)] * wt[wbase + ky * p.k + kx];
            }
        }
    }
    y[i] = acc;
}
