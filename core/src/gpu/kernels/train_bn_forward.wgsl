// y = (x − mean) / √(var + eps) · γ + β with the batch's statistics (train_bn_stats); eps = bitcast(p.spare0).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let c = (i / (p.h * p.w)) % p.c;
    let inv = 1.0 / sqrt(stats[p.c + c] + bitcast<f32>(p.spare0));
    y[i] = (x[i] - stats[c]) * inv * gamma[c] + beta[c];
}
