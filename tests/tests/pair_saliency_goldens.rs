//! Guided IG and Blur IG against PAIR's `saliency` 0.2.1 (the authors' code) with PyTorch gradients, on the shipped
//! MNIST and CIFAR-10 checkpoints (SimpleCNN, CAM, CBAM), the libraries' default settings. The goldens (inputs,
//! targets, the maps in float32 and float64, and SciPy's blur of one image) are made by
//! `tests/reference/pair_saliency_goldens.py`. Each method is built through the registry, as the command line and
//! the page build it; each image's map is compared at its own largest value. Guided IG's path algorithm is also
//! compared alone, with a gradient both sides compute exactly, and so is Blur IG's.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use whitebox_core::attribution::methods::blur_ig::{gaussian_blur, BlurIg};
use whitebox_core::attribution::methods::guided_ig::GuidedPath;
use whitebox_core::attribution::{Method, Score, Settings};
use whitebox_core::params::Checkpoint;
use whitebox_core::testing::{max_rel_error, mean_rel_error, values};
use whitebox_e2e::repo_root;

const BLURS: [f64; 3] = [0.5, 3.7, 50.0];

fn check(dataset: &str) {
    let golden_path = repo_root().join(format!("tests/reference/goldens/pair-saliency-{dataset}.safetensors"));
    let golden: HashMap<String, Tensor> = candle_core::safetensors::load(&golden_path, &Device::Cpu).unwrap();
    let x = &golden["inputs"];
    let (n, c, h, w) = x.dims4().unwrap();
    let per = c * h * w;

    // SciPy's blur, value for value (float32, each pass rounded).
    let first = values(&x.get(0).unwrap()).unwrap();
    for (k, &sigma) in BLURS.iter().enumerate() {
        let ours: Vec<f32> = gaussian_blur(&first, h, w, sigma).into_iter().map(|v| v as f32).collect();
        let err = max_rel_error(&ours, &values(&golden[&format!("blur/{k}")]).unwrap(), 1e-12);
        eprintln!("{dataset} blur σ = {sigma}: {err:.2e}");
        assert!(err <= 1e-6, "{dataset} blur σ = {sigma}: {err:.2e}");
    }

    // Each image's map against the library's float32 one (`err`), its float64 one (`err64`), and the library's own
    // float32 distance from float64, each at the image's largest value.
    let mut rows = vec![];
    for arch in ["simple-cnn", "cam", "cbam"] {
        let ck_path = repo_root().join(format!("weights/{dataset}/{arch}.safetensors"));
        let model =
            Checkpoint::from_bytes("ck", &std::fs::read(ck_path).unwrap(), &Device::Cpu).unwrap().model().unwrap();
        let targets: Vec<u32> = golden[&format!("{arch}/targets")].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        for id in ["guidedig", "blurig"] {
            let method = Method::parse(id).unwrap();
            let ours = method
                .build(&Settings::default(), model.as_ref())
                .unwrap()
                .attribute(model.as_ref(), x, &targets, Score::Logit)
                .unwrap();
            let ours = values(&ours).unwrap();
            let f32_ref = values(&golden[&format!("{arch}/{id}")]).unwrap();
            let f64_ref = values(&golden[&format!("{arch}/{id}_f64")]).unwrap();
            for i in 0..n {
                let part = |v: &[f32]| v[i * per..(i + 1) * per].to_vec();
                let (o, r, r64) = (part(&ours), part(&f32_ref), part(&f64_ref));
                let (err, err64, own) =
                    (max_rel_error(&o, &r, 1e-12), max_rel_error(&o, &r64, 1e-12), max_rel_error(&r, &r64, 1e-12));
                eprintln!(
                    "{dataset} {arch:<10} {id:<8} image {i}: vs float32 {err:.2e} (mean {:.2e}), vs float64 \
                     {err64:.2e} (the library's float32: {own:.2e})",
                    mean_rel_error(&o, &r, 1e-12)
                );
                rows.push((arch, id, i, err, err64, own));
            }
        }
    }
    // Both methods take the model's gradient along a path: Blur IG's blurred images grow flat, so max-pooling
    // windows meet near-ties, and Guided IG ranks gradients to choose its path, so a difference in a gradient's last
    // bit can send a step elsewhere. Either library's float32 maps move where that happens: the library's own lie up
    // to `spread` from its float64 ones (the largest such distance over the data set's images and models). Each map
    // must equal the library's float32 one within 1e-4 or lie within that spread of both its maps; and for Guided IG
    // at least a third of the maps must take the library's very path — the arithmetic is the library's. (The paths
    // alone, with gradients both sides compute exactly, are compared in the tests below.)
    let mut failures = vec![];
    for id in ["guidedig", "blurig"] {
        let of: Vec<_> = rows.iter().filter(|r| r.1 == id).collect();
        let spread = of.iter().map(|r| r.5).fold(0f32, f32::max);
        let same = of.iter().filter(|r| r.3 <= 1e-4).count();
        eprintln!("{dataset} {id}: {same} of {} maps within 1e-4 of the library's; spread {spread:.2e}", of.len());
        for &&(arch, id, i, err, err64, _) in &of {
            // NaN fails too.
            if !(err <= 1e-4 || (err <= spread && err64 <= spread)) {
                failures
                    .push(format!("{arch} {id} image {i}: {err:.2e} ({err64:.2e} from float64; spread {spread:.2e})"));
            }
        }
        if id == "guidedig" && 3 * same < of.len() {
            failures.push(format!("only {same} of {} Guided IG maps on the library's path", of.len()));
        }
    }
    assert!(failures.is_empty(), "{dataset}: {failures:?}");
}

/// Guided IG's path algorithm alone against the library's `guided_ig_impl`, with an analytic gradient both sides
/// compute bit for bit (see `analytic_paths` in the script): the same path, to float64 rounding.
#[test]
fn guided_ig_path_equals_pair_saliency() {
    let golden_path = repo_root().join("tests/reference/goldens/pair-saliency-mnist.safetensors");
    let golden: HashMap<String, Tensor> = candle_core::safetensors::load(&golden_path, &Device::Cpu).unwrap();
    let get = |k: &str| golden[k].to_vec1::<f64>().unwrap();
    let (x, a, b, c) = (get("path/x"), get("path/a"), get("path/b"), get("path/c"));
    let d = x.len();
    let input: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    for (k, (steps, fraction, max_dist)) in [(20, 0.25, 0.02), (30, 0.1, 0.1), (10, 0.5, 1.0)].into_iter().enumerate() {
        let mut path = GuidedPath::new(&input);
        for step in 0..steps {
            let v = path.point();
            let g: Vec<f64> = (0..d).map(|i| a[i] + b[i] * v[i] + c[i] * v[(i + 1) % d]).collect();
            path.step(step, steps, fraction, max_dist, &g);
        }
        let want = get(&format!("path/{k}"));
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = path.attribution().iter().zip(&want).map(|(p, q)| (p - q).abs()).fold(0f64, f64::max) / scale;
        eprintln!("path {k} (steps {steps}, fraction {fraction}, max distance {max_dist}): {err:.2e}");
        assert!(err <= 1e-12, "path {k}: {err:.2e}");
    }
}

#[test]
fn guided_ig_and_blur_ig_equal_pair_saliency_on_mnist() {
    check("mnist");
}

#[test]
fn guided_ig_and_blur_ig_equal_pair_saliency_on_cifar10() {
    check("cifar10");
}

/// Blur IG's path alone against the library's `BlurIG` in float64, with the gradient field a + b·x (see
/// `analytic_paths` in the script): the blur, the forward differences and the sums, to float32 rounding of the
/// blurred images and the field.
#[test]
fn blur_ig_path_equals_pair_saliency() {
    let golden_path = repo_root().join("tests/reference/goldens/pair-saliency-mnist.safetensors");
    let golden: HashMap<String, Tensor> = candle_core::safetensors::load(&golden_path, &Device::Cpu).unwrap();
    let flat = |k: &str| golden[k].flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (a, b, want) = (flat("blur-path/a"), flat("blur-path/b"), flat("blur-path"));
    let x = golden["inputs"].narrow(0, 0, 1).unwrap();
    let blur = BlurIg { steps: 100, max_sigma: 50.0, grad_step: 0.01, sqrt: false, batch: 7 };
    let ours = blur
        .integrate(&x, &[0], |rows, _| {
            let v = rows.flatten_all()?.to_vec1::<f32>()?;
            let g: Vec<f32> =
                v.iter().enumerate().map(|(i, &r)| (a[i % a.len()] + b[i % b.len()] * r as f64) as f32).collect();
            Ok(Tensor::from_vec(g, rows.shape(), rows.device())?)
        })
        .unwrap();
    let ours: Vec<f64> = values(&ours).unwrap().into_iter().map(f64::from).collect();
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = ours.iter().zip(&want).map(|(p, q)| (p - q).abs()).fold(0f64, f64::max) / scale;
    eprintln!("blur path: {err:.2e}");
    assert!(err <= 1e-6, "{err:.2e}");
}
