// BatchNorm's running statistics after a training step: mean ← (1 − m)·mean + m·batch mean, var ← (1 − m)·var +
// m·batch var · n/(n − 1) (unbiased). m = bitcast(p.spare0), n/(n − 1) = bitcast(p.spare1).
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = thread_index(gid, groups);
    if (c >= p.total) {
        return;
    }
    let m = bitcast<f32>(p.spare0);
    running_mean[c] = running_mean[c] * (1.0 - m) + stats[c] * m;
    running_var[c] = running_var[c] * (1.0 - m) + stats[p.c + c] * (m * bitcast<f32>(p.spare1));
}
