//! DeepLIFT (rescale rule) against Captum 0.9's `DeepLift` on the shipped checkpoints (SimpleCNN, CAM, CBAM; MNIST
//! and CIFAR-10), zero reference, the models' predicted classes. The goldens are made by
//! `tests/reference/deep_lift_goldens.py`, in float32 and float64 (the script's header says how CBAM's reference
//! model is adapted so that Captum applies its rule at every nonlinearity).
//!
//! Each map is held to 1e-4 relative error (largest difference over the largest |value|), or, where Captum's own
//! float32 map is further than that from its float64 one (secants of nearly equal values), to twice that distance,
//! from both Captum's float32 and float64 maps.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use whitebox_core::attribution::{Method, Score, Settings};
use whitebox_core::params::Checkpoint;
use whitebox_core::testing::rel_error;
use whitebox_e2e::repo_root;

fn check(dataset: &str) -> Vec<String> {
    let golden_path = repo_root().join(format!("tests/reference/goldens/deep-lift-{dataset}.safetensors"));
    let golden: HashMap<String, Tensor> = candle_core::safetensors::load(&golden_path, &Device::Cpu).unwrap();
    let x = &golden["inputs"];
    let mut failures = vec![];
    for arch in ["simple-cnn", "cam", "cbam"] {
        let ck_path = repo_root().join(format!("weights/{dataset}/{arch}.safetensors"));
        let model =
            Checkpoint::from_bytes("ck", &std::fs::read(ck_path).unwrap(), &Device::Cpu).unwrap().model().unwrap();
        let m = model.as_ref();
        let targets: Vec<u32> = golden[&format!("{arch}/targets")].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        let method = Method::parse("deeplift").unwrap().build(&Settings::default(), m).unwrap();
        let ours = method.attribute(m, x, &targets, Score::Logit).unwrap();
        let (f32_, f64_) = (&golden[arch], &golden[&format!("{arch}_f64")]);
        let err = rel_error(&ours, f32_, 1e-12).unwrap();
        let err64 = rel_error(&ours, f64_, 1e-12).unwrap();
        let captum = rel_error(f32_, f64_, 1e-12).unwrap();
        let allowed = 1e-4f32.max(2.0 * captum);
        eprintln!(
            "{dataset}/{arch:<10} deeplift: from Captum {err:.2e}, from float64 {err64:.2e} \
             (Captum's float32 from float64 {captum:.2e}; allowed {allowed:.1e})"
        );
        // NaN fails too.
        if !(err <= allowed && err64 <= allowed) {
            failures.push(format!("{dataset}/{arch}: {err:.2e} / {err64:.2e} (allowed {allowed:.1e})"));
        }
    }
    failures
}

#[test]
fn deep_lift_equals_captum() {
    let failures: Vec<String> = ["mnist", "cifar10"].iter().flat_map(|d| check(d)).collect();
    assert!(failures.is_empty(), "{failures:?}");
}
