//! Helpers for the end-to-end tests: the `whitebox` binary built by `cargo test --workspace`, the shared data
//! directory, and a loopback HTTP server that serves files the way the canonical download sites do.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// The repository root. `cargo test` says where the package is at run time; the path compiled in is the fallback,
/// since a build directory shared between checkouts (as CI's is) keeps the path of the checkout that compiled it.
pub fn repo_root() -> PathBuf {
    let tests =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    tests.parent().expect("tests/ has a parent").to_path_buf()
}

/// `../shared/data` beside the repository (or `$WHITEBOX_SHARED_DATA`): the original MNIST and CIFAR-10 files.
pub fn shared_data() -> PathBuf {
    std::env::var_os("WHITEBOX_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| repo_root().join("../shared/data"))
}

/// The `whitebox` binary of the same build profile as this test (`cargo build --release -p whitebox --bins`, which
/// `.ci/run` does before the tests).
pub fn whitebox_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join(format!("whitebox{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build --release -p whitebox --bins`) or run `bash .ci/run`",
        bin.display()
    );
    bin
}

/// Runs `whitebox args…` and returns its output.
pub fn whitebox(args: &[&str]) -> Output {
    Command::new(whitebox_bin()).args(args).output().expect("run whitebox")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh empty directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("whitebox-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `files` (URL path → bytes) on 127.0.0.1 in a background thread; returns the base URL.
pub fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).map(|n| n == 0).unwrap_or(true) || header == "\r\n" {
                        break;
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
                let response = match files.get(&path) {
                    Some(body) => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body))
                    }
                    None => {
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    }
                };
                let _ = response;
            });
        }
    });
    base
}

/// The four MNIST files of the shared data, by canonical name.
pub fn mnist_files() -> HashMap<String, Vec<u8>> {
    [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    .iter()
    .map(|n| (n.to_string(), std::fs::read(shared_data().join("mnist").join(n)).expect("shared MNIST file")))
    .collect()
}

/// Lists what a directory holds, recursively (relative paths), to check nothing was left behind.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    walk(base, &p, out);
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
