// BatchNorm's parameter gradients: dbeta[c] = Σ dy, dgamma[c] = Σ dy · x̂ with x̂ = (x − mean) / √(var + eps), over
// the batch's images and positions. One workgroup per channel, a fixed reduction order (see train_channel_sum).
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;

var<workgroup> sum_dy: array<f32, 256>;
var<workgroup> sum_dyx: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = min(wid.x + wid.y * groups.x, p.c - 1u);
    let hw = p.h * p.w;
    let m = p.n * hw;
    let mean = stats[c];
    let inv = 1.0 / sqrt(stats[p.c + c] + bitcast<f32>(p.spare0));
    var a = 0.0;
    var b = 0.0;
    for (var j = t; j < m; j += 256u) {
        let at = ((j / hw) * p.c + c) * hw + j % hw;
        a += dy[at];
        b += dy[at] * (x[at] - mean) * inv;
    }
    sum_dy[t] = a;
    sum_dyx[t] = b;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            sum_dy[t] += sum_dy[t + s];
            sum_dyx[t] += sum_dyx[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u && wid.x + wid.y * groups.x < p.c) {
        dbeta[c] = sum_dy[0];
        dgamma[c] = sum_dyx[0];
    }
}
