//! In headless Chromium (wasm-bindgen-test): core compiled to WebAssembly gives the native results — every method,
//! IG and ensemble, on every shipped MNIST model — and the time of one VBP map.

#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::*;
use whitebox_web::{parity, Engine, Request};

wasm_bindgen_test_configure!(run_in_browser);

const GOLDEN: &[u8] = include_bytes!("golden/native.safetensors");

#[wasm_bindgen_test]
fn wasm_equals_native() {
    let cases = parity::compute().unwrap();
    let (worst, case) = parity::compare(&cases, GOLDEN, 1e-4).unwrap();
    console_log!("wasm vs native: {} cases, worst relative error {worst:e} ({case})", cases.len());
}

#[wasm_bindgen_test]
fn vbp_map_time() {
    let engine = Engine::new(parity::WEIGHTS[0].1).unwrap();
    let pixels = parity::digit(0);
    let now = || js_sys::Date::now();
    for (method, ensemble, samples) in [("vbp", "", 1), ("gb", "", 1), ("gc", "", 1), ("vbp", "sg", 50)] {
        let request = Request::new(method, ensemble, samples, 0.15, r#"{"ig-steps": 50}"#, "logit").unwrap();
        let run = || {
            let mut task = engine.explain(&pixels, &request, 7).unwrap();
            while !task.step().unwrap() {}
            task.map().unwrap()
        };
        run(); // warm-up
        let reps = if samples > 1 { 3 } else { 20 };
        let start = now();
        for _ in 0..reps {
            assert_eq!(run().len(), 784);
        }
        console_log!("WASM (1 thread) {}: {:.2} ms per map", request.label(), (now() - start) / reps as f64);
    }
}

/// WebGPU (SwiftShader in headless Chromium) equals the WASM CPU engine: every method, IG and ensemble of the
/// parity cases, on SimpleCNN, CAM and CBAM for MNIST and CIFAR-10, within 1e-4 relative error. Then the time of
/// SG-50 and IG-50 per map on both backends, with the ratio.
#[wasm_bindgen_test]
async fn webgpu_equals_wasm_cpu() {
    let device = whitebox_web::request_gpu().await.expect("a WebGPU adapter (--enable-unsafe-webgpu)");
    console_log!("WebGPU adapter: {}", device.name());
    let mut worst = (0f32, String::new());
    let mut cases = 0;
    for (name, mut engine, pixels) in parity::gpu_models().unwrap() {
        let start = js_sys::Date::now();
        engine.use_gpu(&device).unwrap();
        for (method, ensemble, samples, steps) in parity::CASES {
            if method == "cam" && !engine.has_cam() {
                continue;
            }
            let params = format!(r#"{{"ig-steps": {steps}}}"#);
            let request = Request::new(method, ensemble, samples, 0.15, &params, "logit").unwrap();
            let mut task = engine.explain(&pixels, &request, 3).unwrap();
            while !task.step().unwrap() {}
            let want = task.map().unwrap();
            let got = engine.gpu_map(&pixels, &request, 3).unwrap().await.unwrap();
            let rel = whitebox_core::testing::max_rel_error(&got, &want, 1e-30);
            let case = format!("{name}/{}", request.label());
            assert!(rel < 1e-4, "{case}: relative error {rel:e}");
            if rel >= worst.0 {
                worst = (rel, case);
            }
            cases += 1;
        }
        console_log!("{name}: {:.1} s", (js_sys::Date::now() - start) / 1000.0);
    }
    console_log!("WebGPU vs WASM CPU: {cases} cases, worst relative error {:e} ({})", worst.0, worst.1);

    let mut engine = Engine::new(parity::WEIGHTS[0].1).unwrap();
    engine.use_gpu(&device).unwrap();
    let pixels = parity::digit(0);
    let now = || js_sys::Date::now();
    console_log!("| method | WASM CPU ms/map | WebGPU ms/map | WASM / WebGPU |");
    for (method, ensemble, samples) in [("vbp", "", 1), ("gb", "", 1), ("gc", "", 1), ("vbp", "sg", 50), ("ig", "", 1)]
    {
        let request = Request::new(method, ensemble, samples, 0.15, r#"{"ig-steps": 50}"#, "logit").unwrap();
        let reps = 3;
        let cpu = || {
            let mut task = engine.explain(&pixels, &request, 7).unwrap();
            while !task.step().unwrap() {}
            task.map().unwrap()
        };
        cpu();
        let start = now();
        for _ in 0..reps {
            cpu();
        }
        let cpu_ms = (now() - start) / reps as f64;
        engine.gpu_map(&pixels, &request, 7).unwrap().await.unwrap();
        let start = now();
        for _ in 0..reps {
            engine.gpu_map(&pixels, &request, 7).unwrap().await.unwrap();
        }
        let gpu_ms = (now() - start) / reps as f64;
        let label = if method == "ig" { "IG-50".to_string() } else { request.label() };
        console_log!("| {label} | {cpu_ms:.1} | {gpu_ms:.1} | {:.2}× |", cpu_ms / gpu_ms);
    }
}

/// The GPU trainer on WebGPU (SwiftShader in headless Chromium) equals the WebAssembly CPU trainer: three SGD steps
/// of SimpleCNN, CAM and CBAM on MNIST and CIFAR-10, and of WARN on MNIST at a small batch (against float64, as
/// natively) — the check the native tests run on lavapipe for every model (`whitebox_core::train::parity`).
#[wasm_bindgen_test]
async fn webgpu_training_equals_wasm_cpu_trainer() {
    use whitebox_core::data::DatasetKind;
    use whitebox_core::gpu::Gpu;
    use whitebox_core::models::{Arch, ModelSpec};
    use whitebox_core::train::parity;
    let gpu = std::sync::Arc::new(Gpu::new().await.expect("a WebGPU adapter (--enable-unsafe-webgpu)"));
    let mut cases: Vec<(Arch, DatasetKind, usize)> = Vec::new();
    for dataset in DatasetKind::ALL {
        cases.extend(Arch::SMALL.iter().map(|&arch| (arch, dataset, 8)));
    }
    cases.push((Arch::Warn, DatasetKind::Mnist, 4));
    for (arch, dataset, batch) in cases {
        let start = js_sys::Date::now();
        let p = parity::training_matches_cpu(gpu.clone(), ModelSpec { arch, dataset }, batch).await.unwrap();
        console_log!("WebGPU training {arch} {dataset}: {p} ({:.1} s)", (js_sys::Date::now() - start) / 1000.0);
    }
}
