//! CPU kernels against PyTorch, in one run: SimpleCNN on MNIST- and CIFAR-10-shaped batches (random inputs, the same
//! shapes and hyper-parameters on both sides), both pinned to the same thread count. Prints images/s for training
//! (batch 128 and batch 1, SGD with momentum 0.9 and weight decay 5e-4), inference (batch 128 and batch 1), and milliseconds for
//! one image's VBP and GB map, with ratios; and the fraction of the machine's sgemm peak each side reaches in
//! training.
//!
//! cargo run --release -p whitebox --bin bench-kernels -- [--threads 2] [--batches 20] [--python PY]
//! PyTorch runs `tests/reference/bench_torch.py` with `--python` (default: $WHITEBOX_PYTHON, else python3); when
//! torch cannot be imported the table says so and shows whitebox alone.

#[path = "../bench/common.rs"]
mod common;
use common::{arg, repo_root};

use anyhow::Result;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;
use whitebox_core::attribution::{input_gradient, Score};
use whitebox_core::data::{DatasetKind, ImageSet};
use whitebox_core::models::{eval_logits, Arch, ModelSpec};
use whitebox_core::ops::ReluRule;
use whitebox_core::train::{TrainConfig, Trainer};

/// Best of three timings of `f`, as `count` items per second.
fn rate(count: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = 0f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        f()?;
        best = best.max(count as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[runs / 2])
}

fn bench(kind: DatasetKind, batches: usize) -> Result<BTreeMap<&'static str, f64>> {
    let spec = ModelSpec { arch: Arch::SimpleCnn, dataset: kind };
    let n = batches * 128;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let pixels = (0..n * kind.channels() * kind.side() * kind.side()).map(|_| rng.random::<u8>()).collect();
    let labels = (0..n).map(|_| rng.random_range(0..10u8)).collect();
    let set = ImageSet::new(pixels, labels, kind.channels(), kind.side(), kind.side())?;
    // The seed's hyper-parameters (batch 128, SGD lr 0.01, momentum 0.9, weight decay 5e-4, constant rate), as the
    // PyTorch script; no augmentation on either side.
    let config = TrainConfig { epochs: 1000, seed: 1, augment: false, ..TrainConfig::seed_defaults(kind) };
    let mut trainer = Trainer::new(spec, config.clone(), &Device::Cpu)?;
    let all: Vec<usize> = (0..n).collect();
    trainer.train_epoch(&set, &all[..256.min(n)], &mut |_, _, _| {})?;
    let mut out = BTreeMap::new();
    out.insert("train", rate(n, || Ok(trainer.train_epoch(&set, &all, &mut |_, _, _| {}).map(|_| ())?))?);
    // Batch 1: one SGD step per image (BatchNorm over one image's positions).
    let ones = &all[..256.min(n)];
    let mut single = Trainer::new(spec, TrainConfig { batch_size: 1, ..config }, &Device::Cpu)?;
    single.train_epoch(&set, &ones[..2], &mut |_, _, _| {})?;
    out.insert("train1", rate(ones.len(), || Ok(single.train_epoch(&set, ones, &mut |_, _, _| {}).map(|_| ())?))?);
    let model = trainer.checkpoint(BTreeMap::new())?.model()?;
    let (x, _) = set.batch(&all, kind, &Device::Cpu)?;
    out.insert(
        "infer128",
        rate(n, || {
            for b in 0..batches {
                eval_logits(model.as_ref(), &x.narrow(0, b * 128, 128)?)?;
            }
            Ok(())
        })?,
    );
    out.insert(
        "infer1",
        rate(256.min(n), || {
            for i in 0..256.min(n) {
                eval_logits(model.as_ref(), &x.narrow(0, i, 1)?)?;
            }
            Ok(())
        })?,
    );
    let one = x.narrow(0, 0, 1)?;
    for (name, rule) in [("vbp_ms", ReluRule::Standard), ("gb_ms", ReluRule::Guided)] {
        input_gradient(model.as_ref(), &one, &[3], Score::Logit, rule)?;
        out.insert(
            name,
            median_ms(30, || Ok(input_gradient(model.as_ref(), &one, &[3], Score::Logit, rule).map(|_| ())?))?,
        );
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args = common::args(include_str!("bench-kernels.rs"));
    let threads: usize = arg(&args, "--threads").map(|v| v.parse()).transpose()?.unwrap_or(2);
    let batches: usize = arg(&args, "--batches").map(|v| v.parse()).transpose()?.unwrap_or(20);
    let python = arg(&args, "--python").or_else(|| std::env::var("WHITEBOX_PYTHON").ok()).unwrap_or("python3".into());
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let ours: Vec<(DatasetKind, BTreeMap<&str, f64>)> = [DatasetKind::Mnist, DatasetKind::Cifar10]
        .into_iter()
        .map(|k| Ok((k, bench(k, batches)?)))
        .collect::<Result<_>>()?;
    let our_peak = common::sgemm_gflops()?;
    let script = repo_root().join("tests/reference/bench_torch.py");
    let torch: Option<serde_json::Value> = std::process::Command::new(&python)
        .arg(&script)
        .arg(threads.to_string())
        .arg(batches.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .ok()
        .filter(|o| {
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr);
                let tail: Vec<&str> = err.lines().rev().take(3).collect();
                eprintln!("{} failed: {}", script.display(), tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
            }
            o.status.success()
        })
        .and_then(|o| serde_json::from_slice(&o.stdout).ok());
    println!("SimpleCNN, {threads} threads, {batches} batches of 128 random images per timing (best of 3; saliency: median of 30)");
    println!("| data set | measure | whitebox | PyTorch | whitebox / PyTorch |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let rows = [
        ("train", "training, batch 128 (images/s)", false),
        ("train1", "training, batch 1 (images/s)", false),
        ("infer128", "inference, batch 128 (images/s)", false),
        ("infer1", "inference, batch 1 (images/s)", false),
        ("vbp_ms", "VBP map, one image (ms)", true),
        ("gb_ms", "GB map, one image (ms)", true),
    ];
    for (kind, figures) in &ours {
        for (key, label, lower_is_better) in rows {
            let mine = figures[key];
            match torch.as_ref().and_then(|t| t[kind.name()][key].as_f64()) {
                // Ratios read "how many times faster whitebox is" for rates and times alike.
                Some(theirs) => {
                    let speedup = if lower_is_better { theirs / mine } else { mine / theirs };
                    println!("| {kind} | {label} | {mine:.1} | {theirs:.1} | {speedup:.2}× |");
                }
                None => println!("| {kind} | {label} | {mine:.1} | n/a | n/a |"),
            }
        }
    }
    let torch_peak = torch.as_ref().and_then(|t| t["sgemm_gflops"].as_f64());
    println!();
    println!(
        "sgemm 1024³: whitebox (gemm crate) {our_peak:.1} GFLOP/s, PyTorch {} GFLOP/s",
        torch_peak.map_or("n/a".into(), |p| format!("{p:.1}"))
    );
    for (kind, figures) in &ours {
        let train_flops = common::training_flops(Arch::SimpleCnn, *kind)?;
        let peak = our_peak.max(torch_peak.unwrap_or(0.0));
        let mine = figures["train"] * train_flops / 1e9;
        let theirs = torch.as_ref().and_then(|t| t[kind.name()]["train"].as_f64()).map(|r| r * train_flops / 1e9);
        println!(
            "{kind}: training at {mine:.1} GFLOP/s = {:.0} % of the sgemm peak ({peak:.1}); PyTorch {}",
            100.0 * mine / peak,
            theirs.map_or("n/a".into(), |t| format!("{t:.1} GFLOP/s = {:.0} %", 100.0 * t / peak))
        );
    }
    if torch.is_none() {
        println!("(PyTorch not run: `{python}` could not run the PyTorch script (torch and captum needed); set --python or WHITEBOX_PYTHON)");
    }
    Ok(())
}
