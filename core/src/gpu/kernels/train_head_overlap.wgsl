// WARN's inter-head regularisation (Rodríguez et al. 2018) on masks m (`p.n` images × `p.c` heads × `p.h` × `p.w`,
// each summing to one): the masks average-pooled 2×2 (floor), P[a] (`q` positions), their Gram matrix
// G[a, b] = P[a] · P[b], and the penalty λ / (n · heads²) · Σ_images Σ_{a ≠ b} G[a, b]² with λ = bitcast(`p.spare0`).
// `p.flag` 0: one invocation per image writes its Gram matrix and adds its share, λ / heads² · Σ G², to the image's
// loss (`out[2 · img]`, which train_tally averages). 1: one invocation per mask value writes the penalty's gradient,
// λ / (n · heads²) · Σ_{b ≠ a} G[a, b] · P[b, q] over the pooling window's positions, and 0 outside them.
@group(0) @binding(1) var<storage, read> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> gram: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The pooled mask of head `a` of image `img` at pooled position (py, px).
fn pooled(img: u32, a: u32, py: u32, px: u32) -> f32 {
    let top = (img * p.c + a) * p.h * p.w + 2u * py * p.w + 2u * px;
    return (m[top] + m[top + 1u] + m[top + p.w] + m[top + p.w + 1u]) / 4.0;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let weight = bitcast<f32>(p.spare0);
    let heads = p.c;
    let ho = p.h / 2u;
    let wo = p.w / 2u;
    if (p.flag == 0u) {
        var sum = 0.0;
        for (var a = 0u; a < heads; a++) {
            for (var b = 0u; b < heads; b++) {
                var g = 0.0;
                if (a != b) {
                    for (var py = 0u; py < ho; py++) {
                        for (var px = 0u; px < wo; px++) {
                            g += pooled(i, a, py, px) * pooled(i, b, py, px);
                        }
                    }
                }
                gram[(i * heads + a) * heads + b] = g;
                sum += g * g;
            }
        }
        out[2u * i] += weight / f32(heads * heads) * sum;
        return;
    }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let a = (i / (p.w * p.h)) % heads;
    let img = i / (p.w * p.h * heads);
    var d = 0.0;
    if (y < 2u * ho && x < 2u * wo) {
        for (var b = 0u; b < heads; b++) {
            if (b != a) {
                d += gram[(img * heads + a) * heads + b] * pooled(img, b, y / 2u, x / 2u);
            }
        }
    }
    out[i] = weight / f32(p.n * heads * heads) * d;
}
