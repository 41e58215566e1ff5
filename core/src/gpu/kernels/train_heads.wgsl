// WARN's attention heads (Rodríguez et al. 2018), `p.k` channels per head, `p.c` channels of `p.h · p.w` positions
// in the values. Pooling (`p.flag` 0–2): y[n, ch] = Σ_q v[n, ch, q] · m[n, ch / k, q]; 0 the forward pass, one
// invocation per output; 1 dv = g[n, ch] · m[n, ch / k, q] per value; 2 dm[n, hd, q] = Σ_j g[n, hd·k + j] ·
// v[n, hd·k + j, q] per mask value. Mixing of flat values (`p.flag` 3–5, `p.c` = heads · k, positions 1):
// y[n, j] = Σ_hd v[n, hd·k + j] · w[n, hd]; 3 forward, one invocation per output; 4 dv = g[n, j] · w[n, hd] per
// value; 5 dw[n, hd] = Σ_j g[n, j] · v[n, hd·k + j] per weight. Buffers: forward (v, m or w, y); backward
// (g, the other factor, out).
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    let heads = p.c / p.k;
    switch p.flag {
        case 0u: {
            let img = i / p.c;
            let m = (img * heads + (i % p.c) / p.k) * hw;
            var acc = 0.0;
            for (var q = 0u; q < hw; q++) {
                acc += a[i * hw + q] * b[m + q];
            }
            out[i] = acc;
        }
        case 1u: {
            let row = i / hw;
            let img = row / p.c;
            out[i] = a[row] * b[(img * heads + (row % p.c) / p.k) * hw + i % hw];
        }
        case 2u: {
            let q = i % hw;
            let hd = (i / hw) % heads;
            let img = i / (hw * heads);
            var acc = 0.0;
            for (var j = 0u; j < p.k; j++) {
                let ch = img * p.c + hd * p.k + j;
                acc += a[ch] * b[ch * hw + q];
            }
            out[i] = acc;
        }
        case 3u: {
            let img = i / p.k;
            let j = i % p.k;
            var acc = 0.0;
            for (var hd = 0u; hd < heads; hd++) {
                acc += a[img * p.c + hd * p.k + j] * b[img * heads + hd];
            }
            out[i] = acc;
        }
        case 4u: {
            let img = i / p.c;
            let ch = i % p.c;
            out[i] = a[img * p.k + ch % p.k] * b[img * heads + ch / p.k];
        }
        default: {
            let img = i / heads;
            let hd = i % heads;
            var acc = 0.0;
            for (var j = 0u; j < p.k; j++) {
                acc += a[img * p.k + j] * b[img * p.c + hd * p.k + j];
            }
            out[i] = acc;
        }
    }
}
