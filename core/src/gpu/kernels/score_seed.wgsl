// ∂S/∂logits per image (`p.c` classes): one-hot for the logit; for the probability p_t, p_t · (δ_tj − p_j).
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> seed: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let img = thread_index(gid, groups);
    if (img >= p.total) {
        return;
    }
    let base = img * p.c;
    let t = targets[img];
    if (p.flag == 0u) {
        for (var j = 0u; j < p.c; j++) {
            seed[base + j] = select(0.0, 1.0, j == t);
        }
        return;
    }
    var top = logits[base];
    for (var j = 1u; j < p.c; j++) {
        top = max(top, logits[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < p.c; j++) {
        sum += exp(logits[base + j] - top);
    }
    let pt = exp(logits[base + t] - top) / sum;
    for (var j = 0u; j < p.c; j++) {
        seed[base + j] = pt * (select(0.0, 1.0, j == t) - exp(logits[base + j] - top) / sum);
    }
}
