// Sigmoid and tanh, forward and backward, by `p.flag`: 0 y = σ(a); 1 dx = a · b · (1 − b) (a the output's gradient,
// b the output σ); 2 y = tanh(a); 3 dx = a · (1 − b²) (b the output tanh).
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = thread_index(gid, groups);
    if (i >= p.total) {
        return;
    }
    switch p.flag {
        case 0u: {
            out[i] = sigmoid(a[i]);
        }
        case 1u: {
            out[i] = a[i] * b[i] * (1.0 - b[i]);
        }
        case 2u: {
            // tanh(10) is 1 in float32; beyond, some drivers' tanh overflows its exponentials.
            out[i] = select(sign(a[i]), tanh(a[i]), abs(a[i]) < 10.0);
        }
        default: {
            out[i] = a[i] * (1.0 - b[i] * b[i]);
        }
    }
}
