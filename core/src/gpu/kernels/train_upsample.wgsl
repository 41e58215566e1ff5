// Bilinear up-sampling with aligned corners (PyTorch's UpsamplingBilinear2d), `p.h × p.w` → `p.ho × p.wo` per plane.
// `p.flag` 0: y = A_h · x · A_wᵀ, one invocation per output value; 1: the adjoint dx = A_hᵀ · g · A_w, one invocation
// per input value gathering the output positions whose interpolation reads it (no float atomics).

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// Output position `o` of `out` reads input positions `lo` and `hi` of `inp` with weights `1 − frac` and `frac`.
struct Taps {
    lo: u32,
    hi: u32,
    frac: f32,
}

fn taps(o: u32, out: u32, inp: u32) -> Taps {
    var scale = 0.0;
    if (out > 1u) {
        scale = f32(inp - 1u) / f32(out - 1u);
    }
    let at = scale * f32(o);
    let lo = min(u32(floor(at)), inp - 1u);
    return Taps(lo, min(lo + 1u, inp - 1u), at - f32(lo));
}

// The weight of input position `i` in output position `o` (A[o, i]).
fn weight(o: u32, i: u32, out: u32, inp: u32) -> f32 {
    let t = taps(o, out, inp);
    return select(0.0, 1.0 - t.frac, t.lo == i) + select(0.0, t.frac, t.hi == i);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    if (p.flag == 0u) {
        let ox = i % p.wo;
        let oy = (i / p.wo) % p.ho;
        let plane = (i / (p.wo * p.ho)) * p.h * p.w;
        let ty = taps(oy, p.ho, p.h);
        let tx = taps(ox, p.wo, p.w);
        let top = (1.0 - tx.frac) * src[plane + ty.lo * p.w + tx.lo] + tx.frac * src[plane + ty.lo * p.w + tx.hi];
        let bottom = (1.0 - tx.frac) * src[plane + ty.hi * p.w + tx.lo] + tx.frac * src[plane + ty.hi * p.w + tx.hi];
        dst[i] = (1.0 - ty.frac) * top + ty.frac * bottom;
        return;
    }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let plane = (i / (p.w * p.h)) * p.ho * p.wo;
    var acc = 0.0;
    for (var oy = 0u; oy < p.ho; oy++) {
        let a = weight(oy, iy, p.ho, p.h);
        if (a == 0.0) {
            continue;
        }
        var row = 0.0;
        for (var ox = 0u; ox < p.wo; ox++) {
            row += weight(ox, ix, p.wo, p.w) * src[plane + oy * p.wo + ox];
        }
        acc += a * row;
    }
    dst[i] = acc;
}
