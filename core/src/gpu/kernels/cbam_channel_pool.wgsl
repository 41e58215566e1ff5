// CBAM, channel attention: the mean and the maximum (with its first position) of each plane of x (`p.c` channels).
// desc[n, 0..c] holds the means, desc[n, c..2c] the maxima.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> desc: array<f32>;
@group(0) @binding(3) var<storage, read_write> at: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let ch = i % p.c;
    let img = i / p.c;
    let hw = p.h * p.w;
    let base = i * hw;
    var sum = 0.0;
    var best = 0u;
    for (var q = 0u; q < hw; q++) {
        let v = x[base + q];
        sum += v;
        if (v > x[base + best]) {
            best = q;
        }
    }
    desc[img * 2u * p.c + ch] = sum / f32(hw);
    desc[img * 2u * p.c + p.c + ch] = x[base + best];
    at[i] = best;
}
