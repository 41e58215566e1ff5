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
        let request = Request::new(method, ensemble, samples, 0.15, 50, -1, "logit").unwrap();
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
