// 2×2 max-pooling, stride 2; `arg` keeps the position (0–3, scan order) of each window's first maximum. In ceil mode
// (`p.ho`, `p.wo` rounded up) a last odd row or column is a window of its own: positions outside the input are skipped.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let plane = i / (p.wo * p.ho);
    let top = plane * p.h * p.w + 2u * oy * p.w + 2u * ox;
    var best = x[top];
    var at = 0u;
    let candidates = array<u32, 3>(top + 1u, top + p.w, top + p.w + 1u);
    let right = 2u * ox + 1u < p.w;
    let below = 2u * oy + 1u < p.h;
    let inside = array<bool, 3>(right, below, right && below);
    for (var j = 0u; j < 3u; j++) {
        if (!inside[j]) {
            continue;
        }
        let v = x[candidates[j]];
        if (v > best) {
            best = v;
            at = j + 1u;
        }
    }
    y[i] = best;
    arg[i] = at;
}
