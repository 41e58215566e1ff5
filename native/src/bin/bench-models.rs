//! Training cost of every model (SimpleCNN, CAM, CBAM, RAN-56, WARN) on the CPU against PyTorch running the seed's
//! own definitions: seconds per training batch and images per second (SGD with momentum, the same batch size and
//! thread count) and the peak memory of the process. Each model runs in a child process of its own, so the peaks
//! do not mix.
//!
//! cargo run --release -p whitebox --bin bench-models -- [--threads 2] [--batch 32,128] [--steps 3]
//!     [--models simple-cnn,cam,cbam,ran,warn] [--python PY --seed-code DIR]
//! PyTorch runs `tests/reference/bench_attention_models.py` with the seed's `code/` directory; without `--python`
//! the table shows whitebox alone.

#[path = "../allocator.rs"]
mod allocator;
#[path = "../bench/common.rs"]
mod common;
use common::{arg, repo_root};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use std::process::Command;
use std::time::Instant;
use whitebox_core::data::{DatasetKind, ImageSet};
use whitebox_core::models::{Arch, ModelSpec};
use whitebox_core::train::{TrainConfig, Trainer};

/// Peak resident memory of this process (`VmHWM`), in MiB.
fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kib: f64 = line.split_whitespace().nth(1).context("VmHWM value")?.parse()?;
    Ok(kib / 1024.0)
}

/// One model: `steps` timed training batches after one warm-up batch; prints "seconds_per_batch peak_mib".
fn one(spec: ModelSpec, batch: usize, steps: usize) -> Result<()> {
    let kind = spec.dataset;
    let n = batch * (steps + 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let side = kind.side();
    let pixels: Vec<u8> = (0..n * kind.channels() * side * side).map(|_| rng.random()).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let set = ImageSet::new(pixels, labels, kind.channels(), side, side)?;
    let config = TrainConfig { epochs: 1, batch_size: batch, augment: false, ..TrainConfig::seed_defaults(kind) };
    let mut trainer = Trainer::new(spec, config, &candle_core::Device::Cpu)?;
    let warmup: Vec<usize> = (0..batch).collect();
    trainer.train_epoch(&set, &warmup, &mut |_, _, _| {})?;
    let timed: Vec<usize> = (batch..n).collect();
    let t0 = Instant::now();
    trainer.train_epoch(&set, &timed, &mut |_, _, _| {})?;
    println!("{} {}", t0.elapsed().as_secs_f64() / steps as f64, peak_rss_mib()?);
    Ok(())
}

fn parse_pair(text: &str) -> Option<(f64, f64)> {
    let mut it = text.lines().last()?.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((it.next()??, it.next()??))
}

fn main() -> Result<()> {
    allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads").map(|t| t.parse()).transpose()?.unwrap_or(2);
    let batches: Vec<usize> =
        arg(&args, "--batch").unwrap_or("32,128".into()).split(',').map(|b| b.parse()).collect::<Result<_, _>>()?;
    let batch = batches[0];
    let steps: usize = arg(&args, "--steps").map(|t| t.parse()).transpose()?.unwrap_or(3);
    if let Some(model) = arg(&args, "--one") {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
        let dataset = DatasetKind::parse(&arg(&args, "--dataset").context("--dataset")?)?;
        return one(ModelSpec { arch: Arch::parse(&model)?, dataset }, batch, steps);
    }
    let python = arg(&args, "--python");
    let seed_code = arg(&args, "--seed-code");
    let script = repo_root().join("tests/reference/bench_attention_models.py");
    let script = script.to_str().context("a repository path that is not UTF-8")?;
    let models = arg(&args, "--models").unwrap_or("simple-cnn,cam,cbam,ran,warn".into());
    println!("training on the CPU, {threads} threads, mean of {steps} batches after a warm-up\n");
    println!(
        "| model | data | batch | whitebox images/s | PyTorch images/s | speed ratio | whitebox peak MiB | PyTorch peak MiB |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for arch in models.split(',') {
        for (dataset, batch) in ["mnist", "cifar10"].into_iter().flat_map(|d| batches.iter().map(move |&b| (d, b))) {
            let common = [
                "--threads".to_string(),
                threads.to_string(),
                "--batch".into(),
                batch.to_string(),
                "--steps".into(),
                steps.to_string(),
            ];
            let out = Command::new(std::env::current_exe()?)
                .args(["--one", arch, "--dataset", dataset])
                .args(&common)
                .output()?;
            if !out.status.success() {
                bail!("{arch} {dataset}: {}", String::from_utf8_lossy(&out.stderr));
            }
            let (ws, wm) = parse_pair(&String::from_utf8_lossy(&out.stdout)).context("whitebox child output")?;
            let torch = match (&python, &seed_code) {
                (Some(py), Some(code)) => {
                    let out = Command::new(py)
                        .args([script, "--seed-code", code, "--model", arch, "--dataset", dataset])
                        .args(&common)
                        .output()?;
                    parse_pair(&String::from_utf8_lossy(&out.stdout))
                }
                _ => None,
            };
            let (ts, tm, ratio) = match torch {
                Some((ts, tm)) => (format!("{:.0}", batch as f64 / ts), format!("{tm:.0}"), format!("{:.2}×", ts / ws)),
                None => ("–".into(), "–".into(), "–".into()),
            };
            println!("| {arch} | {dataset} | {batch} | {:.0} | {ts} | {ratio} | {wm:.0} | {tm} |", batch as f64 / ws);
        }
    }
    println!("\nspeed ratio = whitebox images/s / PyTorch images/s (above 1: whitebox is faster)");
    Ok(())
}
