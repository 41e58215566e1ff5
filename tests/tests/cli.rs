//! The `whitebox` command line end to end: parameter counts, bad data, training with kill and resume, and the
//! accuracy of the shipped checkpoints on the full MNIST test set.

use candle_core::Device;
use std::path::Path;
use std::process::Command;
use whitebox_core::params::Checkpoint;
use whitebox_e2e::*;

#[test]
fn info_prints_the_seed_parameter_counts() {
    // The seed's README table (SimpleCNN family and RAN-56).
    let want = [
        ("simple-cnn", "mnist", 1_284_042),
        ("cam", "mnist", 1_285_332),
        ("cbam", "mnist", 1_288_561),
        ("simple-cnn", "cifar10", 2_202_122),
        ("cam", "cifar10", 2_203_412),
        ("cbam", "cifar10", 2_206_641),
        ("ran", "mnist", 27_987_466),
        ("ran", "cifar10", 27_990_666),
        // Not in the seed's table; counted by PyTorch on the seed's definitions (tests/reference/attention_goldens.py).
        ("ran-92", "mnist", 34_698_250),
        ("warn", "mnist", 6_043_362),
        ("warn", "cifar10", 6_043_650),
    ];
    for (model, dataset, n) in want {
        let out = whitebox(&["info", "--model", model, "--dataset", dataset]);
        assert!(out.status.success());
        assert!(stdout(&out).lines().any(|l| l == format!("parameters: {n}")), "{model} {dataset}: {}", stdout(&out));
    }
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(whitebox(&["--help"]).status.code(), Some(0));
    assert_eq!(whitebox(&["train", "--dataset", "svhn"]).status.code(), Some(2));
    let out = whitebox(&["eval", "--checkpoint", "/nonexistent.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("reading /nonexistent.safetensors"), "{}", stderr(&out));
}

/// Non-finite or out-of-range numbers, in a flag or in a checkpoint's weights, are errors that name the flag or the
/// tensor, and nothing runs on them.
#[test]
fn non_finite_numbers_are_errors_naming_the_flag_or_tensor() {
    let dir = TempDir::new("non-finite");
    let shipped = repo_root().join("weights/mnist/cam.safetensors");
    let mut ck = Checkpoint::from_bytes("cam", &std::fs::read(&shipped).unwrap(), &Device::Cpu).unwrap();
    let w = &ck.tensors["classifier.2.weight"];
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    ck.tensors.insert("classifier.2.weight".into(), candle_core::Tensor::from_vec(v, w.shape(), &Device::Cpu).unwrap());
    let poisoned = dir.path().join("nan.safetensors");
    std::fs::write(&poisoned, ck.to_bytes(candle_core::DType::F32).unwrap()).unwrap();
    let data = shared_data();
    let (p, d) = (poisoned.to_str().unwrap(), data.to_str().unwrap());
    for args in [
        vec!["eval", "--checkpoint", p, "--data-dir", d, "--limit", "10"],
        vec!["attribute", "--checkpoint", p, "--method", "vbp", "--indices", "0", "--png", "/tmp", "--data-dir", d],
    ] {
        let out = whitebox(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("tensor 'classifier.2.weight' holds a non-finite value (NaN at flat index 3)"), "{err}");
    }
    let ok = repo_root().join("weights/mnist/simple-cnn.safetensors");
    let ok = ok.to_str().unwrap();
    let attribute = ["attribute", "--checkpoint", ok, "--method", "vbp", "--ensemble", "sg", "--indices", "0"];
    let cases: [(Vec<&str>, &str); 12] = [
        ([&attribute[..], &["--noise", "nan"]].concat(), "--noise"),
        ([&attribute[..], &["--noise", "inf"]].concat(), "--noise"),
        ([&attribute[..], &["--noise", "11"]].concat(), "--noise"),
        (vec!["train", "--dataset", "mnist", "--lr", "NaN"], "--lr"),
        (vec!["train", "--dataset", "mnist", "--lr", "-0.1"], "--lr"),
        (vec!["train", "--dataset", "mnist", "--momentum", "1"], "--momentum"),
        (vec!["train", "--dataset", "mnist", "--weight-decay", "nan"], "--weight-decay"),
        (vec!["selectivity", "--checkpoint", ok, "--sample", "inf"], "--sample"),
        (vec!["selectivity", "--checkpoint", ok, "--sample", "0"], "--sample"),
        (vec!["roar", "--checkpoint", ok, "--thresholds", "0.1,nan"], "--thresholds"),
        (vec!["kar", "--checkpoint", ok, "--thresholds", "1.5"], "--thresholds"),
        (vec!["kar", "--checkpoint", ok, "--thresholds", "-0.5"], "--thresholds"),
    ];
    for (args, flag) in cases {
        let out = whitebox(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && !err.contains("panicked"), "{args:?}: {err}");
    }
    let out = whitebox(&[&attribute[..], &["--n", "0", "--png", "/tmp", "--data-dir", d]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ensemble samples must be within 1..=1000, got 0"), "{}", stderr(&out));
}

fn copy_mnist(to: &Path) {
    std::fs::create_dir_all(to.join("mnist")).unwrap();
    for (name, bytes) in mnist_files() {
        std::fs::write(to.join("mnist").join(name), bytes).unwrap();
    }
}

/// Truncated files, a wrong magic number and mismatched counts give an error naming the file, never a panic.
#[test]
fn bad_data_files_give_clear_errors() {
    let dir = TempDir::new("bad-data");
    let tiny = dir.path().join("tiny");
    let trained = whitebox(&[
        "train",
        "--dataset",
        "mnist",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--data-dir",
        shared_data().to_str().unwrap(),
        "--out",
        tiny.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    let ck = tiny.join("best.safetensors");
    let eval =
        |data: &Path| whitebox(&["eval", "--checkpoint", ck.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    type Corrupt = fn(&mut Vec<u8>);
    let cases: [(&str, &str, Corrupt, &str); 4] = [
        ("truncated", "t10k-images-idx3-ubyte", |b| b.truncate(b.len() - 1000), "(truncated)"),
        ("magic", "t10k-images-idx3-ubyte", |b| b[3] = 0x01, "wrong magic number"),
        ("count", "t10k-labels-idx1-ubyte", |b| b[7] = b[7].wrapping_add(1), "claims 10001 labels"),
        ("label", "t10k-labels-idx1-ubyte", |b| b[20] = 42, "label 12 is 42"),
    ];
    for (tag, file, corrupt, expected) in cases {
        let data = dir.path().join(tag);
        copy_mnist(&data);
        let gz = data.join("mnist").join(format!("{file}.gz"));
        let mut raw = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(std::fs::read(&gz).unwrap().as_slice()).read_to_end(&mut raw).unwrap();
        corrupt(&mut raw);
        std::fs::remove_file(&gz).unwrap();
        std::fs::write(data.join("mnist").join(file), raw).unwrap(); // raw IDX is accepted too
        let out = eval(&data);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
        assert!(err.contains(file) && err.contains(expected), "{tag}: {err}");
        assert!(!err.contains("panicked"), "{tag}: {err}");
    }
}

fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--dataset",
        "mnist",
        "--model",
        "cbam",
        "--epochs",
        "3",
        "--limit",
        "640",
        "--batch-size",
        "64",
        "--seed",
        "5",
        "--data-dir",
        data,
        "--out",
        out,
        "--quiet",
    ]
}

fn epochs_of(log: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(log).unwrap()).unwrap();
    v["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::json!([e["train_loss"], e["train_acc"], e["val_loss"], e["val_acc"]]))
        .collect()
}

/// A run killed (SIGKILL) after its first epoch and started again ends exactly where an uninterrupted run ends.
#[test]
fn training_resumes_after_a_kill_with_identical_results() {
    let data = shared_data();
    let dir = TempDir::new("train-resume");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (d, a_s, b_s) = (data.to_str().unwrap(), a.to_str().unwrap(), b.to_str().unwrap());
    let full = whitebox(&train_args(d, a_s));
    assert!(full.status.success(), "{}", stderr(&full));
    let reference = epochs_of(&a.join("log.json"));
    assert_eq!(reference.len(), 3);

    let mut child = Command::new(whitebox_bin()).args(train_args(d, b_s)).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !b.join("state.safetensors").exists() {
        assert!(std::time::Instant::now() < deadline, "no epoch finished in time");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = epochs_of(&b.join("log.json"));
    assert!(!partial.is_empty() && partial.len() < 3, "killed after {} epochs", partial.len());
    let resumed = whitebox(&train_args(d, b_s));
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(epochs_of(&b.join("log.json")), reference);
    let load = |p: &Path| {
        Checkpoint::from_bytes("best", &std::fs::read(p.join("best.safetensors")).unwrap(), &Device::Cpu).unwrap()
    };
    let (ca, cb) = (load(&a), load(&b));
    assert_eq!(ca.metadata, cb.metadata);
    for (k, t) in &ca.tensors {
        let same = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == cb.tensors[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(same, "{k} differs between the resumed and the uninterrupted run");
    }
    assert!(!list_dir(&b).iter().any(|p| p.contains(".tmp")), "{:?}", list_dir(&b));

    // Other settings in the same directory are refused rather than mixed.
    let mut other = train_args(d, b_s);
    other[10] = "32";
    let out = whitebox(&other);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("other settings"), "{}", stderr(&out));
}

/// The checkpoints in `weights/` reach the accuracy their model card states, on all 10,000 test images.
#[test]
fn shipped_checkpoints_reach_their_accuracy() {
    // MNIST: the accuracies measured when they were shipped (weights/README.md); CIFAR-10: the seed's own.
    for (model, min) in [
        ("mnist/simple-cnn", 0.992),
        ("mnist/cam", 0.988),
        ("mnist/cbam", 0.993),
        ("cifar10/simple-cnn", 0.825),
        ("cifar10/cam", 0.745),
        ("cifar10/cbam", 0.818),
    ] {
        let ck = repo_root().join(format!("weights/{model}.safetensors"));
        let out = whitebox(&[
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--data-dir",
            shared_data().to_str().unwrap(),
            "--quiet",
        ]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let text = stdout(&out);
        let line = text.lines().find(|l| l.starts_with("test accuracy:")).expect("accuracy line");
        let acc: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(line.contains("/10000)"), "{line}");
        assert!(acc >= min, "{model}: {acc} < {min}");
    }
}

/// `eval --backend wgpu` (the GPU engine's forward passes; lavapipe in CI) prints the accuracy table `--backend cpu`
/// prints, for a shipped MNIST and CIFAR-10 model.
#[test]
fn eval_on_the_gpu_equals_the_cpu() {
    for model in ["mnist/cbam", "cifar10/simple-cnn"] {
        let ck = repo_root().join(format!("weights/{model}.safetensors"));
        let run = |backend: &str| {
            let data = shared_data();
            let args =
                ["eval", "--checkpoint", ck.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--limit", "300"];
            let out = whitebox(&[&args[..], &["--backend", backend]].concat());
            assert!(out.status.success(), "{model} {backend}: {}", stderr(&out));
            // The GPU run names its adapter: it did not fall back to the CPU.
            assert_eq!(stderr(&out).contains("GPU: "), backend == "wgpu", "{}", stderr(&out));
            stdout(&out)
        };
        let (cpu, gpu) = (run("cpu"), run("wgpu"));
        assert!(cpu.contains("(") && cpu.contains("/300)"), "{cpu}");
        // The loss is printed to four decimals: equal logits to ~1e-6 give the same text.
        assert_eq!(gpu, cpu, "{model}: the GPU's table differs from the CPU's");
    }
}

/// `coherence` draws the method figure, the seed's per-layer ConvOutput figure (a column per `features[k]`: 12 for
/// SimpleCNN and CBAM), the per-layer Grad-CAM one (a column per block: 3) and the ensemble figure (a row per
/// method, a column per ensemble and none), SimpleCNN and CBAM side by side.
#[test]
fn coherence_draws_the_three_figures() {
    let dir = TempDir::new("coherence");
    let out = dir.path().join("mnist.png");
    let mut args = vec!["coherence".to_string(), "--quiet".into()];
    for model in ["simple-cnn", "cbam"] {
        args.push("--checkpoint".into());
        args.push(repo_root().join(format!("weights/mnist/{model}.safetensors")).display().to_string());
    }
    args.extend(["--out".into(), out.display().to_string(), "--data-dir".into(), shared_data().display().to_string()]);
    let run = whitebox(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}", stderr(&run));
    let size = |name: &str| {
        let bytes = std::fs::read(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
        let be = |k: usize| u32::from_be_bytes(bytes[k..k + 4].try_into().unwrap()) as usize;
        (be(16), be(20))
    };
    let (methods, co, gc) = (size("mnist.png"), size("mnist-layers.png"), size("mnist-layers-gc.png"));
    let ensembles = size("mnist-ensembles.png");
    // Each model's block is (columns + 1) cells of 88 px and a 16 px gap, after a 72 px label column.
    let width = |columns: [usize; 2]| 72 + columns.iter().map(|c| (c + 1) * 88 + 16).sum::<usize>();
    assert_eq!(methods.0, width([7, 7]));
    assert_eq!(co.0, width([12, 12]));
    assert_eq!(gc.0, width([3, 3]));
    assert!(methods.1 == co.1 && co.1 == gc.1 && co.1 == 40 + 10 * 88, "a row per class");
    assert_eq!(ensembles, (width([4, 4]), 40 + 7 * 88), "a row per method");
    assert!(stdout(&run).lines().count() == 4, "{}", stdout(&run));
}

/// `attribute` with `args` on the CPU and on the GPU (lavapipe in CI): each run's maps. The GPU run names its adapter
/// (it did not fall back to the CPU).
fn attribute_on_cpu_and_gpu(dir: &Path, checkpoint: &Path, args: &[&str]) -> (Vec<f32>, Vec<f32>) {
    let data = shared_data();
    let maps = |backend: &str| {
        let raw = dir.join(format!("{backend}{}.safetensors", args.join("-")));
        let out = whitebox(
            &[
                &["attribute", "--checkpoint", checkpoint.to_str().unwrap()],
                args,
                &["--backend", backend, "--raw", raw.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
            ]
            .concat(),
        );
        assert!(out.status.success(), "{args:?} {backend}: {}", stderr(&out));
        assert_eq!(stderr(&out).contains("GPU: "), backend == "wgpu", "{}", stderr(&out));
        let t = candle_core::safetensors::load(&raw, &Device::Cpu).unwrap();
        t["attributions"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    (maps("cpu"), maps("wgpu"))
}

/// `attribute --backend wgpu` (lavapipe in CI) writes the maps `--backend cpu` writes: CBAM, Guided Grad-CAM in a
/// SmoothGrad ensemble, four test digits.
#[test]
fn attribute_on_the_gpu_equals_the_cpu() {
    let dir = TempDir::new("gpu-attribute");
    let checkpoint = repo_root().join("weights/mnist/cbam.safetensors");
    let args = ["--method", "gbgc", "--ensemble", "sg", "--n", "8", "--indices", "0..4"];
    let (cpu, gpu) = attribute_on_cpu_and_gpu(dir.path(), &checkpoint, &args);
    assert_eq!(cpu.len(), 4 * 784);
    assert!(cpu.iter().any(|v| *v != 0.0), "the maps are all zero");
    let worst = whitebox_core::testing::max_rel_error(&gpu, &cpu, 0.0);
    assert!(worst < 1e-4, "relative error {worst}");
}

/// `attribute --backend wgpu` runs the attention models too (through the GPU's graph engine) and writes the maps
/// `--backend cpu` writes: a WARN (random weights, saved as a checkpoint), guided backpropagation and Grad-CAM, two
/// test digits. The core test `gpu_graph_engine_equals_cpu_graph_engine` measured WARN's MNIST gradients within
/// 2.3e-5 of the CPU's.
#[test]
fn attribute_on_the_gpu_runs_the_attention_models() {
    use whitebox_core::models::{Arch, ModelSpec};
    let dir = TempDir::new("gpu-attention");
    let spec = ModelSpec { arch: Arch::Warn, dataset: whitebox_core::data::DatasetKind::Mnist };
    let (map, _) = whitebox_core::train::parity::trainable(spec, 7).unwrap();
    let checkpoint = dir.path().join("warn.safetensors");
    let bytes = Checkpoint::from_varmap(spec, &map, Default::default()).unwrap().to_bytes(candle_core::DType::F32);
    std::fs::write(&checkpoint, bytes.unwrap()).unwrap();
    for method in ["gb", "gc"] {
        let (cpu, gpu) = attribute_on_cpu_and_gpu(dir.path(), &checkpoint, &["--method", method, "--indices", "0..2"]);
        assert_eq!(cpu.len(), 2 * 784);
        assert!(cpu.iter().any(|v| *v != 0.0), "{method}: the maps are all zero");
        let worst = whitebox_core::testing::max_rel_error(&gpu, &cpu, 0.0);
        assert!(worst < 1e-4, "{method}: relative error {worst}");
    }
}

/// `attribute --method rise --draws` writes the masks it drew for each image with the maps; the same seed draws the
/// same masks and maps, another seed others; the map equals Σ S(x ⊙ M) M / (N p) recomputed from the written masks
/// with the model's own scores; `--draws` on a method that draws nothing is an error.
#[test]
fn perturbation_draws_are_written_and_reproducible() {
    let dir = TempDir::new("draws");
    let checkpoint = repo_root().join("weights/mnist/simple-cnn.safetensors");
    let data = shared_data();
    let run = |method: &str, seed: &str, name: &str| {
        let raw = dir.path().join(name);
        let out = whitebox(&[
            "attribute",
            "--quiet",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--method",
            method,
            "--perturbations",
            "40",
            "--seed",
            seed,
            "--target",
            "prob",
            "--indices",
            "3,5",
            "--raw",
            raw.to_str().unwrap(),
            "--draws",
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        (out, raw)
    };
    let (out, a) = run("rise", "1", "a.safetensors");
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, b) = run("rise", "1", "b.safetensors");
    let (_, c) = run("rise", "2", "c.safetensors");
    let load = |p: &Path| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let (ta, tb, tc) = (load(&a), load(&b), load(&c));
    let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(ta["draws/masks/3"].dims(), &[40, 28, 28]);
    assert_eq!(values(&ta["draws/masks/3"]), values(&ta["draws/masks/5"]), "one set of masks per run");
    assert_eq!(values(&ta["attributions"]), values(&tb["attributions"]), "the same seed, the same maps");
    assert_ne!(values(&ta["draws/masks/3"]), values(&tc["draws/masks/3"]), "another seed, other masks");
    // The map from the masks written: the model's probability of the target on each masked image.
    let model =
        Checkpoint::from_bytes("ck", &std::fs::read(&checkpoint).unwrap(), &Device::Cpu).unwrap().model().unwrap();
    let x = ta["inputs"].get(0).unwrap();
    let masks = &ta["draws/masks/3"];
    let masked = masks.unsqueeze(1).unwrap().broadcast_mul(&x.unsqueeze(0).unwrap()).unwrap();
    let p = whitebox_core::attribution::probabilities(model.as_ref(), &masked).unwrap();
    let t = values(&ta["targets"].to_dtype(candle_core::DType::F32).unwrap())[0] as usize;
    let s = values(&p.narrow(1, t, 1).unwrap());
    let m = values(masks);
    let want: Vec<f32> = (0..784).map(|q| (0..40).map(|i| s[i] * m[i * 784 + q]).sum::<f32>() / (40.0 * 0.5)).collect();
    let got = &values(&ta["attributions"])[..784];
    let worst = whitebox_core::testing::max_rel_error(got, &want, 1e-6);
    assert!(worst < 1e-4, "RISE from the written masks: {worst}");
    let (out, _) = run("vbp", "1", "d.safetensors");
    assert!(!out.status.success() && stderr(&out).contains("draws nothing"), "{}", stderr(&out));
}
