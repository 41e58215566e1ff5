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
