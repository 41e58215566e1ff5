// CBAM backward, to its input: dx1 · gate, plus the mean descriptor's share and the max descriptor's gradient at
// its position.
@group(0) @binding(1) var<storage, read> dx1: array<f32>;
@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read> dv: array<f32>;
@group(0) @binding(4) var<storage, read> at: array<u32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    let q = i % hw;
    let plane = i / hw;
    let ch = plane % p.c;
    let img = plane / p.c;
    var v = dx1[i] * gate[plane] + dv[img * 2u * p.c + ch] / f32(hw);
    if (at[plane] == q) {
        v += dv[img * 2u * p.c + p.c + ch];
    }
    dx[i] = v;
}
