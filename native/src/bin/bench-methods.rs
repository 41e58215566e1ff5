//! Throughput of the methods verified against a reference library, each next to that library in the same run:
//! DeepLIFT and GradientSHAP (Captum), LRP's composites (Zennit), the CAM family (pytorch-grad-cam), Guided IG and
//! Blur IG (PAIR saliency, which explains one image at a time; whitebox takes the images together), the
//! perturbation methods (Captum's Occlusion, FeatureAblation, KernelShap, Lime; the reference RISE). Maps/second
//! on the first N MNIST test images with the shipped SimpleCNN, both sides pinned to the same thread count, best
//! internal batch size, two timings each (one for the multi-pass rows).
//!
//! cargo run --release -p whitebox --bin bench-methods -- [--images 500] [--multi-images 100]
//!     [--scorecam-images 50] [--path-images 20] [--perturb-images 20] [--threads 2] [--python PY] [--only A,B]
//! The references run through `tests/reference/bench_methods.py` with `--python` (default: $WHITEBOX_PYTHON, else
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
use whitebox_core::attribution::{self as attr, Method, Score, Settings};
use whitebox_core::data::DatasetKind;
use whitebox_core::models::{Arch, Classifier};
use whitebox_core::params::Checkpoint;

/// One row: the reference's name for it, the method, its settings, which images and the batch sizes tried.
struct Row {
    name: &'static str,
    reference: &'static str,
    method: &'static str,
    params: fn(Settings) -> Settings,
    images: Images,
    batches: &'static [usize],
}

#[derive(Clone, Copy)]
enum Images {
    All,
    Multi,
    ScoreCam,
    Path,
    /// The perturbation methods: all images in one call, `batch` perturbed copies per forward pass.
    Perturb,
}

const ROWS: [Row; 18] = [
    row("DeepLIFT", "Captum", "deeplift", |s| s, Images::All, &[100, 250]),
    row("GradientSHAP-20", "Captum", "gradshap", |s| s.with("shap-samples", 20), Images::Multi, &[10, 50]),
    row("LRP EpsilonPlusFlat", "Zennit", "lrp", |s| s, Images::All, &[100, 250]),
    row(
        "LRP EpsilonGammaBox",
        "Zennit",
        "lrp",
        |s| s.with("lrp-composite", "epsilon-gamma-box"),
        Images::All,
        &[100, 250],
    ),
    row("Grad-CAM++", "pytorch-grad-cam", "gcpp", |s| s.with("layer", 10), Images::All, &[100, 250]),
    row("XGrad-CAM", "pytorch-grad-cam", "xgc", |s| s.with("layer", 10), Images::All, &[100, 250]),
    row("HiResCAM", "pytorch-grad-cam", "hirescam", |s| s.with("layer", 10), Images::All, &[100, 250]),
    row("LayerCAM", "pytorch-grad-cam", "layercam", |s| s.with("layer", 10), Images::All, &[100, 250]),
    row("Eigen-CAM", "pytorch-grad-cam", "eigencam", |s| s.with("layer", 10), Images::All, &[100, 250]),
    row("Score-CAM", "pytorch-grad-cam", "scorecam", |s| s.with("layer", 10), Images::ScoreCam, &[10, 50]),
    row("Ablation-CAM", "pytorch-grad-cam", "ablationcam", |s| s.with("layer", 10), Images::ScoreCam, &[32, 128]),
    row("Guided IG-200", "PAIR saliency", "guidedig", |s| s, Images::Path, &[100]),
    row("Blur IG-100", "PAIR saliency", "blurig", |s| s, Images::Path, &[100, 250]),
    row(
        "Occlusion 4×4/2",
        "Captum",
        "occlusion",
        |s| s.with("window", 4).with("stride", 2),
        Images::Perturb,
        &[64, 256],
    ),
    row("FeatureAblation 4×4", "Captum", "ablation", |s| s.with("patch", 4), Images::Perturb, &[64, 256]),
    row(
        "KernelShap-300",
        "Captum",
        "kernelshap",
        |s| s.with("patch", 4).with("perturbations", 300),
        Images::Perturb,
        &[64, 300],
    ),
    row("Lime-300", "Captum", "lime", |s| s.with("patch", 4).with("perturbations", 300), Images::Perturb, &[64, 300]),
    row("RISE-1000", "reference RISE", "rise", |s| s.with("perturbations", RISE_MASKS), Images::Perturb, &[100, 250]),
];

/// RISE's masks per map in the benchmark: each one forward pass of a masked copy, on both sides.
const RISE_MASKS: usize = 1000;

const fn row(
    name: &'static str,
    reference: &'static str,
    method: &'static str,
    params: fn(Settings) -> Settings,
    images: Images,
    batches: &'static [usize],
) -> Row {
    Row { name, reference, method, params, images, batches }
}

/// Best rate over internal batch sizes (`repeat` timings each), as the reference script does.
fn best_rate(m: &dyn Classifier, x: &Tensor, targets: &[u32], row: &Row, repeat: usize) -> Result<f64> {
    let n = targets.len();
    let mut best = 0f64;
    for &batch in row.batches {
        let mut settings = (row.params)(Settings { batch, ..Settings::default() });
        let mut method = Method::parse(row.method)?.build(&settings, m)?;
        if matches!(row.images, Images::Multi) {
            // All samples of a chunk of images in one pass, as Captum expands them.
            settings.batch = batch * method.inputs_per_image();
            method = Method::parse(row.method)?.build(&settings, m)?;
        }
        for _ in 0..repeat {
            let t0 = Instant::now();
            // Path methods batch steps, not images: their images go in one call.
            let chunk = if matches!(row.images, Images::Path | Images::Perturb) { n } else { batch };
            for s in (0..n).step_by(chunk) {
                let len = chunk.min(n - s);
                method.attribute(m, &x.narrow(0, s, len)?, &targets[s..s + len], Score::Logit)?;
            }
            best = best.max(n as f64 / t0.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}

fn main() -> Result<()> {
    allocator::keep_freed_memory();
    let args = common::args(include_str!("bench-methods.rs"));
    let count = |name: &str, default: usize| -> Result<usize> {
        Ok(arg(&args, name).map(|v| v.parse()).transpose()?.unwrap_or(default))
    };
    let n = count("--images", 500)?;
    let threads = count("--threads", 2)?;
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let root = repo_root();
    let checkpoint = root.join("weights/mnist/simple-cnn.safetensors");
    let python = arg(&args, "--python").or_else(|| std::env::var("WHITEBOX_PYTHON").ok()).unwrap_or("python3".into());
    let test = common::mnist_test()?;
    let n = n.min(test.len());
    let n_multi = count("--multi-images", 100)?.min(n);
    let n_score = count("--scorecam-images", 50)?.min(n);
    let n_path = count("--path-images", 20)?.min(n);
    let n_perturb = count("--perturb-images", 20)?.min(n);
    let idx: Vec<usize> = (0..n).collect();
    let (x, _) = test.batch(&idx, DatasetKind::Mnist, &Device::Cpu)?;
    let model = Checkpoint::from_bytes("simple-cnn", &std::fs::read(&checkpoint)?, &Device::Cpu)?.model()?;
    let m = model.as_ref();
    let targets = attr::predict(m, &x)?;

    // `--only A,B`: the rows whose names contain A or B.
    let only: Vec<String> = arg(&args, "--only").map(|o| o.split(',').map(String::from).collect()).unwrap_or_default();
    let mut ours = Vec::new();
    for row in ROWS.iter().filter(|r| only.is_empty() || only.iter().any(|o| r.name.contains(o.as_str()))) {
        let (k, repeat) = match row.images {
            Images::All => (n, 2),
            Images::Multi => (n_multi, 1),
            Images::ScoreCam => (n_score, 1),
            Images::Path => (n_path, 1),
            Images::Perturb => (n_perturb, 1),
        };
        ours.push((row, k, best_rate(m, &x.narrow(0, 0, k)?, &targets[..k], row, repeat)?));
    }

    let theirs: Option<HashMap<String, f64>> = std::process::Command::new(&python)
        .arg(root.join("tests/reference/bench_methods.py"))
        .arg(&checkpoint)
        .args([n, n_multi, n_score, n_path, n_perturb, threads].map(|v| v.to_string()))
        .arg(only.join(","))
        .env("OMP_NUM_THREADS", threads.to_string())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok());
    println!(
        "methods against their references, SimpleCNN, MNIST test images, {threads} threads (maps/s, best batch size)"
    );
    println!("| method | images | whitebox | reference | reference maps/s | ratio |");
    println!("| --- | ---: | ---: | --- | ---: | ---: |");
    for &(row, k, rate) in &ours {
        match theirs.as_ref().and_then(|t| t.get(row.name)) {
            Some(r) => println!("| {} | {k} | {rate:.1} | {} | {r:.1} | {:.2}× |", row.name, row.reference, rate / r),
            None => println!("| {} | {k} | {rate:.1} | {} | n/a | n/a |", row.name, row.reference),
        }
    }
    // RISE is forward passes and nothing else, on both sides: its rates in GFLOP/s against the machine's matrix-product
    // peak bound what any implementation can reach here.
    if let Some(&(row, _, rate)) = ours.iter().find(|(r, ..)| r.method == "rise") {
        let per_map = RISE_MASKS as f64 * common::forward_flops(Arch::SimpleCnn, DatasetKind::Mnist)?;
        let peak = common::sgemm_gflops()?;
        let mine = rate * per_map / 1e9;
        print!("roofline: {} is {RISE_MASKS} forward passes a map: whitebox {mine:.0} GFLOP/s", row.name);
        match theirs.as_ref().and_then(|t| t.get(row.name)) {
            Some(r) => println!(
                ", {} {:.0} GFLOP/s; 3× the reference would be {:.0} GFLOP/s; a 1024³ sgemm here: {peak:.0} GFLOP/s",
                row.reference,
                r * per_map / 1e9,
                3.0 * r * per_map / 1e9
            ),
            None => println!("; a 1024³ sgemm here: {peak:.0} GFLOP/s"),
        }
    }
    if theirs.is_none() {
        println!(
            "(references not run: `{python}` could not import torch, captum, zennit, pytorch_grad_cam and saliency)"
        );
    }
    Ok(())
}
