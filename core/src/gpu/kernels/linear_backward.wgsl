// dx[n, j] = Σ_o g[n, o] · w[o, j]; `p.c` inputs, `p.co` outputs, `p.n` images. Each invocation computes 4 images ×
// 4 inputs.
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

fn grad_at(img: u32, o: u32) -> f32 {
    return select(0.0, g[min(img, p.n - 1u) * p.co + o], img < p.n);
}

fn weight_at(o: u32, j: u32) -> f32 {
    return select(0.0, wt[o * p.c + min(j, p.c - 1u)], j < p.c);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let j_blocks = (p.c + 3u) / 4u;
    let j0 = (i % j_blocks) * 4u;
    let img0 = (i / j_blocks) * 4u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var o = 0u; o < p.co; o++) {
        let v = vec4<f32>(grad_at(img0, o), grad_at(img0 + 1u, o), grad_at(img0 + 2u, o), grad_at(img0 + 3u, o));
        a0 += v * weight_at(o, j0);
        a1 += v * weight_at(o, j0 + 1u);
        a2 += v * weight_at(o, j0 + 2u);
        a3 += v * weight_at(o, j0 + 3u);
    }
    let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var q = 0u; q < 4u; q++) {
        let j = j0 + q;
        if (j >= p.c) {
            break;
        }
        for (var r = 0u; r < 4u; r++) {
            if (img0 + r < p.n) {
                dx[(img0 + r) * p.c + j] = acc[q][r];
            }
        }
    }
}
