// y[n, o] = b[o] + Σ_j x[n, j] · w[o, j]; `p.c` inputs, `p.co` outputs, `p.n` images. Each invocation computes 4
// images × 4 outputs.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn input_at(img: u32, j: u32) -> f32 {
    return select(0.0, x[min(img, p.n - 1u) * p.c + j], img < p.n);
}

fn weight_at(o: u32, j: u32) -> f32 {
    return select(0.0, wt[min(o, p.co - 1u) * p.c + j], o < p.co);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let o_blocks = (p.co + 3u) / 4u;
    let o0 = (i % o_blocks) * 4u;
    let img0 = (i / o_blocks) * 4u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var j = 0u; j < p.c; j++) {
        let v = vec4<f32>(input_at(img0, j), input_at(img0 + 1u, j), input_at(img0 + 2u, j), input_at(img0 + 3u, j));
        a0 += v * weight_at(o0, j);
        a1 += v * weight_at(o0 + 1u, j);
        a2 += v * weight_at(o0 + 2u, j);
        a3 += v * weight_at(o0 + 3u, j);
    }
    let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var q = 0u; q < 4u; q++) {
        let o = o0 + q;
        if (o >= p.co) {
            break;
        }
        for (var r = 0u; r < 4u; r++) {
            if (img0 + r < p.n) {
                y[(img0 + r) * p.co + o] = bias[o] + acc[q][r];
            }
        }
    }
}
