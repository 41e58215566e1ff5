// Mean cross-entropy over `p.n` images of `p.co` logits: per image its loss (log Σ exp − the label's logit, shifted by
// the largest), whether the first largest logit is the label, and the gradient (softmax − one-hot) / n.
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let row = i * p.co;
    var top = logits[row];
    var arg = 0u;
    for (var j = 1u; j < p.co; j++) {
        if (logits[row + j] > top) {
            top = logits[row + j];
            arg = j;
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < p.co; j++) {
        sum += exp(logits[row + j] - top);
    }
    let label = labels[i];
    loss[2u * i] = log(sum) - (logits[row + label] - top);
    loss[2u * i + 1u] = select(0.0, 1.0, arg == label);
    let scale = 1.0 / f32(p.n);
    for (var j = 0u; j < p.co; j++) {
        let q = exp(logits[row + j] - top) / sum;
        dlogits[row + j] = (q - select(0.0, 1.0, j == label)) * scale;
    }
}
