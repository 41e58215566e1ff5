// BatchNorm's batch statistics (Ioffe & Szegedy 2015): stats[c] = the mean of channel c over the batch's images and
// positions, stats[p.c + c] = its biased variance (two passes: mean first, then squared deviations). One workgroup
// per channel, a fixed reduction order (see train_channel_sum).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;

var<workgroup> partial: array<f32, 256>;

fn reduce(t: u32) {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = min(wid.x + wid.y * groups.x, p.c - 1u);
    let hw = p.h * p.w;
    let m = p.n * hw;
    var acc = 0.0;
    for (var j = t; j < m; j += 256u) {
        acc += x[((j / hw) * p.c + c) * hw + j % hw];
    }
    partial[t] = acc;
    reduce(t);
    let mean = partial[0] / f32(m);
    workgroupBarrier();
    acc = 0.0;
    for (var j = t; j < m; j += 256u) {
        let d = x[((j / hw) * p.c + c) * hw + j % hw] - mean;
        acc += d * d;
    }
    partial[t] = acc;
    reduce(t);
    if (t == 0u && wid.x + wid.y * groups.x < p.c) {
        stats[c] = mean;
        stats[p.c + c] = partial[0] / f32(m);
    }
}
