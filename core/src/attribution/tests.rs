//! Identities every implementation must satisfy (Captum's own test strategy): IG completeness, SmoothGrad with no
//! noise, guided = vanilla where no ReLU lies on the path, Grad-CAM = CAM on a CAM model, finite differences, and
//! batched = unbatched.

use super::*;
use crate::data::DatasetKind;
use crate::models::{Arch, ModelSpec};
use crate::params::init_model;
use crate::testing::{random, rel_error};
use candle_core::Device;

fn model(arch: Arch) -> Box<dyn Classifier> {
    init_model(ModelSpec { arch, dataset: DatasetKind::Mnist }, 11, &Device::Cpu).unwrap().1
}

/// `core/` of this checkout: `cargo test` says at run time; the compiled-in path (of whichever checkout compiled a
/// shared build directory) is the fallback.
fn core_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

/// A shipped, trained checkpoint: identities that hold only approximately (completeness, finite differences) are
/// meaningful on a model whose scores vary like a real one's.
fn trained(arch: Arch) -> Box<dyn Classifier> {
    let path = core_dir().join(format!("../weights/mnist/{arch}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    crate::params::Checkpoint::from_bytes("shipped", &bytes, &Device::Cpu).unwrap().model().unwrap()
}

/// The first MNIST test images, normalised, as stored with the Captum goldens (core's tests do not read the data
/// sets themselves).
fn test_digits() -> Tensor {
    let path = core_dir().join("../tests/reference/goldens/mnist-simple-cnn.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap().remove("inputs").unwrap()
}

/// A smooth blob with noise, for tests that need no real digit.
fn digit_like(n: usize, seed: u64) -> Tensor {
    let noise = random(&[n, 1, 28, 28], seed).unwrap();
    let blob: Vec<f32> = (0..28 * 28)
        .map(|p| {
            let (y, x) = ((p / 28) as f32 - 14.0, (p % 28) as f32 - 14.0);
            let r = (x * x / 16.0 + y * y / 64.0).sqrt();
            if (r - 1.0).abs() < 0.35 {
                2.8
            } else {
                -0.42
            }
        })
        .collect();
    let blob = Tensor::from_vec(blob, (1, 1, 28, 28), &Device::Cpu).unwrap();
    (noise * 0.3).unwrap().broadcast_add(&blob).unwrap()
}

fn input(n: usize, seed: u64) -> Tensor {
    (random(&[n, 1, 28, 28], seed).unwrap() * 2.0).unwrap()
}

fn logits_of(m: &dyn Classifier, x: &Tensor, t: &[u32]) -> Vec<f32> {
    let l = m.forward(x, &Pass::EVAL).unwrap().to_vec2::<f32>().unwrap();
    t.iter().enumerate().map(|(i, &c)| l[i][c as usize]).collect()
}

#[test]
fn integrated_gradients_completeness() -> Result<()> {
    let x = test_digits();
    for arch in Arch::SMALL {
        let m = trained(arch);
        let t = predict(m.as_ref(), &x)?;
        let ig = IntegratedGradients { steps: 300, riemann: Riemann::Trapezoid, batch: 256 };
        let attr = ig.attribute(m.as_ref(), &x, &t, Score::Logit)?;
        let sums = attr.flatten_from(1)?.sum(1)?.to_vec1::<f32>()?;
        let (fx, f0) = (logits_of(m.as_ref(), &x, &t), logits_of(m.as_ref(), &x.zeros_like()?, &t));
        for i in 0..t.len() {
            let delta = fx[i] - f0[i];
            assert!(
                (sums[i] - delta).abs() <= 0.01 * delta.abs().max(1e-3),
                "{arch} image {i}: Σ = {}, Δf = {delta}",
                sums[i]
            );
        }
    }
    Ok(())
}

#[test]
fn smoothgrad_without_noise_is_its_base_method() -> Result<()> {
    let m = model(Arch::Cbam);
    let x = input(2, 2);
    let t = [3u32, 8];
    let base = ModifiedGradient::new(ReluRule::Guided);
    let plain = base.attribute(m.as_ref(), &x, &t, Score::Prob)?;
    for kind in [Ensemble::SmoothGrad, Ensemble::SmoothGradSquared, Ensemble::VarGrad] {
        let nt = NoiseTunnel { base: &base, kind, samples: 4, noise_level: 0.0, batch: 3, seed: 1, noise: None };
        let got = nt.attribute(m.as_ref(), &x, &t, Score::Prob)?;
        let want = match kind {
            Ensemble::SmoothGrad => plain.clone(),
            Ensemble::SmoothGradSquared => plain.sqr()?,
            Ensemble::VarGrad => plain.zeros_like()?,
        };
        assert!(rel_error(&got, &want, 1.0)? < 1e-5, "{kind:?}");
    }
    Ok(())
}

/// After the last feature map the CAM model has only pooling and a linear layer: no ReLU, so the guided and
/// deconv rules give the vanilla gradient there.
#[test]
fn guided_equals_vanilla_on_a_relu_free_path() -> Result<()> {
    let m = model(Arch::Cam);
    let x = input(2, 3);
    let t = [0u32, 9];
    let layer = m.last_feature_index();
    let grad = |rule| layer_gradient(m.as_ref(), &x, &t, Score::Logit, rule, layer).unwrap().1;
    let vanilla = grad(ReluRule::Standard);
    assert!(vanilla.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    assert!(rel_error(&grad(ReluRule::Guided), &vanilla, 1.0)? < 1e-6);
    assert!(rel_error(&grad(ReluRule::Deconv), &vanilla, 1.0)? < 1e-6);
    // …while at the input they differ (ReLUs lie on that path).
    let at_input = |rule| input_gradient(m.as_ref(), &x, &t, Score::Logit, rule).unwrap();
    assert!(rel_error(&at_input(ReluRule::Guided), &at_input(ReluRule::Standard), 1.0)? > 1e-3);
    Ok(())
}

/// On the CAM model, ∂S_c/∂A^k = w_{c,k}/(h·w) at every position, so Grad-CAM at the last feature map is
/// ReLU(M_c)/(h·w) where M_c = Σ_k w_{c,k} A^k is the class activation map.
#[test]
fn grad_cam_equals_cam_on_the_cam_model() -> Result<()> {
    let m = model(Arch::Cam);
    let x = input(2, 4);
    let t = [2u32, 5];
    let last = m.last_feature_index();
    let (act, grad) = layer_gradient(m.as_ref(), &x, &t, Score::Logit, ReluRule::Standard, last)?;
    let w = m.cam_head().unwrap().weight().to_vec2::<f32>()?;
    let (n, k, h, wd) = act.dims4()?;
    let grad_v = grad.flatten_all()?.to_vec1::<f32>()?;
    for i in 0..n {
        for c in 0..k {
            for p in 0..h * wd {
                let want = w[t[i] as usize][c] / (h * wd) as f32;
                assert!((grad_v[(i * k + c) * h * wd + p] - want).abs() < 1e-6);
            }
        }
    }
    // M_c by hand from the activation and the head, then both maps from the library.
    let idx = Tensor::from_slice(&t, 2, &Device::Cpu)?;
    let wt = m.cam_head().unwrap().weight().index_select(&idx, 0)?.reshape((n, k, 1, 1))?;
    let coarse = act.broadcast_mul(&wt)?.sum_keepdim(1)?;
    let cam = Cam.attribute(m.as_ref(), &x, &t, Score::Logit)?;
    assert!(rel_error(&cam, &resize(&coarse, 28, 28, Interpolation::Bilinear)?, 1.0)? < 1e-5);
    let gc = GradCam { layer: last }.attribute(m.as_ref(), &x, &t, Score::Logit)?;
    let want = (resize(&coarse.relu()?, 28, 28, Interpolation::Bilinear)? / (h * wd) as f64)?;
    assert!(rel_error(&gc, &want, 1.0)? < 1e-5);
    assert!(
        coarse.min_all()?.to_scalar::<f32>()? < 0.0 && coarse.max_all()?.to_scalar::<f32>()? > 0.0,
        "both signs occur"
    );
    Ok(())
}

#[test]
fn vanilla_gradient_matches_finite_differences() -> Result<()> {
    let m = trained(Arch::SimpleCnn);
    let x = digit_like(1, 5);
    let t = [0u32];
    let grad = ModifiedGradient::new(ReluRule::Standard).attribute(m.as_ref(), &x, &t, Score::Logit)?;
    let g = grad.flatten_all()?.to_vec1::<f32>()?;
    let base = x.flatten_all()?.to_vec1::<f32>()?;
    let scale = g.iter().fold(0f32, |a, v| a.max(v.abs()));
    // Small enough to cross few ReLU and max-pool kinks, large enough for f32 logits.
    let h = 3e-3f32;
    for &j in &[100usize, 300, 406, 462, 601] {
        let f = |d: f32| {
            let mut v = base.clone();
            v[j] += d;
            logits_of(m.as_ref(), &Tensor::from_vec(v, (1, 1, 28, 28), &Device::Cpu).unwrap(), &t)[0]
        };
        let fd = (f(h) - f(-h)) / (2.0 * h);
        assert!((fd - g[j]).abs() < 0.02 * scale, "pixel {j}: finite difference {fd}, gradient {}", g[j]);
    }
    Ok(())
}

#[test]
fn batched_equals_unbatched() -> Result<()> {
    let m = model(Arch::SimpleCnn);
    let x = input(5, 6);
    let t = [1u32, 2, 3, 4, 5];
    let s = Settings { batch: 1000, ..Settings::default() }.with("steps", 8);
    for method_kind in Method::all().iter().copied().filter(|k| k.applies_to(m.as_ref())) {
        let whole = method(method_kind, &s, m.as_ref())?.attribute(m.as_ref(), &x, &t, Score::Logit)?;
        let small = method(method_kind, &Settings { batch: 3, ..s.clone() }, m.as_ref())?;
        let chunked_run = small.attribute(m.as_ref(), &x, &t, Score::Logit)?;
        assert!(rel_error(&whole, &chunked_run, 1.0)? < 1e-5, "{method_kind:?}");
        if method_kind == Method::RANDOM || method_kind.id() == "gradshap" {
            continue; // one draw per call, not per image
        }
        for i in 0..5 {
            let one = method(method_kind, &s, m.as_ref())?.attribute(
                m.as_ref(),
                &x.narrow(0, i, 1)?,
                &t[i..=i],
                Score::Logit,
            )?;
            assert!(rel_error(&one, &whole.narrow(0, i, 1)?, 1.0)? < 1e-4, "{method_kind:?} image {i}");
        }
    }
    let base = ModifiedGradient::new(ReluRule::Standard);
    let nt = |batch| NoiseTunnel {
        base: &base,
        kind: Ensemble::VarGrad,
        samples: 6,
        noise_level: 0.2,
        batch,
        seed: 3,
        noise: None,
    };
    assert!(
        rel_error(
            &nt(4).attribute(m.as_ref(), &x, &t, Score::Logit)?,
            &nt(100).attribute(m.as_ref(), &x, &t, Score::Logit)?,
            1.0
        )? < 1e-5
    );
    Ok(())
}

#[test]
fn bad_requests_are_errors() {
    let m = model(Arch::SimpleCnn);
    let x = input(2, 7);
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();
    assert!(err(ModifiedGradient::new(ReluRule::Standard).attribute(m.as_ref(), &x, &[1], Score::Logit))
        .contains("1 targets for 2 images"));
    assert!(err(ModifiedGradient::new(ReluRule::Standard).attribute(m.as_ref(), &x, &[1, 10], Score::Logit))
        .contains("outside 0..10"));
    assert!(
        err(GradCam { layer: 12 }.attribute(m.as_ref(), &x, &[1, 2], Score::Logit)).contains("layer 12 does not exist")
    );
    assert!(err(Cam.attribute(m.as_ref(), &x, &[1, 2], Score::Logit)).contains("CAM head"));
    // The path methods read every input value: NaN and ∞ are refused, not integrated.
    let bad = x
        .broadcast_mul(&Tensor::new(&[f32::NAN, f32::INFINITY], x.device()).unwrap().reshape((2, 1, 1, 1)).unwrap())
        .unwrap();
    for id in ["guidedig", "blurig"] {
        let method = crate::attribution::Method::parse(id).unwrap();
        let built = method.build(&crate::attribution::Settings::default(), m.as_ref()).unwrap();
        assert!(err(built.attribute(m.as_ref(), &bad, &[1, 2], Score::Logit)).contains("finite"), "{id}");
    }
}

/// The map of `method`'s design for `image` (`1×h×w`) with the score `f` instead of a model.
fn perturbed_map(
    method: &dyn perturbation::Perturbation,
    image: &[f32],
    h: usize,
    w: usize,
    f: &dyn Fn(&[f32]) -> f32,
) -> Vec<f32> {
    let d = method.design(image, (1, h, w)).unwrap();
    let mut copy = vec![0.0; h * w];
    let scores: Vec<f32> = (0..d.count())
        .map(|k| {
            d.write(k, &mut copy);
            f(&copy)
        })
        .collect();
    d.finish(f(image), &scores).unwrap()
}

fn settings_with(pairs: &[(&str, &str)]) -> Settings {
    let mut s = Settings::default();
    for (k, v) in pairs {
        s.params.set(k, v).unwrap();
    }
    s
}

/// On a linear score w·x, occlusion with a 1×1 window and a zero baseline is gradient × input, w ⊙ x; so is
/// feature ablation over single pixels; KernelSHAP and unpenalised LIME recover each feature's exact contribution
/// Σ_{p ∈ f} w_p (x_p − b) (a linear surrogate fits a linear score exactly, whatever the samples).
#[test]
fn perturbation_methods_on_a_linear_score_are_exact() {
    use methods::{feature_ablation::FeatureAblation, kernel_shap::KernelShap, lime::Lime, occlusion::Occlusion};
    let (h, w) = (9, 7);
    let x = random(&[h * w], 5).unwrap().to_vec1::<f32>().unwrap();
    let wt = random(&[h * w], 6).unwrap().to_vec1::<f32>().unwrap();
    let f = |v: &[f32]| v.iter().zip(&wt).map(|(a, b)| a * b).sum::<f32>();
    let gxi: Vec<f32> = x.iter().zip(&wt).map(|(a, b)| a * b).collect();
    let occ = Occlusion { window: 1, stride: 1, baseline: 0.0, batch: 8, side: 9 };
    let close = |a: &[f32], b: &[f32], tol: f32| a.iter().zip(b).all(|(p, q)| (p - q).abs() <= tol * (1.0 + q.abs()));
    assert!(close(&perturbed_map(&occ, &x, h, w, &f), &gxi, 1e-5));
    let ablation =
        FeatureAblation { settings: settings_with(&[("features", "pixels")]), baseline: 0.0, features: None, side: 9 };
    assert!(close(&perturbed_map(&ablation, &x, h, w, &f), &gxi, 1e-5));
    // Patches of 3 with a baseline of 0.5.
    let b = 0.5f32;
    let feats = perturbation::Features::patches(h, w, 3).unwrap();
    let mut contribution = vec![0.0f32; feats.count];
    for p in 0..h * w {
        contribution[feats.labels[p] as usize] += wt[p] * (x[p] - b);
    }
    let want: Vec<f32> = feats.labels.iter().map(|&l| contribution[l as usize]).collect();
    let s = settings_with(&[("patch", "3"), ("baseline", "0.5"), ("perturbations", "60"), ("ridge", "0")]);
    let shap = KernelShap { settings: s.clone(), given: None };
    assert!(close(&perturbed_map(&shap, &x, h, w, &f), &want, 1e-4));
    let lime = Lime { settings: s, given: None };
    assert!(close(&perturbed_map(&lime, &x, h, w, &f), &want, 1e-4));
}

/// Occlusion's windows: a pixel's value is the mean drop over the windows that cover it (hand-derived on a
/// strip of two rows, the second zero), and pixels no window covers get 0.
#[test]
fn occlusion_averages_the_windows_that_cover_a_pixel() {
    use methods::occlusion::Occlusion;
    let x = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    // Score: the sum of squares; windows of 2 with stride 2 cover columns (0,1), (2,3), (4,5); stride 3: (0,1),
    // (3,4); with stride 1, column 1 is in (0,1) (drop 5) and (1,2) (drop 13).
    let f = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
    let run = |window, stride| {
        let occ = Occlusion { window, stride, baseline: 0.0, batch: 4, side: 6 };
        let m = perturbed_map(&occ, &x, 2, 6, &f);
        assert_eq!(m[..6], m[6..], "a window covers both rows");
        m[..6].to_vec()
    };
    assert_eq!(run(2, 2), vec![5.0, 5.0, 25.0, 25.0, 61.0, 61.0]);
    assert_eq!(run(2, 3), vec![5.0, 5.0, 0.0, 41.0, 41.0, 0.0]);
    assert_eq!(run(2, 1)[1], 9.0);
}

/// RISE's masks: a grid of one cell up-samples to a constant; PyTorch's bilinear weights on a two-cell row
/// (hand-derived: out = 4, in = 2, sources max(0, (d + 0.5)/2 − 0.5)); the masks' mean is the keep probability;
/// and a constant score gives a map of about that score (Σ S Mᵢ / (N p) with E[M] = p).
#[test]
fn rise_masks_and_map() {
    use methods::rise::{mask, Rise};
    assert_eq!(mask(&[1.0], (1, 1), 3, (1, 2), (2, 2)), vec![1.0; 4]);
    // grid [0, 1] (1×2), cell 2 → up-sampled to 4×6: columns' sources max(0, (x + 0.5)·2/6 − 0.5).
    let m = mask(&[0.0, 1.0], (1, 2), 2, (0, 0), (1, 6));
    let want: Vec<f32> = (0..6).map(|x| ((x as f32 + 0.5) / 3.0 - 0.5).clamp(0.0, 1.0)).collect();
    for (a, b) in m.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{m:?} vs {want:?}");
    }
    let rise = Rise {
        masks: 4000,
        cell: 4,
        keep: 0.3,
        baseline: 0.0,
        seed: 2,
        batch: 64,
        given: None,
        drawn: Default::default(),
    };
    let masks = rise.draw(28, 28);
    let mean = masks.iter().map(|&v| v as f64).sum::<f64>() / masks.len() as f64;
    assert!((mean - 0.3).abs() < 0.01, "{mean}");
    assert!(masks.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(masks, rise.draw(28, 28), "the same seed draws the same masks");
    let map = perturbed_map(&rise, &vec![1.0; 784], 28, 28, &|_| 2.0);
    assert!(map.iter().all(|v| (v - 2.0).abs() < 0.2), "{:?}", &map[..8]);
}

/// On a real model, KernelSHAP's coefficients sum to S(x) − S(baseline) (the endpoints' weight of 10⁶ makes it
/// hold to about 1e-4 of the scores' spread), and every perturbation method runs through the registry with
/// reproducible draws and refuses non-finite images.
#[test]
fn kernel_shap_is_efficient_on_a_model() {
    let m = trained(Arch::SimpleCnn);
    let x = test_digits().narrow(0, 0, 2).unwrap();
    let t = predict(m.as_ref(), &x).unwrap();
    let s = settings_with(&[("patch", "7"), ("perturbations", "300")]);
    let fx = logits_of(m.as_ref(), &x, &t);
    let fb = logits_of(m.as_ref(), &x.zeros_like().unwrap(), &t);
    let map = Method::parse("kernelshap")
        .unwrap()
        .build(&s, m.as_ref())
        .unwrap()
        .attribute(m.as_ref(), &x, &t, Score::Logit)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for i in 0..2 {
        // One pixel per 7×7 patch: the patch's coefficient.
        let sum: f32 = (0..16).map(|f| map[i][(f / 4) * 7 * 28 + (f % 4) * 7]).sum();
        let want = fx[i] - fb[i];
        assert!((sum - want).abs() < 1e-3 * (1.0 + want.abs()), "image {i}: {sum} vs {want}");
    }
    let bad = x.affine(0.0, f64::NAN).unwrap();
    for id in ["occlusion", "ablation", "rise", "kernelshap", "lime"] {
        let method = Method::parse(id).unwrap().build(&s, m.as_ref()).unwrap();
        let a = method.attribute(m.as_ref(), &x, &t, Score::Logit).unwrap();
        let b = method.attribute(m.as_ref(), &x, &t, Score::Logit).unwrap();
        assert_eq!(rel_error(&a, &b, 1.0).unwrap(), 0.0, "{id} is reproducible");
        let e = method.attribute(m.as_ref(), &bad, &t, Score::Logit).unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{id}: {e}");
    }
}
