// One invocation adds the step's per-image losses and hits (train_softmax_xent) to the running totals:
// tally[0] += Σ loss, tally[1] += Σ hits, tally[2] = this step's mean loss, tally[3] += 1 (steps).
@group(0) @binding(1) var<storage, read> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> tally: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    if (thread_index(gid, groups) != 0u) {
        return;
    }
    var l = 0.0;
    var hits = 0.0;
    for (var img = 0u; img < p.n; img++) {
        l += loss[2u * img];
        hits += loss[2u * img + 1u];
    }
    tally[0] += l;
    tally[1] += hits;
    tally[2] = l / f32(p.n);
    tally[3] += 1.0;
}
