// CBAM backward, the shared MLP: dlogit back through w2, the ReLU rule at each descriptor's hidden pre-activation,
// and w1, to the mean descriptor (dv[n, 0..c]) and the max descriptor (dv[n, c..2c]). `p.k` hidden units (≤ 64).
@group(0) @binding(1) var<storage, read> dlogit: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> w1: array<f32>;
@group(0) @binding(4) var<storage, read> w2: array<f32>;
@group(0) @binding(5) var<storage, read_write> dv: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let img = thread_index(gid, groups);
    if (img >= p.total) {
        return;
    }
    let c = p.c;
    let hid = p.k;
    var dz_avg: array<f32, 64>;
    var dz_max: array<f32, 64>;
    for (var j = 0u; j < hid; j++) {
        var dr = 0.0;
        for (var ch = 0u; ch < c; ch++) {
            dr += w2[ch * hid + j] * dlogit[img * c + ch];
        }
        dz_avg[j] = relu_back(dr, z[img * 2u * hid + j]);
        dz_max[j] = relu_back(dr, z[img * 2u * hid + hid + j]);
    }
    for (var ch = 0u; ch < c; ch++) {
        var va = 0.0;
        var vm = 0.0;
        for (var j = 0u; j < hid; j++) {
            va += w1[j * c + ch] * dz_avg[j];
            vm += w1[j * c + ch] * dz_max[j];
        }
        dv[img * 2u * c + ch] = va;
        dv[img * 2u * c + c + ch] = vm;
    }
}
