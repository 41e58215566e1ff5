// CBAM, channel attention: both descriptors through the shared MLP (`p.k` hidden units, at most 64), summed, then
// the sigmoid gate of each channel. z[n, 0..k] keeps the hidden pre-activations of the mean, z[n, k..2k] those of the
// maximum (for the backward pass).
@group(0) @binding(1) var<storage, read> desc: array<f32>;
@group(0) @binding(2) var<storage, read> w1: array<f32>;
@group(0) @binding(3) var<storage, read> b1: array<f32>;
@group(0) @binding(4) var<storage, read> w2: array<f32>;
@group(0) @binding(5) var<storage, read> b2: array<f32>;
@group(0) @binding(6) var<storage, read_write> z: array<f32>;
@group(0) @binding(7) var<storage, read_write> gate: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let img = thread_index(gid, groups);
    if (img >= p.total) {
        return;
    }
    let c = p.c;
    let hid = p.k;
    var r_avg: array<f32, 64>;
    var r_max: array<f32, 64>;
    for (var j = 0u; j < hid; j++) {
        var za = b1[j];
        var zm = b1[j];
        for (var ch = 0u; ch < c; ch++) {
            za += w1[j * c + ch] * desc[img * 2u * c + ch];
            zm += w1[j * c + ch] * desc[img * 2u * c + c + ch];
        }
        z[img * 2u * hid + j] = za;
        z[img * 2u * hid + hid + j] = zm;
        r_avg[j] = max(za, 0.0);
        r_max[j] = max(zm, 0.0);
    }
    for (var ch = 0u; ch < c; ch++) {
        var oa = b2[ch];
        var om = b2[ch];
        for (var j = 0u; j < hid; j++) {
            oa += w2[ch * hid + j] * r_avg[j];
            om += w2[ch * hid + j] * r_max[j];
        }
        gate[img * c + ch] = sigmoid(oa + om);
    }
}
