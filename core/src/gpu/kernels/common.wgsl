// Shared by every kernel (prepended to each). One invocation computes one output value; `p.total` is how many.
// Prepended before this file by `kernels.rs`, from Rust: SOFTMAX_FLOOR (`ops::SOFTMAX_FLOOR`).
struct Params {
    total: u32,
    n: u32,
    // Input: channels, height, width.
    c: u32,
    h: u32,
    w: u32,
    // Output: channels, height, width.
    co: u32,
    ho: u32,
    wo: u32,
    // Convolution size and padding; CBAM: hidden units in `k`.
    k: u32,
    pad: u32,
    // ReLU backward rule: 0 vanilla, 1 guided, 2 deconv.
    rule: u32,
    // Kernel-specific switch (score kernel: 1 for the probability).
    flag: u32,
    spare0: u32,
    spare1: u32,
    spare2: u32,
    spare3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WORKGROUP: u32 = 256u;

// The invocation's index over a 2-D grid of workgroups (one dimension holds at most 65,535).
fn thread_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP;
}

// The ReLU backward rule for gradient `g` at pre-activation `x`.
fn relu_back(g: f32, x: f32) -> f32 {
    if (p.rule == 1u) {
        return select(0.0, g, x > 0.0 && g > 0.0);
    }
    if (p.rule == 2u) {
        return max(g, 0.0);
    }
    return select(0.0, g, x > 0.0);
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}
