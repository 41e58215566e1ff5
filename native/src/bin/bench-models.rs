//! Training cost of every model (SimpleCNN, CAM, CBAM, RAN-56, WARN) on the CPU against PyTorch running the seed's
//! own definitions: seconds per training batch and images per second (SGD with momentum, the same batch size and
//! thread count), each side's rate in GFLOP/s (the graph's count of the products, the same for both sides) against
//! the machine's 1024³ sgemm, and the peak memory of the process. Each model runs in a child process of its own, so
//! the peaks do not mix. With `--saliency`, instead: the time of one image's saliency map (the gradient of a class
//! logit to the input, evaluation mode) for each model on both sides.
//!
//! cargo run --release -p whitebox --bin bench-models -- [--threads 2] [--batch 32,128] [--steps N] [--rounds R]
//!     [--models simple-cnn,cam,cbam,ran,warn] [--saliency] [--python PY --seed-code DIR]
//! Training times the mean of `--steps` batches (default: at least 3, and at least 384 images, so that a small
//! batch's few milliseconds are not one scheduler hiccup), `--rounds` times (default 1) each side in turn, keeping
//! each side's fastest round; saliency keeps the best of `--rounds` (default 3).
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

/// One model's single-image saliency map (VBP: the gradient of class 3's logit to the input, evaluation mode, random
/// weights and image), median of `runs` after a warm-up; prints "milliseconds".
fn saliency(spec: ModelSpec, runs: usize) -> Result<()> {
    use candle_core::{Device, Tensor};
    use whitebox_core::attribution::{input_gradient, Score};
    let (map, _) = whitebox_core::params::init_model(spec, 0, &Device::Cpu)?;
    // Constant weights, as a shipped checkpoint: the model explains through its engine.
    let model = whitebox_core::params::Checkpoint::from_varmap(spec, &map, Default::default())?.model()?;
    let (c, s) = (spec.dataset.channels(), spec.dataset.side());
    let x = Tensor::randn(0f32, 1.0, (1, c, s, s), &Device::Cpu)?;
    let rule = whitebox_core::ops::ReluRule::Standard;
    input_gradient(model.as_ref(), &x, &[3], Score::Logit, rule)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        input_gradient(model.as_ref(), &x, &[3], Score::Logit, rule)?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!("{}", times[runs / 2]);
    Ok(())
}

fn parse_pair(text: &str) -> Option<(f64, f64)> {
    let mut it = text.lines().last()?.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((it.next()??, it.next()??))
}

/// Runs one training measurement (`program` with `pre` then `common`) and reads its "seconds peak_mib" line.
fn child_pair(mut program: Command, pre: &[&str], common: &[String], who: &str) -> Result<(f64, f64)> {
    let out = program.args(pre).args(common).output()?;
    if !out.status.success() {
        bail!("{who}, {}: {}", pre.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    parse_pair(&String::from_utf8_lossy(&out.stdout)).with_context(|| format!("{who} child output"))
}

fn main() -> Result<()> {
    allocator::keep_freed_memory();
    let args = common::args(include_str!("bench-models.rs"));
    let threads: usize = arg(&args, "--threads").map(|t| t.parse()).transpose()?.unwrap_or(2);
    let batches: Vec<usize> =
        arg(&args, "--batch").unwrap_or("32,128".into()).split(',').map(|b| b.parse()).collect::<Result<_, _>>()?;
    let batch = batches[0];
    let steps_given: Option<usize> = arg(&args, "--steps").map(|t| t.parse()).transpose()?;
    let steps_for = |batch: usize| steps_given.unwrap_or(TIMED_IMAGES.div_ceil(batch.max(1)).max(3));
    let steps = steps_for(batch);
    if let Some(model) = arg(&args, "--one") {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
        let dataset = DatasetKind::parse(&arg(&args, "--dataset").context("--dataset")?)?;
        let spec = ModelSpec { arch: Arch::parse(&model)?, dataset };
        return if args.iter().any(|a| a == "--saliency") {
            saliency(spec, SALIENCY_RUNS)
        } else {
            one(spec, batch, steps)
        };
    }
    let python = arg(&args, "--python");
    let seed_code = arg(&args, "--seed-code");
    let script = repo_root().join("tests/reference/bench_attention_models.py");
    let script = script.to_str().context("a repository path that is not UTF-8")?;
    let models = arg(&args, "--models").unwrap_or("simple-cnn,cam,cbam,ran,warn".into());
    if args.iter().any(|a| a == "--saliency") {
        let rounds: usize = arg(&args, "--rounds").map(|t| t.parse()).transpose()?.unwrap_or(3).max(1);
        return saliency_table(&models, (threads, rounds), python.as_deref(), seed_code.as_deref(), script);
    }
    let rounds: usize = arg(&args, "--rounds").map(|t| t.parse()).transpose()?.unwrap_or(1).max(1);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let peak = common::sgemm_gflops()?;
    let counts: Vec<String> = batches.iter().map(|&b| format!("{} batches of {b}", steps_for(b))).collect();
    println!(
        "training on the CPU, {threads} threads, the mean of {} after a warm-up; each side's fastest of {rounds} \
         round(s), the two sides in turn",
        counts.join(", ")
    );
    println!("a 1024³ sgemm here (gemm crate, {threads} threads): {peak:.0} GFLOP/s\n");
    println!(
        "| model | data | batch | whitebox images/s | PyTorch images/s | speed ratio | whitebox GFLOP/s | \
         PyTorch GFLOP/s | whitebox peak MiB | PyTorch peak MiB |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for arch in models.split(',') {
        for (dataset, batch) in ["mnist", "cifar10"].into_iter().flat_map(|d| batches.iter().map(move |&b| (d, b))) {
            let common = [
                "--threads".to_string(),
                threads.to_string(),
                "--batch".into(),
                batch.to_string(),
                "--steps".into(),
                steps_for(batch).to_string(),
            ];
            // Each side's fastest round and largest peak.
            let best = |a: Option<(f64, f64)>, b: (f64, f64)| Some(a.map_or(b, |a| (a.0.min(b.0), a.1.max(b.1))));
            let (mut ours, mut torch) = (None, None);
            for _ in 0..rounds {
                let mine = Command::new(std::env::current_exe()?);
                let mine = child_pair(mine, &["--one", arch, "--dataset", dataset], &common, "whitebox")?;
                ours = best(ours, mine);
                if let (Some(py), Some(code)) = (&python, &seed_code) {
                    let pre = [script, "--seed-code", code, "--model", arch, "--dataset", dataset];
                    torch = best(torch, child_pair(Command::new(py), &pre, &common, "PyTorch")?);
                }
            }
            let (ws, wm) = ours.context("no round ran")?;
            // One image's training step: about three forward passes of the graph's products, for both sides.
            let flops = common::training_flops(Arch::parse(arch)?, DatasetKind::parse(dataset)?)?;
            let rate = |secs: f64| batch as f64 / secs * flops / 1e9;
            let (ts, tg, tm, ratio) = match torch {
                Some((ts, tm)) => (
                    format!("{:.0}", batch as f64 / ts),
                    format!("{:.0}", rate(ts)),
                    format!("{tm:.0}"),
                    format!("{:.2}×", ts / ws),
                ),
                None => ("–".into(), "–".into(), "–".into(), "–".into()),
            };
            println!(
                "| {arch} | {dataset} | {batch} | {:.0} | {ts} | {ratio} | {:.0} | {tg} | {wm:.0} | {tm} |",
                batch as f64 / ws,
                rate(ws)
            );
        }
    }
    println!("\nspeed ratio = whitebox images/s / PyTorch images/s (above 1: whitebox is faster)");
    println!(
        "GFLOP/s = images/s × 3 forward passes' matrix products (Graph::training_flops: convolutions and linear \
         layers as direct convolution counts them), the same count for both sides whatever algorithm each runs"
    );
    Ok(())
}

/// The saliency table: each model's single-image map on both sides, each in a child process, the two sides
/// alternating for `rounds` rounds and each keeping its fastest median (this machine's neighbours slow either side
/// by up to 2× for seconds at a time).
fn saliency_table(
    models: &str,
    (threads, rounds): (usize, usize),
    python: Option<&str>,
    seed_code: Option<&str>,
    script: &str,
) -> Result<()> {
    println!(
        "\none image's saliency map (VBP, evaluation mode), median of {SALIENCY_RUNS} after a warm-up, {threads} threads, \
         the fastest of {rounds} alternating rounds per side\n"
    );
    println!("| model | data | whitebox ms | PyTorch ms | time ratio |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for arch in models.split(',') {
        for dataset in ["mnist", "cifar10"] {
            let one_of = |program: &std::path::Path, pre: &[&str]| -> Result<Option<f64>> {
                let out =
                    Command::new(program).args(pre).args(["--saliency", "--threads", &threads.to_string()]).output()?;
                Ok(String::from_utf8_lossy(&out.stdout).lines().last().and_then(|l| l.trim().parse().ok()))
            };
            let exe = std::env::current_exe()?;
            let (mut ours, mut theirs) = (f64::INFINITY, None::<f64>);
            for _ in 0..rounds {
                let mine = one_of(&exe, &["--one", arch, "--dataset", dataset])?.context("whitebox child output")?;
                ours = ours.min(mine);
                let reference = match (python, seed_code) {
                    (Some(py), Some(code)) => one_of(
                        std::path::Path::new(py),
                        &[
                            script,
                            "--seed-code",
                            code,
                            "--model",
                            arch,
                            "--dataset",
                            dataset,
                            "--batch",
                            "1",
                            "--steps",
                            "1",
                        ],
                    )?,
                    _ => None,
                };
                if let Some(t) = reference {
                    theirs = Some(theirs.map_or(t, |b| b.min(t)));
                }
            }
            let (t, ratio) = match theirs {
                Some(t) => (format!("{t:.1}"), format!("{:.2}", ours / t)),
                None => ("–".into(), "–".into()),
            };
            println!("| {arch} | {dataset} | {ours:.1} | {t} | {ratio} |");
        }
    }
    println!("\ntime ratio = whitebox ms / PyTorch ms (below 1: whitebox is faster)");
    Ok(())
}

/// Images a training measurement times at least (see the header).
const TIMED_IMAGES: usize = 384;

/// Timed saliency maps per model.
const SALIENCY_RUNS: usize = 20;
