// BatchNorm's input gradient with batch statistics: dx = γ / √(var + eps) · (dy − (Σ dy + x̂ · Σ dy·x̂) / m), where the
// sums are the parameter gradients (train_bn_backward_sums) and m the values per channel.
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read> dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let c = (i / (p.h * p.w)) % p.c;
    let m = f32(p.n * p.h * p.w);
    let inv = 1.0 / sqrt(stats[p.c + c] + bitcast<f32>(p.spare0));
    let xhat = (x[i] - stats[c]) * inv;
    dx[i] = gamma[c] * inv * (dy[i] - (dbeta[c] + xhat * dgamma[c]) / m);
}
