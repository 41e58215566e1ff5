//! Where the data sets live on disk, how they are loaded, and how they are fetched from their canonical sources.
//!
//! Layout of a data directory (`--data-dir`, else `$WHITEBOX_DATA`, else `./data`):
//! - `mnist/` with the four IDX files (gzip-compressed or raw);
//! - `cifar10/cifar-10-batches-bin/*.bin`, or the archive `cifar-10-binary.tar.gz` in the directory itself
//!   (read in memory, nothing extracted beside it).

use crate::{fsutil, ui};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use whitebox_core::data::{self, DatasetKind, ImageSet};

/// The data directory: the flag, else `$WHITEBOX_DATA`, else `./data`.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("WHITEBOX_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Training and test sets of a data set.
pub struct Loaded {
    pub train: ImageSet,
    pub test: ImageSet,
}

const CIFAR_ARCHIVE: &str = "cifar-10-binary.tar.gz";
const CIFAR_DIR: &str = "cifar-10-batches-bin";

fn find_file(dir: &Path, gz_name: &str) -> Option<PathBuf> {
    let raw = gz_name.trim_end_matches(".gz");
    [gz_name, raw].iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Loads `kind` from `dir`, with a clear error naming what is missing and how to get it.
pub fn load(kind: DatasetKind, dir: &Path) -> Result<Loaded> {
    let missing = |what: String| {
        anyhow::anyhow!("{what} not found in {}; run `whitebox data fetch {kind}` or pass --data-dir", dir.display())
    };
    match kind {
        DatasetKind::Mnist => {
            let sub = dir.join("mnist");
            let mut files = Vec::new();
            for name in data::MNIST_FILES {
                let path = find_file(&sub, name).ok_or_else(|| missing(format!("mnist/{name}")))?;
                files.push((path.display().to_string(), fsutil::read(&path)?));
            }
            let mut it = files.into_iter();
            let mut next = || it.next().expect("four files");
            let (ti, tl, si, sl) = (next(), next(), next(), next());
            let train = data::mnist_set((&ti.0, ti.1), (&tl.0, tl.1))?;
            let test = data::mnist_set((&si.0, si.1), (&sl.0, sl.1))?;
            Ok(Loaded { train, test })
        }
        DatasetKind::Cifar10 => {
            let batches = dir.join("cifar10").join(CIFAR_DIR);
            if batches.is_dir() {
                let mut train = Vec::new();
                for name in data::CIFAR10_TRAIN_FILES {
                    let path = batches.join(name);
                    let bytes = fsutil::read(&path)?;
                    train.push(data::parse_cifar10_batch(&path.display().to_string(), &bytes)?);
                }
                let path = batches.join(data::CIFAR10_TEST_FILE);
                let test = data::parse_cifar10_batch(&path.display().to_string(), &fsutil::read(&path)?)?;
                return Ok(Loaded { train: ImageSet::concat(&train)?, test });
            }
            let archive = [dir.join(CIFAR_ARCHIVE), dir.join("cifar10").join(CIFAR_ARCHIVE)]
                .into_iter()
                .find(|p| p.is_file())
                .ok_or_else(|| missing(format!("cifar10/{CIFAR_DIR}/ (or {CIFAR_ARCHIVE})")))?;
            let (train, test) = data::parse_cifar10_tar_gz(&archive.display().to_string(), &fsutil::read(&archive)?)?;
            Ok(Loaded { train, test })
        }
    }
}

/// Canonical sources. MNIST's official site is often unreachable, so the mirror used by torchvision follows it.
/// CIFAR-10 has one official source.
fn default_sources(kind: DatasetKind) -> Vec<String> {
    match kind {
        DatasetKind::Mnist => {
            vec!["https://yann.lecun.com/exdb/mnist/".into(), "https://ossci-datasets.s3.amazonaws.com/mnist/".into()]
        }
        DatasetKind::Cifar10 => vec!["https://www.cs.toronto.edu/~kriz/".into()],
    }
}

/// SHA-256 of each file's content (MNIST: decompressed IDX; CIFAR-10: each `.bin`), from the canonical releases.
const MNIST_SHA256: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    ("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    ("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    ("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
];
const CIFAR_SHA256: [(&str, &str); 6] = [
    ("data_batch_1.bin", "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
    ("data_batch_2.bin", "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
    ("data_batch_3.bin", "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
    ("data_batch_4.bin", "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
    ("data_batch_5.bin", "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
    ("test_batch.bin", "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),
];

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn verify(name: &str, content: &[u8], expected: &str) -> Result<()> {
    let got = sha256_hex(content);
    if got != expected {
        bail!("checksum mismatch for {name}: expected sha256 {expected}, got {got} (corrupt or incomplete download)");
    }
    Ok(())
}

/// Reads `name` from a source: an `http(s)://` base URL, a `file://` URL, a directory, or (when the source names a
/// file directly) that file.
fn read_from(source: &str, name: &str) -> Result<Vec<u8>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let url = if source.ends_with(name) {
            source.to_string()
        } else {
            format!("{}/{name}", source.trim_end_matches('/'))
        };
        let response =
            ureq::get(&url).timeout(std::time::Duration::from_secs(60)).call().with_context(|| format!("GET {url}"))?;
        let len = response.header("Content-Length").and_then(|v| v.parse::<u64>().ok());
        let pb = ui::bytes_bar(len, name.to_string());
        let mut bytes = Vec::with_capacity(len.unwrap_or(0) as usize);
        let mut reader = pb.wrap_read(response.into_reader());
        reader.read_to_end(&mut bytes).with_context(|| format!("downloading {url}"))?;
        pb.finish_and_clear();
        if let Some(len) = len.filter(|&l| l != bytes.len() as u64) {
            bail!("{url}: received {} of {len} bytes (connection cut)", bytes.len());
        }
        return Ok(bytes);
    }
    let path = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
    let path = if path.is_dir() { path.join(name) } else { path };
    fsutil::read(&path)
}

/// Downloads `kind` into `dir` from `from` (or the canonical sources, trying each in turn), verifies every
/// checksum, and moves the verified files into place in one rename. Nothing is left behind on failure.
pub fn fetch(kind: DatasetKind, dir: &Path, from: Option<&str>) -> Result<PathBuf> {
    let target = dir.join(kind.name());
    if target.exists() && load(kind, dir).is_ok() {
        ui::note(format!("{kind} is already in {}", target.display()));
        return Ok(target);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = fsutil::temp_beside(&target);
    let _ = std::fs::remove_dir_all(&staging);
    let sources: Vec<String> = from.map(|f| vec![f.to_string()]).unwrap_or_else(|| default_sources(kind));
    let mut errors = Vec::new();
    for source in &sources {
        let result = fetch_into(kind, source, &staging);
        match result {
            Ok(()) => {
                if target.exists() {
                    std::fs::remove_dir_all(&target).with_context(|| format!("replacing {}", target.display()))?;
                }
                std::fs::rename(&staging, &target).with_context(|| format!("moving data into {}", target.display()))?;
                ui::note(format!("{kind} verified and stored in {}", target.display()));
                return Ok(target);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                ui::note(format!("{source}: {e:#}"));
                errors.push(format!("{source}: {e:#}"));
            }
        }
    }
    bail!("could not fetch {kind}:\n  {}", errors.join("\n  "))
}

fn fetch_into(kind: DatasetKind, source: &str, staging: &Path) -> Result<()> {
    match kind {
        DatasetKind::Mnist => {
            std::fs::create_dir_all(staging)?;
            for (name, sha) in MNIST_SHA256 {
                let bytes = read_from(source, name)?;
                let content = data::gunzip_if_needed(name, bytes.clone())?;
                verify(name, &content, sha)?;
                std::fs::write(staging.join(name), &bytes)?;
            }
        }
        DatasetKind::Cifar10 => {
            let bytes = read_from(source, CIFAR_ARCHIVE)?;
            let out = staging.join(CIFAR_DIR);
            std::fs::create_dir_all(&out)?;
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
            let mut seen = Vec::new();
            for entry in archive.entries().context("reading the archive")? {
                let mut entry = entry.context("reading the archive")?;
                let path = entry.path()?.to_string_lossy().into_owned();
                let base = path.rsplit('/').next().unwrap_or("").to_string();
                if let Some((_, sha)) = CIFAR_SHA256.iter().find(|(n, _)| *n == base) {
                    let mut content = Vec::new();
                    entry.read_to_end(&mut content).context("reading the archive")?;
                    verify(&base, &content, sha)?;
                    std::fs::write(out.join(&base), &content)?;
                    seen.push(base);
                }
            }
            if let Some((missing, _)) = CIFAR_SHA256.iter().find(|(n, _)| !seen.iter().any(|s| s == n)) {
                bail!("{CIFAR_ARCHIVE} lacks {missing}");
            }
        }
    }
    Ok(())
}

/// The first `per_class` images of each class of `set`, in class order, each as one label byte followed by the
/// image's bytes.
pub fn gallery(set: &data::ImageSet, per_class: usize) -> Result<Vec<u8>> {
    let classes = set.labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut out = Vec::with_capacity(classes * per_class * (1 + set.image_len()));
    for class in 0..classes as u8 {
        let picked: Vec<usize> = (0..set.len()).filter(|&i| set.labels[i] == class).take(per_class).collect();
        if picked.len() < per_class {
            anyhow::bail!("the test set has only {} images of class {class}", picked.len());
        }
        for i in picked {
            out.push(class);
            out.extend_from_slice(&set.pixels[i * set.image_len()..(i + 1) * set.image_len()]);
        }
    }
    Ok(out)
}
