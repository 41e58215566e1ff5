//! Attribution throughput: maps/second for VBP, GB, GC, IG-50 and SG-50 on the first N MNIST test images with the
//! shipped SimpleCNN, whitebox next to Captum in the same run (both pinned to the same thread count), with ratios.
//!
//! cargo run --release -p whitebox --bin bench-attribution -- [--images 1000] [--ensemble-images 100] [--threads 2]
//!     [--python PY]
//! IG-50 and SG-50 cost 50 passes per map, so they run on the first `--ensemble-images` images.
//! Captum is run through `tests/reference/bench_captum.py` with `--python` (default: $WHITEBOX_PYTHON, else
//! python3); when it cannot be imported, the table says so and shows whitebox alone.

#[path = "../allocator.rs"]
mod allocator;
#[path = "../bench/common.rs"]
mod common;
use common::{arg, repo_root};

use anyhow::Result;
use candle_core::Device;
use std::collections::HashMap;
use std::time::Instant;
use whitebox_core::attribution::{self as attr, Attribution, Ensemble, Method, NoiseTunnel, Score, Settings};
use whitebox_core::data::DatasetKind;
use whitebox_core::params::Checkpoint;

/// Best rate over internal batch sizes, as for Captum.
fn best_rate<'a>(
    m: &dyn whitebox_core::models::Classifier,
    x: &candle_core::Tensor,
    targets: &[u32],
    make: &dyn Fn(usize) -> Box<dyn Attribution + 'a>,
    batches: &[usize],
) -> Result<f64> {
    let n = targets.len();
    let mut best = 0f64;
    for &batch in batches {
        let method = make(batch);
        // Twice per batch size, as the Captum script does.
        for _ in 0..2 {
            let t0 = Instant::now();
            for s in (0..n).step_by(batch) {
                let len = batch.min(n - s);
                method.attribute(m, &x.narrow(0, s, len)?, &targets[s..s + len], Score::Logit)?;
            }
            best = best.max(n as f64 / t0.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}

fn main() -> Result<()> {
    allocator::keep_freed_memory();
    let args = common::args(include_str!("bench-attribution.rs"));
    let n: usize = arg(&args, "--images").map(|v| v.parse()).transpose()?.unwrap_or(1000);
    let n_ens: usize = arg(&args, "--ensemble-images").map(|v| v.parse()).transpose()?.unwrap_or(100);
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
    let n_ens = n_ens.min(idx.len());
    let (xe, te) = (x.narrow(0, 0, n_ens)?, &targets[..n_ens]);

    let settings = |batch| Settings { batch, ..Settings::default() }.with("ig-steps", 50).with("riemann", "trapezoid");
    let vbp = attr::ModifiedGradient::new(whitebox_core::ops::ReluRule::Standard);
    let ours: Vec<(&str, f64)> = vec![
        (
            "VBP",
            best_rate(
                m,
                &x,
                &targets,
                &|b| attr::method(Method::VBP, &settings(b), m).expect("applies"),
                &[100, 250, 1000],
            )?,
        ),
        (
            "GB",
            best_rate(
                m,
                &x,
                &targets,
                &|b| attr::method(Method::GB, &settings(b), m).expect("applies"),
                &[100, 250, 1000],
            )?,
        ),
        (
            "GC",
            best_rate(
                m,
                &x,
                &targets,
                &|b| attr::method(Method::GC, &settings(b), m).expect("applies"),
                &[100, 250, 1000],
            )?,
        ),
        (
            "IG-50",
            best_rate(m, &xe, te, &|_| attr::method(Method::IG, &settings(500), m).expect("applies"), &[10, 50])?,
        ),
        (
            "SG-50",
            best_rate(
                m,
                &xe,
                te,
                &|_| {
                    Box::new(NoiseTunnel {
                        base: &vbp,
                        kind: Ensemble::SmoothGrad,
                        samples: 50,
                        noise_level: 0.15,
                        batch: 500,
                        seed: 0,
                        noise: None,
                    })
                },
                &[10, 50],
            )?,
        ),
    ];

    let script = root.join("tests/reference/bench_captum.py");
    let captum: Option<HashMap<String, f64>> = std::process::Command::new(&python)
        .arg(&script)
        .arg(&checkpoint)
        .arg(idx.len().to_string())
        .arg(n_ens.to_string())
        .arg(threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok());
    println!(
        "attribution throughput, SimpleCNN, {} MNIST test images ({n_ens} for IG-50 and SG-50), {threads} threads (maps/s, best batch size)",
        idx.len()
    );
    println!("| method | whitebox | Captum | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, ours) in ours {
        match captum.as_ref().and_then(|c| c.get(name)) {
            Some(theirs) => println!("| {name} | {ours:.1} | {theirs:.1} | {:.2}× |", ours / theirs),
            None => println!("| {name} | {ours:.1} | n/a | n/a |"),
        }
    }
    if captum.is_none() {
        println!("(Captum not run: `{python}` could not import torch and captum; set --python or WHITEBOX_PYTHON)");
    }
    Ok(())
}
