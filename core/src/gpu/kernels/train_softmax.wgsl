// Softmax and log-softmax over rows of `p.k` contiguous values (a channel's positions: the spatial softmax; a flat
// value's channels: the softmax; each group of a flat value: the grouped log-softmax), one invocation per row of the
// `p.total` rows. `p.flag` 0: y = softmax(a); 1: dx = b · (a − Σ a·b) (a the output's gradient, b the output);
// 2: y = log-softmax(a); 3: dx = a − exp(b) · Σ a (b the output).
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = thread_index(gid, groups);
    if (r >= p.total) {
        return;
    }
    let row = r * p.k;
    if (p.flag == 0u || p.flag == 2u) {
        var top = a[row];
        for (var j = 1u; j < p.k; j++) {
            top = max(top, a[row + j]);
        }
        // The softmax's shares more than SOFTMAX_FLOOR below the largest are exactly 0, as on the CPU; the
        // log-softmax sums every exponential.
        var sum = 0.0;
        for (var j = 0u; j < p.k; j++) {
            let d = a[row + j] - top;
            sum += select(exp(d), share(d), p.flag == 0u);
        }
        if (p.flag == 0u) {
            for (var j = 0u; j < p.k; j++) {
                out[row + j] = share(a[row + j] - top) / sum;
            }
        } else {
            let lse = log(sum) + top;
            for (var j = 0u; j < p.k; j++) {
                out[row + j] = a[row + j] - lse;
            }
        }
        return;
    }
    var dot = 0.0;
    for (var j = 0u; j < p.k; j++) {
        dot += select(a[row + j] * b[row + j], a[row + j], p.flag == 3u);
    }
    for (var j = 0u; j < p.k; j++) {
        if (p.flag == 1u) {
            out[row + j] = b[row + j] * (a[row + j] - dot);
        } else {
            out[row + j] = a[row + j] - exp(b[row + j]) * dot;
        }
    }
}

fn share(d: f32) -> f32 {
    return select(exp(d), 0.0, d < -SOFTMAX_FLOOR);
}
