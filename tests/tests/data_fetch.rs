//! `whitebox data fetch` against a loopback server holding the original files: success, corruption, truncation.

use std::collections::HashMap;
use whitebox_e2e::*;

#[test]
fn fetches_mnist_verifies_and_is_idempotent() {
    let base = serve(mnist_files());
    let dir = TempDir::new("fetch-mnist");
    let data = dir.path().join("data");
    let out = whitebox(&["data", "fetch", "mnist", "--from", &base, "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        list_dir(&data),
        vec![
            "mnist",
            "mnist/t10k-images-idx3-ubyte.gz",
            "mnist/t10k-labels-idx1-ubyte.gz",
            "mnist/train-images-idx3-ubyte.gz",
            "mnist/train-labels-idx1-ubyte.gz"
        ]
    );
    // A second fetch finds the verified data and does nothing.
    let again = whitebox(&[
        "data",
        "fetch",
        "mnist",
        "--from",
        "http://127.0.0.1:9/unreachable/",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("already"), "{}", stderr(&again));
}

#[test]
fn a_corrupted_download_is_rejected_and_leaves_nothing_behind() {
    let mut files = mnist_files();
    // Change one label inside the (re-compressed) label file: valid gzip, valid IDX, wrong content.
    let raw = {
        use std::io::Read;
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(files["train-labels-idx1-ubyte.gz"].as_slice()).read_to_end(&mut v).unwrap();
        v
    };
    let mut tampered = raw.clone();
    tampered[100] = (tampered[100] + 1) % 10;
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(&tampered).unwrap();
        enc.finish().unwrap();
    }
    files.insert("train-labels-idx1-ubyte.gz".into(), gz);
    let base = serve(files);
    let dir = TempDir::new("fetch-corrupt");
    let out = whitebox(&["data", "fetch", "mnist", "--from", &base, "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "must fail with exit code 1");
    let err = stderr(&out);
    assert!(err.contains("checksum mismatch for train-labels-idx1-ubyte.gz"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(list_dir(dir.path()), Vec::<String>::new(), "nothing may be left behind");
}

#[test]
fn a_truncated_or_missing_download_is_an_error() {
    let mut files = mnist_files();
    let cut = files["t10k-images-idx3-ubyte.gz"].len() / 3;
    files.get_mut("t10k-images-idx3-ubyte.gz").unwrap().truncate(cut);
    files.remove("t10k-labels-idx1-ubyte.gz");
    let base = serve(files);
    let dir = TempDir::new("fetch-truncated");
    let out = whitebox(&["data", "fetch", "mnist", "--from", &base, "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("t10k-images-idx3-ubyte.gz: corrupt gzip stream"), "{err}");
    assert_eq!(list_dir(dir.path()), Vec::<String>::new());
    let served = serve(HashMap::new());
    let out = whitebox(&["data", "fetch", "mnist", "--from", &served, "--data-dir", dir.path().to_str().unwrap()]);
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
}

#[test]
fn fetches_cifar10_archive_and_extracts_verified_batches() {
    let archive = std::fs::read(shared_data().join("cifar-10-binary.tar.gz")).expect("shared CIFAR-10 archive");
    let base = serve(HashMap::from([("cifar-10-binary.tar.gz".to_string(), archive)]));
    let dir = TempDir::new("fetch-cifar");
    let out = whitebox(&["data", "fetch", "cifar10", "--from", &base, "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = list_dir(dir.path());
    for f in ["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"] {
        assert!(listing.contains(&format!("cifar10/cifar-10-batches-bin/{f}")), "{listing:?}");
    }
    assert!(!listing.iter().any(|p| p.contains(".tmp")), "{listing:?}");
}
