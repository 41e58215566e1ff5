//! The compute pipelines, one per WGSL file in `kernels/` (each prefixed with `common.wgsl` and the constants it
//! names as coming from Rust), and the parameters
//! every kernel reads from its uniform buffer.

/// Mirrors `Params` in `kernels/common.wgsl`: sixteen 32-bit words (see the comments there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub total: u32,
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub co: u32,
    pub ho: u32,
    pub wo: u32,
    pub k: u32,
    pub pad: u32,
    pub rule: u32,
    pub flag: u32,
    pub spare: [u32; 4],
}

/// Invocations per workgroup (`WORKGROUP` in `common.wgsl`; SwiftShader allows at most 256).
pub const WORKGROUP: u32 = 256;

/// A compute pipeline and its bind-group layout.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

fn kernel(device: &wgpu::Device, name: &str, source: &str) -> Kernel {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(
            format!(
                "const SOFTMAX_FLOOR: f32 = {:?};\n{}\n{source}",
                crate::ops::SOFTMAX_FLOOR,
                include_str!("kernels/common.wgsl")
            )
            .into(),
        ),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let layout = pipeline.get_bind_group_layout(0);
    Kernel { pipeline, layout }
}

macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        /// Every kernel, by the name of its file.
        pub struct Kernels {
            $(pub $name: Kernel,)*
        }

        impl Kernels {
            pub fn new(device: &wgpu::Device) -> Self {
                Kernels { $($name: kernel(device, stringify!($name), include_str!(concat!("kernels/", stringify!($name), ".wgsl"))),)* }
            }
        }
    };
}

kernels!(
    conv_forward,
    conv_input_grad,
    affine_forward,
    affine_backward,
    relu_forward,
    relu_backward,
    pool_forward,
    pool_backward,
    linear_forward,
    linear_backward,
    gap_forward,
    gap_backward,
    score_seed,
    cbam_channel_pool,
    cbam_mlp,
    cbam_gate_channels,
    cbam_spatial_pool,
    cbam_apply_spatial,
    cbam_spatial_backward,
    cbam_x1_grad,
    cbam_channel_backward,
    cbam_mlp_backward,
    cbam_input_grad,
    train_conv_weight_grad,
    train_channel_sum,
    train_bn_stats,
    train_bn_forward,
    train_bn_backward_sums,
    train_bn_backward,
    train_linear_weight_grad,
    train_softmax_xent,
    train_tally,
    train_sgd,
    train_running_stats,
    train_add,
    train_activation,
    train_upsample,
    train_softmax,
    train_heads,
    train_head_overlap,
    train_global_max,
    train_channel_pool,
    train_concat,
    train_elementwise,
    train_mul_backward_b,
    train_sum_rows,
);

/// One kernel launch: `params.total` invocations over `buffers` (bindings 1, 2, …).
pub struct Dispatch<'a> {
    pub kernel: &'a Kernel,
    pub params: Params,
    pub buffers: Vec<&'a wgpu::Buffer>,
}

pub fn u(v: usize) -> u32 {
    v as u32
}

/// Invocations of the blocked kernels (convolutions, linear layers): `n` × ⌈`blocked`/4⌉ × `rows` × ⌈`cols`/4⌉,
/// each computing a 4 × 4 block.
pub fn blocks4(n: usize, blocked: usize, rows: usize, cols: usize) -> u32 {
    u(n * blocked.div_ceil(4) * rows * cols.div_ceil(4))
}

/// Bytes per dispatch in the uniform buffer: one [`Params`], at the device's offset alignment.
pub fn uniform_slot(limits: &wgpu::Limits) -> usize {
    size_of::<Params>().next_multiple_of(limits.min_uniform_buffer_offset_alignment as usize)
}

/// Writes each dispatch's [`Params`] into its slot of `uniforms` and records the dispatches, in order, as one compute
/// pass of `encoder` (wgpu orders their reads and writes); a dispatch of no invocations is skipped.
pub fn encode(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    uniforms: &wgpu::Buffer,
    encoder: &mut wgpu::CommandEncoder,
    dispatches: &[Dispatch<'_>],
) {
    let limits = device.limits();
    let align = uniform_slot(&limits);
    if !dispatches.is_empty() {
        let mut params = vec![0u8; dispatches.len() * align];
        for (slot, d) in params.chunks_mut(align).zip(dispatches) {
            slot[..size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&d.params));
        }
        queue.write_buffer(uniforms, 0, &params);
    }
    let mut pass =
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("whitebox"), timestamp_writes: None });
    for (slot, d) in dispatches.iter().enumerate() {
        if d.params.total == 0 {
            continue;
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniforms,
                offset: (slot * align) as u64,
                size: wgpu::BufferSize::new(size_of::<Params>() as u64),
            }),
        }];
        entries.extend(
            d.buffers
                .iter()
                .enumerate()
                .map(|(j, b)| wgpu::BindGroupEntry { binding: j as u32 + 1, resource: b.as_entire_binding() }),
        );
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &d.kernel.layout,
            entries: &entries,
        });
        let groups = d.params.total.div_ceil(WORKGROUP);
        let x = groups.min(limits.max_compute_workgroups_per_dimension);
        pass.set_pipeline(&d.kernel.pipeline);
        pass.set_bind_group(0, Some(&group), &[]);
        pass.dispatch_workgroups(x, groups.div_ceil(x), 1);
    }
}
