// CBAM backward, to the channel-gated x1: directly through the spatial gate, plus the pooled maps' gradients (max:
// its first channel; mean: every channel).
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read> dpooled: array<f32>;
@group(0) @binding(4) var<storage, read> at: array<u32>;
@group(0) @binding(5) var<storage, read_write> dx1: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.h * p.w;
    let q = i % hw;
    let ch = (i / hw) % p.c;
    let img = i / (p.c * hw);
    let s = img * hw + q;
    var v = dy[i] * sigmoid(max(t[s], 0.0));
    v += dpooled[img * 2u * hw + hw + q] / f32(p.c);
    if (at[s] == ch) {
        v += dpooled[img * 2u * hw + q];
    }
    dx1[i] = v;
}
