//! Attribution maps per second on each native backend: the CPU engine and the GPU engine through wgpu (here:
//! lavapipe, Vulkan emulated on the CPU, so the ratio is what counts until real GPUs are measured). VBP, GB and GC
//! one image per call (an interactive user's case), SG-50 and IG-50 one image per call (50 model inputs in one
//! batch), on the first MNIST test images with the shipped SimpleCNN. The browser's backends (WASM CPU, WebGPU)
//! are measured by the browser test `tests/browser` and printed there.
//!
//! cargo run --release -p whitebox --bin bench-backends -- [--images 20] [--threads 2]

#[path = "../allocator.rs"]
mod allocator;
#[path = "../bench/common.rs"]
mod common;
use common::{arg, repo_root};

use anyhow::{Context, Result};
use candle_core::Device;
use std::sync::Arc;
use std::time::Instant;
use whitebox_core::attribution::{self as attr, Ensemble, Explanation, Method};
use whitebox_core::data::DatasetKind;
use whitebox_core::engine::EngineModel;
use whitebox_core::gpu::{block_on, Gpu, GpuPlan};
use whitebox_core::models::Classifier;
use whitebox_core::params::Checkpoint;

/// Best of two runs: maps per second, one image per call.
fn rate(model: &dyn Classifier, x: &candle_core::Tensor, targets: &[u32], e: &Explanation) -> Result<f64> {
    let n = targets.len();
    let mut best = 0f64;
    for _ in 0..2 {
        let t0 = Instant::now();
        for i in 0..n {
            e.run(model, &x.narrow(0, i, 1)?, &targets[i..i + 1], &mut |_| {})?;
        }
        best = best.max(n as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> Result<()> {
    allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--images").map(|v| v.parse()).transpose()?.unwrap_or(20);
    let threads: usize = arg(&args, "--threads").map(|v| v.parse()).transpose()?.unwrap_or(2);
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    std::env::set_var("LP_NUM_THREADS", threads.to_string());
    let root = repo_root();
    let test = common::mnist_test()?;
    let idx: Vec<usize> = (0..n.min(test.len())).collect();
    let (x, _) = test.batch(&idx, DatasetKind::Mnist, &Device::Cpu)?;
    let ck = Checkpoint::from_bytes(
        "simple-cnn",
        &std::fs::read(root.join("weights/mnist/simple-cnn.safetensors"))?,
        &Device::Cpu,
    )?;
    let cpu: Arc<dyn Classifier> = Arc::from(ck.model()?);
    let targets = attr::predict(cpu.as_ref(), &x)?;
    let gpu = Arc::new(block_on(Gpu::new())?);
    let plan = cpu.engine().and_then(whitebox_core::engine::plan_of).context("SimpleCNN has a CPU plan")?;
    let on_gpu = EngineModel { model: cpu.clone(), engine: Arc::new(GpuPlan::new(gpu.clone(), plan)?) };

    let requests = [
        ("VBP", Explanation::of(Method::VBP)),
        ("GB", Explanation::of(Method::GB)),
        ("GC", Explanation::of(Method::GC)),
        ("SG-50", Explanation { ensemble: Some(Ensemble::SmoothGrad), samples: 50, ..Explanation::of(Method::VBP) }),
        ("IG-50", Explanation::of(Method::IG)),
    ];
    println!(
        "attribution maps/s, SimpleCNN MNIST, {} images one at a time, {threads} threads; GPU: {} ({})",
        idx.len(),
        gpu.name,
        gpu.backend
    );
    println!("| method | CPU engine | wgpu | wgpu / CPU |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, e) in requests {
        let c = rate(cpu.as_ref(), &x, &targets, &e)?;
        let g = rate(&on_gpu, &x, &targets, &e)?;
        println!("| {name} | {c:.1} | {g:.1} | {:.2}× |", g / c);
    }
    Ok(())
}
