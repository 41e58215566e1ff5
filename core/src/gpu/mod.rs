//! The GPU engine: the CPU [`Plan`](crate::engine::Plan) as WGSL compute kernels through wgpu, on WebGPU in the
//! browser and on Vulkan, Metal or DX12 natively. The forward pass and the backward pass of a class score to the
//! input or to one layer are one command buffer for a whole batch (an IG path, a SmoothGrad ensemble) and one read
//! back, so every gradient method — vanilla gradients (Simonyan et al. 2014), guided backpropagation (Springenberg
//! et al. 2015), DeconvNet (Zeiler & Fergus 2014), Input × Gradient, Integrated Gradients (Sundararajan et al. 2017),
//! Grad-CAM and Guided Grad-CAM (Selvaraju et al. 2017), CAM (Zhou et al. 2016) and the SmoothGrad ensembles — runs
//! on the GPU through the same method code as on the CPU ([`crate::engine::Engine`]).
//!
//! One invocation computes one output value (the lesson of TensorFlow.js's WebGPU backend on emulated adapters:
//! per-dispatch and read-back costs dominate, so batch, fuse and read back once). Convolutions fold the BatchNorm
//! that follows them. Pipelines and their bind-group layouts are made once per device, weights are uploaded once per
//! model, and work buffers are kept between calls.
//!
//! [`GpuPlan`] serves the SimpleCNN family from its fused plan; [`GpuGraph`] serves any network graph (RAN, WARN)
//! with the training kernels in evaluation mode; [`GpuTrainer`] trains every model.

mod graph;
mod kernels;
mod plan;
mod train;

pub use graph::GpuGraph;
pub use plan::GpuPlan;
pub use train::{check_graph, GpuTrainer, Tally};

use crate::attribution::Explanation;
use crate::engine::{Answer, Ask, EngineModel, Scripted};
use crate::models::Classifier;
use crate::{Error, Result};
use candle_core::Tensor;
use std::sync::Arc;

/// A GPU device with the compiled kernels.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    kernels: kernels::Kernels,
    /// The adapter, as people know it ("llvmpipe (LLVM 15.0.6, 256 bits)", "SwiftShader Device", …).
    pub name: String,
    /// The graphics API behind it ("Vulkan", "BrowserWebGpu", …).
    pub backend: String,
    /// Whether the adapter runs on the CPU (lavapipe, SwiftShader, a browser's fallback adapter).
    pub software: bool,
}

fn gpu_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Gpu(format!("{what}: {e}"))
}

impl Gpu {
    /// The first adapter that the platform offers (WebGPU in a browser; Vulkan, Metal or DX12 natively), with its
    /// own limits.
    pub async fn new() -> Result<Gpu> {
        Gpu::with_adapter(None).await
    }

    fn instance() -> wgpu::Instance {
        wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::all(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        })
    }

    /// The adapters this machine offers, as `name (backend, device type)`, natively (a browser offers one).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn adapters() -> Vec<String> {
        let adapters = Gpu::instance().enumerate_adapters(wgpu::Backends::all()).await;
        adapters
            .iter()
            .map(|a| a.get_info())
            .map(|i| format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type))
            .collect()
    }

    /// The adapter whose name contains `name` (case-insensitive; natively), or the platform's first when `None`.
    pub async fn with_adapter(name: Option<&str>) -> Result<Gpu> {
        let instance = Gpu::instance();
        let adapter = match name {
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|e| gpu_error("no adapter", e))?,
            #[cfg(not(target_arch = "wasm32"))]
            Some(name) => {
                let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
                let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
                let wanted = name.to_lowercase();
                let at = names.iter().position(|n| n.to_lowercase().contains(&wanted)).ok_or_else(|| {
                    Error::Gpu(format!("no adapter named like '{name}' (there are: {})", names.join("; ")))
                })?;
                all.into_iter().nth(at).expect("an adapter at a found position")
            }
            #[cfg(target_arch = "wasm32")]
            Some(_) => return Err(Error::Gpu("a browser offers one adapter; it cannot be chosen by name".into())),
        };
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("whitebox"),
                required_features: wgpu::Features::empty(),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| gpu_error("no device", e))?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernels = kernels::Kernels::new(&device);
        if let Some(e) = scope.pop().await {
            return Err(gpu_error("the kernels do not compile", e));
        }
        // Browsers may keep the adapter's name to themselves.
        let software = info.device_type == wgpu::DeviceType::Cpu;
        let unnamed = if software { "software adapter".to_string() } else { format!("{:?} adapter", info.device_type) };
        let name = [info.name, info.driver, info.driver_info].into_iter().find(|s| !s.is_empty()).unwrap_or(unnamed);
        Ok(Gpu { device, queue, kernels, name, backend: format!("{:?}", info.backend), software })
    }

    /// The largest storage buffer a kernel may bind, in bytes.
    fn max_binding(&self) -> u64 {
        let limits = self.device.limits();
        limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
    }
}

/// `explanation` of `x` for `targets` with every gradient and logit computed by `gpu`, awaiting the GPU (the
/// browser's way): the method runs until it asks for something not yet answered, the GPU answers it (in one command
/// buffer and one read-back), and the method runs again with the answers so far ([`Scripted`]), until it finishes. Ensembles and IG run as one request: `settings.batch` is
/// raised to hold all their model inputs (up to the plan's own limit per command buffer).
pub async fn explain(
    explanation: &Explanation,
    model: Arc<dyn Classifier>,
    gpu: &GpuPlan,
    x: &Tensor,
    targets: &[u32],
) -> Result<Tensor> {
    explanation.validate()?;
    let units = explanation.inputs_per_image(model.as_ref())?;
    let mut e = explanation.clone();
    e.settings.batch = e.settings.batch.max(units * x.dim(0)?);
    let mut answers = Vec::new();
    loop {
        let script = Arc::new(Scripted::new(gpu.plan().clone(), answers));
        let result = e.run(&EngineModel { model: model.clone(), engine: script.clone() }, x, targets, &mut |_| {});
        let (given, pending) = script.finish();
        let Some(r) = pending else { return result };
        let a = match &r.ask {
            Ask::Logits => Answer::Logits(gpu.forward(&r.x, r.n).await?),
            Ask::Gradient { targets, score, rule, layer } => {
                Answer::Gradient(gpu.gradient(&r.x, r.n, targets, *score, *rule, *layer).await?)
            }
        };
        answers = given;
        answers.push((r, a));
    }
}

/// `(first image, images)` of each command buffer when `n` images go `rows` at a time.
fn batches(n: usize, rows: usize) -> Vec<(usize, usize)> {
    (0..n).step_by(rows).map(|s| (s, rows.min(n - s))).collect()
}

/// Blocks until `future` is ready (natively: the GPU's callbacks run inside [`wgpu::Device::poll`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
