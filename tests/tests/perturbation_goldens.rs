//! The perturbation methods against Captum 0.9.0 (Occlusion, FeatureAblation, KernelShap, Lime) and a reference RISE
//! (the authors' algorithm on PyTorch), on the shipped MNIST and CIFAR-10 checkpoints (SimpleCNN, CBAM). The goldens
//! are made by `tests/reference/perturbation_goldens.py`, which records the samples Captum's samplers drew and the
//! RISE grids and shifts it drew, so that both sides score the same perturbations. Every method is built through the
//! registry (Occlusion, feature ablation) or given the recorded draws (KernelSHAP, LIME, RISE), and each map must be
//! within 1e-4 (relative to its largest value) of the reference's float32 map, or of the same computation in float64.
//! RISE's mask generator must reproduce the reference's masks from the same grids and shifts.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use whitebox_core::attribution::methods::{kernel_shap::KernelShap, lime::Lime, rise};
use whitebox_core::attribution::perturbation::Features;
use whitebox_core::attribution::{Attribution, Method, Score, Settings};
use whitebox_core::params::Checkpoint;
use whitebox_e2e::repo_root;

fn check(dataset: &str) {
    let path = repo_root().join(format!("tests/reference/goldens/perturbation-{dataset}.safetensors"));
    let golden: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let x = &golden["inputs"];
    let (n, _, h, w) = x.dims4().unwrap();
    let big = if dataset == "mnist" { 7 } else { 8 };
    let labels = |key: &str| -> Features {
        let l: Vec<u32> = golden[key].flatten_all().unwrap().to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        Features::from_labels(l, h * w).unwrap()
    };
    // RISE's masks from the reference's grids and shifts.
    let grids: Vec<f32> = golden["rise/grids"].flatten_all().unwrap().to_vec1().unwrap();
    let shifts: Vec<i64> = golden["rise/shifts"].flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = golden["rise/masks"].flatten_all().unwrap().to_vec1().unwrap();
    let (cells, s) = (4, h.div_ceil(4));
    let masks: Vec<f32> = (0..shifts.len() / 2)
        .flat_map(|i| {
            let grid = &grids[i * s * s..(i + 1) * s * s];
            rise::mask(grid, (s, s), cells, (shifts[2 * i] as usize, shifts[2 * i + 1] as usize), (h, w))
        })
        .collect();
    let worst = masks.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{dataset} RISE masks from the same grids and shifts: max |Δ| {worst:.1e}");
    assert!(worst <= 1e-6, "RISE masks differ from PyTorch's bilinear up-sampling by {worst}");
    let masks = Arc::new(masks);

    let mut failures = vec![];
    for arch in ["simple-cnn", "cbam"] {
        let ck_path = repo_root().join(format!("weights/{dataset}/{arch}.safetensors"));
        let ck = Checkpoint::from_bytes("ck", &std::fs::read(ck_path).unwrap(), &Device::Cpu).unwrap();
        let model = ck.model().unwrap();
        let targets: Vec<u32> = golden[&format!("{arch}/targets")].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        let base = Settings { batch: 64, ..Settings::default() }.with("baseline", 0.0);
        let mut compare = |id: &str, ours: Tensor| {
            let rel = |a: &Tensor, b: &Tensor| whitebox_core::testing::rel_error(a, b, 1e-12).unwrap();
            let theirs = &golden[&format!("{arch}/{id}")];
            let err = rel(&ours, theirs);
            // Occlusion and feature ablation fit nothing: their references are float32 only.
            let (err64, own) = match golden.get(&format!("{arch}/{id}_f64")) {
                Some(g64) => (rel(&ours, g64), rel(theirs, g64)),
                None => (f32::NAN, f32::NAN),
            };
            eprintln!(
                "{dataset} {arch:<10} {id:<10}: vs the reference {err:.2e}, vs float64 {err64:.2e} (the reference's \
                 float32 vs float64: {own:.2e})"
            );
            // NaN fails too.
            if !(err <= 1e-4 || err64 <= 1e-4) {
                failures.push(format!("{arch} {id}: {err:.2e} ({err64:.2e} from float64)"));
            }
        };
        let run = |m: &dyn Attribution, x: &Tensor, t: &[u32], score| m.attribute(model.as_ref(), x, t, score).unwrap();
        let occlusion = Method::parse("occlusion")
            .unwrap()
            .build(&base.clone().with("window", 4).with("stride", 2), model.as_ref());
        compare("occlusion", run(occlusion.unwrap().as_ref(), x, &targets, Score::Logit));
        let ablation = Method::parse("ablation").unwrap().build(&base.clone().with("patch", 4), model.as_ref());
        compare("ablation", run(ablation.unwrap().as_ref(), x, &targets, Score::Logit));
        let features = labels(&format!("features/patch{big}"));
        for kind in ["kernelshap", "lime"] {
            let mut maps = Vec::with_capacity(n);
            for i in 0..n {
                let samples: Vec<u8> =
                    golden[&format!("{arch}/{kind}/samples/{i}")].flatten_all().unwrap().to_vec1().unwrap();
                let given = Some((features.clone(), samples));
                let method: Box<dyn Attribution> = match kind {
                    "kernelshap" => Box::new(KernelShap { settings: base.clone(), given }),
                    _ => Box::new(Lime { settings: base.clone().with("ridge", 1.0).with("kernel-width", 1.0), given }),
                };
                maps.push(run(method.as_ref(), &x.narrow(0, i, 1).unwrap(), &targets[i..i + 1], Score::Logit));
            }
            compare(kind, Tensor::cat(&maps, 0).unwrap());
        }
        let rise = rise::Rise {
            masks: 0,
            cell: 4,
            keep: 0.5,
            baseline: 0.0,
            seed: 0,
            batch: 64,
            given: Some(masks.clone()),
            drawn: Default::default(),
        };
        compare("rise", run(&rise, x, &targets, Score::Prob));
    }
    assert!(failures.is_empty(), "{dataset}: {failures:?}");
}

#[test]
fn perturbation_methods_equal_captum_on_mnist() {
    check("mnist");
}

#[test]
fn perturbation_methods_equal_captum_on_cifar10() {
    check("cifar10");
}
