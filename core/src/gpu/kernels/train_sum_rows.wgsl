// out[j] = Σ_r v[r · p.total + j] over `p.n` rows, in order (the images' partial weight gradients).
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = thread_index(gid, groups);
    if (j >= p.total) {
        return;
    }
    var acc = 0.0;
    for (var r = 0u; r < p.n; r++) {
        acc += v[r * p.total + j];
    }
    out[j] = acc;
}
