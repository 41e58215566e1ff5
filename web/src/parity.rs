//! The fixed cases whose results must be the same natively and in the browser: every method, IG and every
//! ensemble, with every shipped MNIST model, on real test digits. The native test writes or checks the golden file
//! `web/tests/golden/native.safetensors`; the browser test (`web/tests/browser.rs`) recomputes the cases in WASM
//! and compares them with it.

use crate::{Engine, Request};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// The shipped MNIST weights, by architecture name.
pub const WEIGHTS: [(&str, &[u8]); 3] = [
    ("simple-cnn", include_bytes!("../../weights/mnist/simple-cnn.safetensors")),
    ("cam", include_bytes!("../../weights/mnist/cam.safetensors")),
    ("cbam", include_bytes!("../../weights/mnist/cbam.safetensors")),
];

/// The first MNIST test digits (normalised), as stored with the Captum goldens.
const DIGITS: &[u8] = include_bytes!("../../tests/reference/goldens/mnist-simple-cnn.safetensors");

/// (method, ensemble, samples, steps) of every case.
pub const CASES: [(&str, &str, usize, usize); 15] = [
    ("vbp", "", 0, 1),
    ("ib", "", 0, 1),
    ("deconvnet", "", 0, 1),
    ("gb", "", 0, 1),
    ("ig", "", 0, 20),
    ("gc", "", 0, 1),
    ("gbgc", "", 0, 1),
    ("cam", "", 0, 1),
    ("co", "", 0, 1),
    ("random", "", 0, 1),
    ("sobel", "", 0, 1),
    ("vbp", "sg", 8, 1),
    ("gb", "sg-sq", 8, 1),
    ("ib", "sg-var", 8, 1),
    ("ig", "sg", 3, 5),
];

/// Digit `i` of the stored test digits as pixels in [0, 1].
pub fn digit(i: usize) -> Vec<f32> {
    let tensors = candle_core::safetensors::load_buffer(DIGITS, &Device::Cpu).expect("stored digits");
    let x = tensors["inputs"].get(i).expect("digit index").flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let kind = whitebox_core::data::DatasetKind::Mnist;
    x.iter().map(|v| v * kind.std()[0] + kind.mean()[0]).collect()
}

/// Every small model on both data sets, for the GPU's parity test: the shipped MNIST weights, and seeded initial
/// weights for CIFAR-10 (every small architecture, shipped or not). With an input each (`C×H×W` pixels in [0, 1]) and a name.
pub fn gpu_models() -> Result<Vec<(String, Engine, Vec<f32>)>, String> {
    use whitebox_core::data::DatasetKind;
    use whitebox_core::models::{Arch, ModelSpec};
    let mut out = Vec::new();
    for (k, (arch, weights)) in WEIGHTS.iter().enumerate() {
        out.push((format!("mnist/{arch}"), Engine::new(weights)?, digit(k)));
    }
    for arch in Arch::SMALL {
        let spec = ModelSpec { arch, dataset: DatasetKind::Cifar10 };
        let (map, _) = whitebox_core::params::init_model(spec, 5, &Device::Cpu).map_err(|e| e.to_string())?;
        let model = whitebox_core::params::Checkpoint::from_varmap(spec, &map, Default::default())
            .and_then(|c| c.model())
            .map_err(|e| e.to_string())?;
        let pixels: Vec<f32> = (0..3 * 32 * 32).map(|i| (i * 7919 % 1013) as f32 / 1013.0).collect();
        out.push((format!("cifar10/{arch}"), Engine::from_model(std::sync::Arc::from(model)), pixels));
    }
    Ok(out)
}

/// Every case's result, named `model/case`: probabilities, and raw maps.
pub fn compute() -> Result<Vec<(String, Vec<f32>)>, String> {
    let mut out = Vec::new();
    for (k, (arch, weights)) in WEIGHTS.iter().enumerate() {
        let engine = Engine::new(weights)?;
        let pixels = digit(k);
        let probs = engine.probabilities(&pixels)?;
        let target = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0);
        out.push((format!("{arch}/probs"), probs));
        for (method, ensemble, samples, steps) in CASES {
            if !engine.applicable_methods().iter().any(|m| m == method) {
                continue;
            }
            let params = format!(r#"{{"ig-steps": {steps}}}"#);
            let request = Request::new(method, ensemble, samples, 0.15, &params, "logit")?;
            let mut task = engine.explain(&pixels, &request, target)?;
            while !task.step()? {}
            out.push((format!("{arch}/{}", request.label()), task.map()?));
        }
    }
    Ok(out)
}

/// The golden file's contents for `cases`.
pub fn to_bytes(cases: &[(String, Vec<f32>)]) -> Vec<u8> {
    let tensors: Vec<(String, Tensor)> =
        cases.iter().map(|(k, v)| (k.clone(), Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap())).collect();
    safetensors::serialize(tensors, None).expect("serialise goldens")
}

/// Compares `cases` with the golden bytes: every case present, each within `tolerance` relative error (max
/// |difference| / max |golden|). Returns the worst relative error and its case.
pub fn compare(cases: &[(String, Vec<f32>)], golden: &[u8], tolerance: f32) -> Result<(f32, String), String> {
    let want: HashMap<String, Tensor> =
        candle_core::safetensors::load_buffer(golden, &Device::Cpu).map_err(|e| e.to_string())?;
    if want.len() != cases.len() {
        return Err(format!("{} cases, the golden file has {}", cases.len(), want.len()));
    }
    let mut worst = (0.0f32, String::new());
    for (name, got) in cases {
        let w = want
            .get(name)
            .ok_or_else(|| format!("{name} is missing from the golden file"))?
            .to_vec1::<f32>()
            .map_err(|e| e.to_string())?;
        if w.len() != got.len() {
            return Err(format!("{name}: {} values, golden has {}", got.len(), w.len()));
        }
        let rel = whitebox_core::testing::max_rel_error(got, &w, 1e-30);
        if rel > tolerance || rel.is_nan() {
            return Err(format!("{name}: relative error {rel:e} > {tolerance:e}"));
        }
        if rel >= worst.0 {
            worst = (rel, name.clone());
        }
    }
    Ok(worst)
}
