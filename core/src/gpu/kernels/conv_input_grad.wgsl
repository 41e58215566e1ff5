// The gradient of a convolution's input, stride s = `p.spare3` (0 means 1): dx[n, ci, iy, ix] = Σ g[n, o, oy, ox] ·
// w[o, ci, ky, kx] over the taps with s·oy = iy + pad − ky and s·ox = ix + pad − kx.
// Each invocation computes a block of 4 input channels × 4 neighbouring positions of one row (see conv_forward).
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// g[plane, sy / s, sx / s], or 0 outside the output or between the stride's positions.
fn grad_at(plane: u32, sy: i32, sx: i32, s: i32) -> f32 {
    let oy = sy / s;
    let ox = sx / s;
    let inside = sy >= 0 && sx >= 0 && sy % s == 0 && sx % s == 0 && oy < i32(p.ho) && ox < i32(p.wo);
    let at = plane + u32(clamp(oy, 0, i32(p.ho) - 1)) * p.wo + u32(clamp(ox, 0, i32(p.wo) - 1));
    return select(0.0, g[at], inside);
}

// w[o, ci, ky, kx], or 0 for an input channel beyond the last.
fn weight_at(o: u32, ci: u32, ky: u32, kx: u32) -> f32 {
    let at = ((o * p.c + min(ci, p.c - 1u)) * p.k + ky) * p.k + kx;
    return select(0.0, wt[at], ci < p.c);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let x_blocks = (p.w + 3u) / 4u;
    let c_blocks = (p.c + 3u) / 4u;
    let ix0 = (i % x_blocks) * 4u;
    let iy = (i / x_blocks) % p.h;
    let c0 = ((i / (x_blocks * p.h)) % c_blocks) * 4u;
    let img = i / (x_blocks * p.h * c_blocks);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    let s = i32(max(p.spare3, 1u));
    for (var o = 0u; o < p.co; o++) {
        let plane = (img * p.co + o) * p.ho * p.wo;
        for (var ky = 0u; ky < p.k; ky++) {
            let sy = i32(iy + p.pad) - i32(ky);
            if (sy < 0 || sy % s != 0 || sy / s >= i32(p.ho)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let sx = i32(ix0 + p.pad) - i32(kx);
                let v = vec4<f32>(grad_at(plane, sy, sx, s), grad_at(plane, sy, sx + 1, s), grad_at(plane, sy, sx + 2, s), grad_at(plane, sy, sx + 3, s));
                a0 += v * weight_at(o, c0, ky, kx);
                a1 += v * weight_at(o, c0 + 1u, ky, kx);
                a2 += v * weight_at(o, c0 + 2u, ky, kx);
                a3 += v * weight_at(o, c0 + 3u, ky, kx);
            }
        }
    }
    let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var j = 0u; j < 4u; j++) {
        let ci = c0 + j;
        if (ci >= p.c) {
            break;
        }
        let row = ((img * p.c + ci) * p.h + iy) * p.w;
        for (var q = 0u; q < 4u; q++) {
            if (ix0 + q < p.w) {
                dx[row + ix0 + q] = acc[j][q];
            }
        }
    }
}
