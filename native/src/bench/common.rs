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
