// A linear layer's parameter gradients over `p.n` images of `p.c` inputs and `p.co` outputs: invocations below
// co · c give dw[o, j] = Σ_n g[n, o] · x[n, j], the next co give db[o] = Σ_n g[n, o] (fixed order).
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    let weights = p.co * p.c;
    if (i < weights) {
        let o = i / p.c;
        let j = i % p.c;
        var acc = 0.0;
        for (var img = 0u; img < p.n; img++) {
            acc += g[img * p.co + o] * x[img * p.c + j];
        }
        dw[i] = acc;
    } else {
        let o = i - weights;
        var acc = 0.0;
        for (var img = 0u; img < p.n; img++) {
            acc += g[img * p.co + o];
        }
        db[o] = acc;
    }
}
