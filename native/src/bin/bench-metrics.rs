//! Metric speed: seconds per metric on the first N MNIST test images with the shipped SimpleCNN and the gradient of
//! the predicted class's logit as the map, whitebox next to the references in the same run (pytorch-grad-cam's ROAD;
//! Quantus's pixel flipping, faithfulness correlation, MPRT, eMPRT and random logit; Captum's infidelity and
//! max-sensitivity), both pinned to the same thread count, with ratios (reference seconds / whitebox seconds).
//!
//! cargo run --release -p whitebox --bin bench-metrics -- [--images 100] [--threads 2] [--python PY]
//! The references run through `tests/reference/bench_metrics.py` with `--python` (default: $WHITEBOX_PYTHON, else
//! python3); when they cannot be imported, the table says so and shows whitebox alone.

#[path = "../allocator.rs"]
mod allocator;
#[path = "../bench/common.rs"]
mod common;
use common::{arg, repo_root};

use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::time::Instant;
use whitebox_core::attribution::{self as attr, Attribution, Score};
use whitebox_core::data::DatasetKind;
use whitebox_core::evaluation::Ranking;
use whitebox_core::metrics::faithfulness_correlation::{faithfulness_correlation, FaithfulnessCorrelation};
use whitebox_core::metrics::infidelity::{infidelity, Infidelity};
use whitebox_core::metrics::mprt::{efficient_mprt, fresh_checkpoint, mprt, other_classes, random_logit, Order};
use whitebox_core::metrics::pixel_flipping::{pixel_flipping, PixelFlipping};
use whitebox_core::metrics::road::{road, RoadConfig};
use whitebox_core::metrics::sensitivity_max::{sensitivity_max, SensitivityMax};
use whitebox_core::metrics::similarity::Similarity;
use whitebox_core::metrics::{Baseline, Batch, Scorer};
use whitebox_core::models::{Arch, Classifier};
use whitebox_core::ops::ReluRule;
use whitebox_core::params::Checkpoint;

fn main() -> Result<()> {
    allocator::keep_freed_memory();
    let args = common::args(include_str!("bench-metrics.rs"));
    let n: usize = arg(&args, "--images").map(|v| v.parse()).transpose()?.unwrap_or(100);
    let threads: usize = arg(&args, "--threads").map(|v| v.parse()).transpose()?.unwrap_or(2);
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let root = repo_root();
    let checkpoint = root.join("weights/mnist/simple-cnn.safetensors");
    let python = arg(&args, "--python").or_else(|| std::env::var("WHITEBOX_PYTHON").ok()).unwrap_or("python3".into());
    let test = common::mnist_test()?;
    let idx: Vec<usize> = (0..n.min(test.len())).collect();
    let (x, _) = test.batch(&idx, DatasetKind::Mnist, &Device::Cpu)?;
    let ck = Checkpoint::from_bytes("simple-cnn", &std::fs::read(&checkpoint)?, &Device::Cpu)?;
    let model = ck.model()?;
    let m = model.as_ref();
    let targets = attr::predict(m, &x)?;
    let vbp = attr::ModifiedGradient::new(ReluRule::Standard);
    let maps: Vec<f32> = vbp.attribute(m, &x, &targets, Score::Logit)?.flatten_all()?.to_vec1()?;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let batch = Batch::new(&xs, x.dims4()?, &targets, &maps)?;
    let mut explain = |model: &dyn Classifier, xv: &[f32], t: &[u32]| -> whitebox_core::Result<Vec<f32>> {
        let xt = Tensor::from_slice(xv, (t.len(), 1, 28, 28), &Device::Cpu)?;
        Ok(vbp.attribute(model, &xt, t, Score::Logit)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let prob = Scorer::new(m);
    let logit = Scorer::new(m).with_score(Score::Logit);
    let fresh = fresh_checkpoint(ck.spec, 0)?;
    let mut ours: Vec<(&str, f64)> = Vec::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let t0 = Instant::now();
        f()?;
        ours.push((name, t0.elapsed().as_secs_f64()));
        Ok(())
    };
    let fractions: Vec<f64> = (1..10).map(|k| k as f64 / 10.0).collect();
    time("ROAD", &mut || {
        road(
            &prob,
            &batch,
            &RoadConfig { fractions: fractions.clone(), noise: 0.01, ranking: Ranking::Signed, seed: 0 },
        )?;
        Ok(())
    })?;
    time("pixel flipping", &mut || {
        pixel_flipping(&prob, &batch, &PixelFlipping { step: 28, baseline: Baseline::Min, ranking: Ranking::Signed })?;
        Ok(())
    })?;
    time("faithfulness correlation", &mut || {
        let config = FaithfulnessCorrelation { runs: 100, subset: 49, baseline: Baseline::Min, seed: 0 };
        faithfulness_correlation(&logit, &batch, &config, &config.subsets(batch.len(), 784)?)?;
        Ok(())
    })?;
    time("infidelity", &mut || {
        let config = Infidelity { samples: 20, ..Infidelity::default() };
        infidelity(&logit, &batch, &config, &config.perturbations(batch.len(), 784)?)?;
        Ok(())
    })?;
    time("max-sensitivity", &mut || {
        let config = SensitivityMax { samples: 20, ..SensitivityMax::default() };
        let p = config.perturbations(batch.len(), 784)?;
        sensitivity_max(&batch, &mut |xv: &[f32], t: &[u32]| explain(m, xv, t), 20, &p)?;
        Ok(())
    })?;
    time("MPRT", &mut || {
        mprt(&ck, &fresh, Order::TopDown, &batch, Similarity::Spearman, &mut explain)?;
        Ok(())
    })?;
    time("eMPRT", &mut || {
        efficient_mprt(&ck, &fresh, &batch, &mut explain)?;
        Ok(())
    })?;
    time("random logit", &mut || {
        random_logit(m, &batch, &other_classes(&targets, 10, 0), Similarity::Ssim, &mut explain)?;
        Ok(())
    })?;

    let script = root.join("tests/reference/bench_metrics.py");
    let theirs: Option<HashMap<String, f64>> = std::process::Command::new(&python)
        .arg(&script)
        .arg(&checkpoint)
        .arg(idx.len().to_string())
        .arg(threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok());
    println!(
        "metric time, SimpleCNN, {} MNIST test images, gradient maps, {threads} threads (seconds; ratio = reference / whitebox)",
        idx.len()
    );
    println!("| metric | reference | whitebox (s) | reference (s) | ratio |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let reference = |name: &str| match name {
        "ROAD" => "pytorch-grad-cam 1.5.7",
        "infidelity" | "max-sensitivity" => "Captum 0.9.0",
        _ => "Quantus 0.6.0",
    };
    for &(name, s) in &ours {
        match theirs.as_ref().and_then(|t| t.get(name)) {
            Some(t) => println!("| {name} | {} | {s:.3} | {t:.3} | {:.1}× |", reference(name), t / s),
            None => println!("| {name} | {} | {s:.3} | n/a | n/a |", reference(name)),
        }
    }
    if theirs.is_none() {
        println!("(references not run: `{python}` could not import torch, quantus, captum and grad-cam; set --python or WHITEBOX_PYTHON)");
    }
    // Pixel flipping and faithfulness correlation are forward passes of perturbed copies on both sides (the
    // unperturbed image's and each step's or subset's): their rates in GFLOP/s against the machine's matrix-product
    // peak bound what any implementation can reach here.
    let peak = common::sgemm_gflops()?;
    let forward = common::forward_flops(Arch::SimpleCnn, DatasetKind::Mnist)?;
    for (name, passes) in [("pixel flipping", 784usize.div_ceil(28) + 1), ("faithfulness correlation", 100 + 1)] {
        let flops = (idx.len() * passes) as f64 * forward;
        let Some(&(_, mine)) = ours.iter().find(|(n, _)| *n == name) else { continue };
        print!("roofline: {name} is {passes} forward passes an image: whitebox {:.0} GFLOP/s", flops / mine / 1e9);
        match theirs.as_ref().and_then(|t| t.get(name)) {
            Some(t) => println!(
                ", reference {:.0} GFLOP/s; 10× the reference would be {:.0} GFLOP/s; a 1024³ sgemm here: {peak:.0} GFLOP/s",
                flops / t / 1e9,
                10.0 * flops / t / 1e9
            ),
            None => println!("; a 1024³ sgemm here: {peak:.0} GFLOP/s"),
        }
    }
    Ok(())
}
