//! Attribution maps per second on each native backend: the CPU engine and the GPU engine through wgpu (here:
//! lavapipe, Vulkan emulated on the CPU, so the ratio is what counts until real GPUs are measured). VBP, GB and GC
//! one image per call (an interactive user's case), SG-50 and IG-50 one image per call (50 model inputs in one
//! batch), on the first MNIST test images with the shipped SimpleCNN. The browser's backends (WASM CPU, WebGPU)
//! are measured by the browser test `tests/browser` and printed there.
//!
//! Then the attention models' maps (RAN-56 and WARN, random weights): the CPU's graph engine against the GPU's.
//!
//! Then training: SGD steps per second on MNIST at `--batch` images of SimpleCNN, CAM and CBAM (or the `--models`
//! named, e.g. `simple-cnn,ran,warn`), the CPU trainer (the `Trainer`'s step: the model's training step and the
//! optimiser) against the GPU trainer (one command buffer per step; the clock stops after a read-back, so the GPU
//! has finished), with GFLOP/s counted as three forward passes' matrix products per image (forward, input
//! gradient, weight gradient; `Graph::training_flops` of each model).
//!
//! cargo run --release -p whitebox --bin bench-backends -- [--images 20] [--threads 2] [--batch 64] [--steps 5]
//!     [--models simple-cnn,cam,cbam] [--adapter NAME]

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
    let args = common::args(include_str!("bench-backends.rs"));
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
    let gpu = Arc::new(block_on(Gpu::with_adapter(arg(&args, "--adapter").as_deref()))?);
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
    attention(gpu.clone(), &x, &targets, threads)?;
    train(gpu, &args, threads)
}

/// VBP and Grad-CAM maps per second for RAN-56 and WARN (random weights): the CPU's graph engine against the GPU's
/// (`GpuGraph`), one image per call, on at most five of the images.
fn attention(gpu: Arc<Gpu>, x: &candle_core::Tensor, targets: &[u32], threads: usize) -> Result<()> {
    use whitebox_core::engine::{Engine, GraphEngine};
    use whitebox_core::gpu::GpuGraph;
    use whitebox_core::models::{Arch, ModelSpec};
    let n = targets.len().min(5);
    let (x, targets) = (x.narrow(0, 0, n)?, &targets[..n]);
    println!();
    println!(
        "attribution maps/s, attention models (random weights), MNIST, {n} images one at a time, {threads} threads"
    );
    // One column for model and method: the training table's rows (`| ran |`) are what scripts grep for.
    println!("| map | CPU graph engine | wgpu graph engine | wgpu / CPU |");
    println!("| --- | ---: | ---: | ---: |");
    for arch in [Arch::Ran, Arch::Warn] {
        let spec = ModelSpec { arch, dataset: DatasetKind::Mnist };
        let (map, _) = whitebox_core::params::init_model(spec, 1, &Device::Cpu)?;
        let cpu: Arc<dyn Classifier> = Arc::from(Checkpoint::from_varmap(spec, &map, Default::default())?.model()?);
        let engine = cpu.engine().context("an engine for constant weights")?;
        let graph = engine.as_any().downcast_ref::<GraphEngine>().context("the attention models run on the graph")?;
        let (graph, values) = graph.parts();
        let engine: Arc<dyn Engine> = Arc::new(GpuGraph::new(gpu.clone(), graph, values)?);
        let on_gpu = EngineModel { model: cpu.clone(), engine };
        for (name, e) in [("VBP", Explanation::of(Method::VBP)), ("GC", Explanation::of(Method::GC))] {
            let c = rate(cpu.as_ref(), &x, targets, &e)?;
            let g = rate(&on_gpu, &x, targets, &e)?;
            println!("| {arch} {name} | {c:.1} | {g:.1} | {:.2}× |", g / c);
        }
    }
    Ok(())
}

/// Training images per second, CPU trainer against GPU trainer.
fn train(gpu: Arc<Gpu>, args: &[String], threads: usize) -> Result<()> {
    use whitebox_core::gpu::GpuTrainer;
    use whitebox_core::models::{Arch, ModelSpec};
    use whitebox_core::train::{Optimizer, OptimizerKind};
    let batch: usize = arg(args, "--batch").map(|v| v.parse()).transpose()?.unwrap_or(64);
    let steps: usize = arg(args, "--steps").map(|v| v.parse()).transpose()?.unwrap_or(5);
    let train = common::mnist_test()?; // any real images do for timing
    let idx: Vec<usize> = (0..batch).collect();
    let (x, y) = train.batch(&idx, DatasetKind::Mnist, &Device::Cpu)?;
    let (xv, yv) = (x.flatten_all()?.to_vec1::<f32>()?, y.to_vec1::<u32>()?);
    println!();
    println!("training images/s, MNIST, batch {batch}, best of {steps} steps after one warm-up, {threads} threads");
    println!("| model | CPU trainer | wgpu | wgpu / CPU | wgpu GFLOP/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let models: Vec<Arch> = match arg(args, "--models") {
        Some(list) => list
            .split(',')
            .map(|name| {
                Arch::ALL.into_iter().find(|a| a.name() == name).with_context(|| format!("no model called {name}"))
            })
            .collect::<Result<_>>()?,
        None => Arch::SMALL.to_vec(),
    };
    for arch in models {
        let spec = ModelSpec { arch, dataset: DatasetKind::Mnist };
        let (map, model) = whitebox_core::params::init_model(spec, 1, &Device::Cpu)?;
        let mut optimizer = Optimizer::new(OptimizerKind::Sgd, &map, 0.9, 5e-4);
        let mut cpu = 0f64;
        for s in 0..=steps {
            let t0 = Instant::now();
            let step = model.training_step(&x, &y)?;
            optimizer.step(&step.grads, 0.01)?;
            if s > 0 {
                cpu = cpu.max(batch as f64 / t0.elapsed().as_secs_f64());
            }
        }
        let graph = Arc::new(whitebox_core::models::graph(spec)?);
        let flops = graph.training_flops();
        let values: Vec<Vec<f32>> = {
            let vars = map.data().lock().expect("var map");
            graph
                .params
                .iter()
                .map(|p| Ok(vars[&p.name].as_tensor().flatten_all()?.to_vec1::<f32>()?))
                .collect::<Result<_>>()?
        };
        let mut trainer = GpuTrainer::new(gpu.clone(), graph, &values, None, batch, 0.9, 5e-4)?;
        let mut on_gpu = 0f64;
        for s in 0..=steps {
            let t0 = Instant::now();
            block_on(trainer.step(&xv, &yv, 0.01))?;
            block_on(trainer.tally())?;
            if s > 0 {
                on_gpu = on_gpu.max(batch as f64 / t0.elapsed().as_secs_f64());
            }
        }
        let gflops = on_gpu * flops / 1e9;
        println!("| {arch} | {cpu:.1} | {on_gpu:.1} | {:.3}× | {gflops:.2} |", on_gpu / cpu);
    }
    Ok(())
}
