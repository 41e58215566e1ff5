// Element-wise layers over `p.total` values of `a`'s shape, `b` broadcast by `p.k`: 0 the same shape, 1 one value per
// image and channel (`p.c` channels of `p.h · p.w`), 2 one value per image and position. `p.flag`: 0 y = a + b,
// 1 y = a · b (and so da = g · b, with g in `a`), 2 dx = g (a copy of `a`), 3 y = a · (1 + b) (the Residual
// Attention Network's gate (1 + M) · T, and its trunk's gradient g · (1 + M)).
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn broadcast(i: u32) -> u32 {
    let hw = p.h * p.w;
    if (p.k == 1u) {
        return i / hw;
    }
    if (p.k == 2u) {
        return (i / (hw * p.c)) * hw + i % hw;
    }
    return i;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    switch p.flag {
        case 0u: {
            out[i] = a[i] + b[broadcast(i)];
        }
        case 1u: {
            out[i] = a[i] * b[broadcast(i)];
        }
        case 3u: {
            out[i] = a[i] * (1.0 + b[broadcast(i)]);
        }
        default: {
            out[i] = a[i];
        }
    }
}
