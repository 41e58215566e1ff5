//! The CAM family (Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM, Eigen-CAM, Ablation-CAM) against
//! pytorch-grad-cam 1.5.7
//! on PyTorch, on the shipped MNIST and CIFAR-10 checkpoints (SimpleCNN, CAM, CBAM). The goldens (inputs, targets
//! and the library's maps at the layer's resolution, after its ReLU, in float32 and float64) are made by
//! `tests/reference/cam_family_goldens.py`. Each method is built through the registry, as the command line and the
//! page build it; its map up-sampled to the input must equal the golden up-sampled the same way, within 1e-4 of the
//! library's float32 map or of its float64 one.
//!
//! At `features[10]` (the last block's ReLU) every method is held to that. At `features[8]` (the last convolution's
//! output, before BatchNorm: values of both signs) Grad-CAM++ and XGrad-CAM divide by a channel's sum of
//! activations, which can nearly vanish there (measured on MNIST SimpleCNN: a channel weight of 123 from a sum of
//! ≈ 0.01 over values of magnitude ≈ 3), so a 1e-7 difference in one activation moves the map by 1e-3: their
//! float32 results — the library's and whitebox's — scatter around the float64 one by up to 1.6e-3, and only the
//! other four methods are compared there. Ablation-CAM is compared at `features[10]` only: where a layer has negative
//! values the library ablates a channel with min − 1e7 (growing with its position in the batch), not the paper's zero.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use whitebox_core::attribution::{resize, Interpolation, Method, Score, Settings};
use whitebox_core::params::Checkpoint;
use whitebox_e2e::repo_root;

const METHODS: [&str; 7] = ["gcpp", "xgc", "hirescam", "layercam", "scorecam", "eigencam", "ablationcam"];
const WELL_CONDITIONED_AT_8: [&str; 4] = ["hirescam", "layercam", "scorecam", "eigencam"];

fn check(dataset: &str) {
    let golden_path = repo_root().join(format!("tests/reference/goldens/cam-family-{dataset}.safetensors"));
    let golden: HashMap<String, Tensor> = candle_core::safetensors::load(&golden_path, &Device::Cpu).unwrap();
    let x = &golden["inputs"];
    let (_, c, h, w) = x.dims4().unwrap();
    let mut failures = vec![];
    for arch in ["simple-cnn", "cam", "cbam"] {
        let ck_path = repo_root().join(format!("weights/{dataset}/{arch}.safetensors"));
        let ck = Checkpoint::from_bytes("ck", &std::fs::read(ck_path).unwrap(), &Device::Cpu).unwrap();
        let model = ck.model().unwrap();
        let targets: Vec<u32> = golden[&format!("{arch}/targets")].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        for (layer, id) in METHODS.iter().map(|&m| (10, m)).chain(WELL_CONDITIONED_AT_8.iter().map(|&m| (8, m))) {
            let settings = Settings::default().with("layer", layer);
            let at = if layer == 10 { String::new() } else { format!("@{layer}") };
            let method = Method::parse(id).unwrap();
            let ours =
                method.build(&settings, model.as_ref()).unwrap().attribute(model.as_ref(), x, &targets, Score::Logit);
            let ours = ours.unwrap();
            let up = |key: String| {
                let g = golden[&key].unsqueeze(1).unwrap();
                resize(&g, h, w, Interpolation::Bilinear).unwrap().repeat((1, c, 1, 1)).unwrap()
            };
            let (f32_ref, f64_ref) = (up(format!("{arch}/{id}{at}")), up(format!("{arch}/{id}{at}_f64")));
            let rel = |a: &Tensor, b: &Tensor| whitebox_core::testing::rel_error(a, b, 1e-12).unwrap();
            let (err, err64, own) = (rel(&ours, &f32_ref), rel(&ours, &f64_ref), rel(&f32_ref, &f64_ref));
            eprintln!(
                "{dataset} {arch:<10} {id:<9} features[{layer}]: vs float32 {err:.2e}, vs float64 {err64:.2e} (the \
                 library's float32: {own:.2e})"
            );
            // NaN fails too.
            if !(err <= 1e-4 || err64 <= 1e-4) {
                failures.push(format!("{arch} {id} features[{layer}]: {err:.2e} ({err64:.2e} from float64)"));
            }
        }
    }
    assert!(failures.is_empty(), "{dataset}: {failures:?}");
}

#[test]
fn cam_family_equals_pytorch_grad_cam_on_mnist() {
    check("mnist");
}

#[test]
fn cam_family_equals_pytorch_grad_cam_on_cifar10() {
    check("cifar10");
}

/// The command line reaches the same numbers through its generated flags: `attribute --method layercam --layer 10`
/// on the golden's images equals the library's map; a value out of a parameter's range or a layer the model lacks is
/// a clear error; `whitebox methods --json` lists every registered method with its parameters.
#[test]
fn the_command_line_reads_the_generated_parameter_flags() {
    use whitebox_e2e::{shared_data, stderr, stdout, whitebox, TempDir};
    let golden_path = repo_root().join("tests/reference/goldens/cam-family-mnist.safetensors");
    let golden: HashMap<String, Tensor> = candle_core::safetensors::load(&golden_path, &Device::Cpu).unwrap();
    let dir = TempDir::new("cam-family-cli");
    let raw = dir.path().join("layercam.safetensors");
    let ck = repo_root().join("weights/mnist/cbam.safetensors");
    let data = shared_data();
    let (ck, data, raw_s) = (ck.to_str().unwrap(), data.to_str().unwrap(), raw.to_str().unwrap());
    let base = ["attribute", "--checkpoint", ck, "--indices", "0..6", "--data-dir", data, "--raw", raw_s];
    let out = whitebox(&[&base[..], &["--method", "layercam", "--layer", "10"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ours = candle_core::safetensors::load(&raw, &Device::Cpu).unwrap()["attributions"].clone();
    let reference = resize(&golden["cbam/layercam"].unsqueeze(1).unwrap(), 28, 28, Interpolation::Bilinear).unwrap();
    let err = whitebox_core::testing::rel_error(&ours, &reference, 1e-12).unwrap();
    assert!(err <= 1e-4, "attribute --method layercam --layer 10: {err:.2e}");

    let out = whitebox(&[&base[..], &["--method", "gcpp", "--layer", "99"]].concat());
    assert!(out.status.code() == Some(1) && stderr(&out).contains("layer 99 does not exist"), "{}", stderr(&out));
    let out = whitebox(&[&base[..], &["--method", "ig", "--ig-steps", "0"]].concat());
    assert!(
        out.status.code() == Some(2) && stderr(&out).contains("--ig-steps must be within 1..=1000"),
        "{}",
        stderr(&out)
    );
    let out = whitebox(&[&base[..], &["--method", "ig", "--riemann", "simpson"]].concat());
    assert!(out.status.code() == Some(2) && stderr(&out).contains("simpson"), "{}", stderr(&out));

    let out = whitebox(&["methods", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, Method::ids());
    let ig = listed.as_array().unwrap().iter().find(|m| m["id"] == "ig").unwrap();
    assert_eq!(ig["params"][0]["key"], "ig-steps");
    assert_eq!((ig["params"][0]["type"].as_str(), ig["params"][0]["max"].as_u64()), (Some("count"), Some(1000)));
}
