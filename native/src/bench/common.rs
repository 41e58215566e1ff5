//! What the benchmark binaries share: their command-line arguments and where the repository is.

use std::path::PathBuf;

/// The value after `name` on the command line.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// The repository's root. `cargo run` says where the package is at run time; the path compiled in is the
/// fallback, since a build directory shared between checkouts (as CI's is) keeps the path of the checkout that
/// compiled it.
pub fn repo_root() -> PathBuf {
    let native =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    native.join("..")
}

/// The MNIST test set, read from `$WHITEBOX_SHARED_DATA` or else `../shared/data` beside the repository.
#[allow(dead_code)] // bench-kernels times random inputs and reads no data set.
pub fn mnist_test() -> anyhow::Result<whitebox_core::data::ImageSet> {
    use anyhow::Context;
    let data =
        std::env::var_os("WHITEBOX_SHARED_DATA").map(PathBuf::from).unwrap_or(repo_root().join("../shared/data"));
    let read = |f: &str| {
        std::fs::read(data.join("mnist").join(f)).with_context(|| format!("reading {f} from {}", data.display()))
    };
    Ok(whitebox_core::data::mnist_set(
        ("t10k-images-idx3-ubyte.gz", read("t10k-images-idx3-ubyte.gz")?),
        ("t10k-labels-idx1-ubyte.gz", read("t10k-labels-idx1-ubyte.gz")?),
    )?)
}

/// Floating-point operations of one image's forward pass through `arch` on `kind`, counted from the model's graph
/// (see `Graph::forward_flops`: convolutions and linear layers, 2 × their multiply-adds).
#[allow(dead_code)] // used by the benchmarks that state a roofline
pub fn forward_flops(arch: whitebox_core::models::Arch, kind: whitebox_core::data::DatasetKind) -> anyhow::Result<f64> {
    Ok(whitebox_core::models::graph(whitebox_core::models::ModelSpec { arch, dataset: kind })?.forward_flops())
}

/// Floating-point operations of one image's training step through `arch` on `kind` (`Graph::training_flops`).
#[allow(dead_code)] // used by the benchmarks that state a roofline
pub fn training_flops(
    arch: whitebox_core::models::Arch,
    kind: whitebox_core::data::DatasetKind,
) -> anyhow::Result<f64> {
    Ok(whitebox_core::models::graph(whitebox_core::models::ModelSpec { arch, dataset: kind })?.training_flops())
}

/// GFLOP/s of a 1024³ single-precision matrix product on the threads rayon was given (candle's CPU matmul, the
/// `gemm` crate the kernels use): the best of three timings of ten products. A forward pass made of such products
/// cannot run faster than this.
#[allow(dead_code)] // used by the benchmarks that state a roofline
pub fn sgemm_gflops() -> anyhow::Result<f64> {
    use candle_core::{Device, Tensor};
    let a = Tensor::randn(0f32, 1.0, (1024, 1024), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (1024, 1024), &Device::Cpu)?;
    a.matmul(&b)?;
    let mut best = 0f64;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        for _ in 0..10 {
            a.matmul(&b)?;
        }
        best = best.max(10.0 * 2.0 * 1024f64.powi(3) / t0.elapsed().as_secs_f64());
    }
    Ok(best / 1e9)
}

/// The command line; with `--help` or `-h`, prints the bench's `//!` header (its usage, from `source`, the bench's
/// own file) and exits.
pub fn args(source: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        for line in source.lines().take_while(|l| l.starts_with("//!")) {
            println!("{}", line.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""));
        }
        std::process::exit(0);
    }
    args
}
