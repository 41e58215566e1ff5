// CBAM, spatial attention: at each position, the maximum over channels (with its first channel) and the mean.
// pooled[n, 0, q] holds the maxima, pooled[n, 1, q] the means.
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(3) var<storage, read_write> at: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    let q = i % hw;
    let img = i / hw;
    let base = img * p.c * hw + q;
    var best = 0u;
    var sum = 0.0;
    for (var ch = 0u; ch < p.c; ch++) {
        let v = x1[base + ch * hw];
        if (v > x1[base + best * hw]) {
            best = ch;
        }
        sum += v;
    }
    pooled[img * 2u * hw + q] = x1[base + best * hw];
    pooled[img * 2u * hw + hw + q] = sum / f32(p.c);
    at[i] = best;
}
