// Square convolution with a per-channel affine epilogue (the BatchNorm after it, or scale 1 and shift 0), stride
// `p.spare3` (0 means 1): y[n, o, oy, ox] = (b[o] + Σ x[n, ci, s·oy + ky − pad, s·ox + kx − pad] · w[o, ci, ky, kx])
// · scale[o] + shift[o].
// The epilogue keeps the CPU's order of operations (convolution, then BatchNorm): folding the scale into the weights
// rounds differently, and in flat image regions max-pooling then breaks its ties between equal values differently.
// Each invocation computes a block of 4 output channels × 4 neighbouring positions of one row (8 loads per 16
// multiply-adds instead of 2 per one: emulated adapters pay for every load).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> scale: array<f32>;
@group(0) @binding(6) var<storage, read> shift: array<f32>;

// x[plane, iy, ix], or 0 outside the image (the padding).
fn input_at(plane: u32, iy: i32, ix: i32) -> f32 {
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let at = plane + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w + u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[at], inside);
}

// w[o, ci, ky, kx], or 0 for a channel beyond the last.
fn weight_at(o: u32, ci: u32, ky: u32, kx: u32) -> f32 {
    let at = ((min(o, p.co - 1u) * p.c + ci) * p.k + ky) * p.k + kx;
    return select(0.0, wt[at], o < p.co);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let x_blocks = (p.wo + 3u) / 4u;
    let o_blocks = (p.co + 3u) / 4u;
    let ox0 = (i % x_blocks) * 4u;
    let oy = (i / x_blocks) % p.ho;
    let o0 = ((i / (x_blocks * p.ho)) % o_blocks) * 4u;
    let img = i / (x_blocks * p.ho * o_blocks);
    var a0 = vec4<f32>(select(0.0, bias[min(o0, p.co - 1u)], o0 < p.co));
    var a1 = vec4<f32>(select(0.0, bias[min(o0 + 1u, p.co - 1u)], o0 + 1u < p.co));
    var a2 = vec4<f32>(select(0.0, bias[min(o0 + 2u, p.co - 1u)], o0 + 2u < p.co));
    var a3 = vec4<f32>(select(0.0, bias[min(o0 + 3u, p.co - 1u)], o0 + 3u < p.co));
    let s = i32(max(p.spare3, 1u));
    for (var ci = 0u; ci < p.c; ci++) {
        let plane = (img * p.c + ci) * p.h * p.w;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = i32(oy * u32(s) + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let ix = i32(ox0 * u32(s) + kx) - i32(p.pad);
                let v = vec4<f32>(input_at(plane, iy, ix), input_at(plane, iy, ix + s), input_at(plane, iy, ix + 2 * s), input_at(plane, iy, ix + 3 * s));
                a0 += v * weight_at(o0, ci, ky, kx);
                a1 += v * weight_at(o0 + 1u, ci, ky, kx);
                a2 += v * weight_at(o0 + 2u, ci, ky, kx);
                a3 += v * weight_at(o0 + 3u, ci, ky, kx);
            }
        }
    }
    let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var j = 0u; j < 4u; j++) {
        let o = o0 + j;
        if (o >= p.co) {
            break;
        }
        let row = ((img * p.co + o) * p.ho + oy) * p.wo;
        for (var q = 0u; q < 4u; q++) {
            if (ox0 + q < p.wo) {
                y[row + ox0 + q] = acc[j][q] * scale[o] + shift[o];
            }
        }
    }
}
