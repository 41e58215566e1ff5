//! The faithfulness metrics against their references on the shipped SimpleCNN checkpoints: ROAD's imputation
//! against pytorch-grad-cam, pixel flipping and faithfulness correlation against Quantus, infidelity and
//! max-sensitivity against Captum, MPRT, eMPRT and random logit against Quantus, insertion and deletion against RISE's code. Random draws (subsets,
//! perturbations) are the references' own, read from the golden files `tests/reference/metrics_goldens.py` makes.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use whitebox_core::attribution::{Attribution, ModifiedGradient, Score};
use whitebox_core::evaluation::Ranking;
use whitebox_core::metrics::faithfulness_correlation::{faithfulness_correlation, FaithfulnessCorrelation};
use whitebox_core::metrics::imputation::impute;
use whitebox_core::metrics::infidelity::{infidelity, Infidelity};
use whitebox_core::metrics::insertion_deletion::{causal_curves, Causal, CausalConfig};
use whitebox_core::metrics::mprt::{
    efficient_mprt, fresh_checkpoint, mprt, parameter_layers, random_logit, smoothed, Order,
};
use whitebox_core::metrics::pixel_flipping::{pixel_flipping, PixelFlipping};
use whitebox_core::metrics::road::{removed_pixels, road, RoadConfig};
use whitebox_core::metrics::sensitivity_max::sensitivity_max;
use whitebox_core::metrics::similarity::Similarity;
use whitebox_core::metrics::{Baseline, Batch, Scorer};
use whitebox_core::models::Classifier;
use whitebox_core::ops::ReluRule;
use whitebox_core::params::Checkpoint;
use whitebox_e2e::repo_root;

struct Golden {
    t: HashMap<String, Tensor>,
    model: Box<dyn Classifier>,
    shape: (usize, usize, usize, usize),
}

impl Golden {
    fn load(dataset: &str) -> Golden {
        let path = repo_root().join(format!("tests/reference/goldens/metrics-{dataset}.safetensors"));
        let t: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let ck = repo_root().join(format!("weights/{dataset}/simple-cnn.safetensors"));
        let model = Checkpoint::from_bytes("ck", &std::fs::read(ck).unwrap(), &Device::Cpu).unwrap().model().unwrap();
        let shape = t["inputs"].dims4().unwrap();
        Golden { t, model, shape }
    }

    fn f32s(&self, k: &str) -> Vec<f32> {
        self.t[k].to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn f64s(&self, k: &str) -> Vec<f64> {
        self.t[k].to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn targets(&self) -> Vec<u32> {
        self.t["targets"].to_dtype(DType::U32).unwrap().to_vec1().unwrap()
    }
}

/// max |a − b| / max |b|.
fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn check(name: &str, ours: &[f64], theirs: &[f64], tolerance: f64) {
    let e = rel_error(ours, theirs);
    eprintln!("{name}: relative error {e:.2e}");
    assert!(
        e <= tolerance,
        "{name}: relative error {e:.3e} > {tolerance:e}\nours   {:?}\ntheirs {:?}",
        &ours[..ours.len().min(8)],
        &theirs[..theirs.len().min(8)]
    );
}

fn road_against_grad_cam(dataset: &str) {
    let g = Golden::load(dataset);
    let (n, c, h, w) = g.shape;
    let (x, maps, targets) = (g.f32s("inputs"), g.f32s("maps"), g.targets());
    let batch = Batch::new(&x, g.shape, &targets, &maps).unwrap();
    let fractions = [0.2, 0.5, 0.8];
    let config = RoadConfig { fractions: fractions.to_vec(), noise: 0.0, ranking: Ranking::Signed, seed: 0 };
    let curves = road(&Scorer::new(g.model.as_ref()), &batch, &config).unwrap();
    for (order, most_first, ours) in [("morf", true, &curves.morf), ("lerf", false, &curves.lerf)] {
        let masks = g.f32s(&format!("road_{order}_masks"));
        let imputed = g.f32s(&format!("road_{order}_imputed"));
        let mut mine = Vec::new();
        for i in 0..n {
            let relevance = batch.relevance(i, Ranking::Signed);
            for (k, &f) in fractions.iter().enumerate() {
                let mask = &masks[(i * fractions.len() + k) * h * w..][..h * w];
                let removed: Vec<bool> = mask.iter().map(|&m| m < 0.5).collect();
                assert_eq!(removed, removed_pixels(&relevance, f, most_first), "{dataset} {order} image {i} at {f}");
                mine.extend(impute(batch.image(i), &removed, h, w, 0.0, 0).unwrap());
            }
        }
        assert_eq!(mine.len(), n * fractions.len() * c * h * w);
        check(&format!("{dataset} ROAD {order} imputation"), &wide(&mine), &wide(&imputed), 1e-4);
        let scores: Vec<f32> = ours.iter().flatten().copied().collect();
        check(
            &format!("{dataset} ROAD {order} scores"),
            &wide(&scores),
            &wide(&g.f32s(&format!("road_{order}_scores"))),
            1e-4,
        );
    }
    check(&format!("{dataset} original scores"), &wide(&curves.original), &wide(&g.f32s("original_scores")), 1e-5);
}

#[test]
fn road_imputation_and_scores_equal_pytorch_grad_cam() {
    road_against_grad_cam("mnist");
    road_against_grad_cam("cifar10");
}

#[test]
fn insertion_and_deletion_equal_rise() {
    for dataset in ["mnist", "cifar10"] {
        let g = Golden::load(dataset);
        let (x, maps, targets) = (g.f32s("inputs"), g.f32s("maps"), g.targets());
        let batch = Batch::new(&x, g.shape, &targets, &maps).unwrap();
        let config = CausalConfig { step: 28, baseline: Baseline::Mean, ranking: Ranking::Signed };
        let scorer = Scorer::new(g.model.as_ref());
        for (which, key) in [(Causal::Deletion, "causal_del"), (Causal::Insertion, "causal_ins")] {
            let ours = causal_curves(&scorer, &batch, which, &config).unwrap();
            let flat: Vec<f32> = ours.curves.iter().flatten().copied().collect();
            check(&format!("{dataset} {key}"), &wide(&flat), &wide(&g.f32s(key)), 1e-4);
            // Deletion starts at the image's own score; both end at the fully replaced image.
            assert!(ours.areas.iter().all(|a| (0.0..=1.0).contains(a)));
        }
    }
}

#[test]
fn pixel_flipping_and_faithfulness_correlation_equal_quantus() {
    let g = Golden::load("mnist");
    let (x, maps, targets) = (g.f32s("inputs"), g.f32s("maps"), g.targets());
    let batch = Batch::new(&x, g.shape, &targets, &maps).unwrap();
    let scorer = Scorer::new(g.model.as_ref());
    let flip =
        pixel_flipping(&scorer, &batch, &PixelFlipping { step: 28, baseline: Baseline::Min, ranking: Ranking::Signed })
            .unwrap();
    // Quantus's curve starts after the first step.
    let after: Vec<f32> = flip.curves.iter().flat_map(|c| c[1..].to_vec()).collect();
    check("pixel flipping", &wide(&after), &wide(&g.f32s("pixel_flipping")), 1e-4);

    let subsets: Vec<u32> = g.t["fc_subsets"].to_dtype(DType::U32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let (runs, size) = (g.t["fc_subsets"].dim(1).unwrap(), g.t["fc_subsets"].dim(2).unwrap());
    let config = FaithfulnessCorrelation { runs, subset: size, baseline: Baseline::Min, seed: 0 };
    let logits = Scorer::new(g.model.as_ref()).with_score(Score::Logit);
    let ours = faithfulness_correlation(&logits, &batch, &config, &subsets).unwrap();
    check("faithfulness correlation", &ours, &g.f64s("faithfulness_correlation"), 1e-4);
    // The seeded subsets have the shape the metric reads, and other subsets give other numbers.
    let seeded = config.subsets(batch.len(), 784).unwrap();
    assert_eq!(seeded.len(), subsets.len());
    assert_ne!(faithfulness_correlation(&logits, &batch, &config, &seeded).unwrap(), ours);
    assert!(faithfulness_correlation(&logits, &batch, &config, &subsets[1..]).is_err());
}

#[test]
fn infidelity_and_max_sensitivity_equal_captum() {
    let g = Golden::load("mnist");
    let (x, maps, targets) = (g.f32s("inputs"), g.f32s("maps"), g.targets());
    let batch = Batch::new(&x, g.shape, &targets, &maps).unwrap();
    let logits = Scorer::new(g.model.as_ref()).with_score(Score::Logit);
    let perturbations = g.f32s("infidelity_perturbations");
    let samples = perturbations.len() / x.len();
    for (normalize, key) in [(false, "infidelity_plain"), (true, "infidelity_normalized")] {
        let config = Infidelity { samples, noise: 0.2, normalize, seed: 0 };
        let ours = infidelity(&logits, &batch, &config, &perturbations).unwrap();
        check(key, &ours, &g.f64s(key), 1e-4);
    }

    let model = g.model.as_ref();
    let sensitivity_maps = g.f32s("sensitivity_maps");
    let batch = Batch::new(&x, g.shape, &targets, &sensitivity_maps).unwrap();
    let deltas = g.f32s("sensitivity_perturbations");
    let samples = deltas.len() / x.len();
    let vbp = ModifiedGradient::new(ReluRule::Standard);
    let (_, c, h, w) = g.shape;
    let mut explain = |x: &[f32], t: &[u32]| -> whitebox_core::Result<Vec<f32>> {
        let x = Tensor::from_slice(x, (t.len(), c, h, w), &Device::Cpu)?;
        Ok(vbp.attribute(model, &x, t, Score::Logit)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let ours = sensitivity_max(&batch, &mut explain, samples, &deltas).unwrap();
    check("max-sensitivity", &ours, &g.f64s("sensitivity_max"), 1e-4);
}

/// The re-initialisation the golden script gives Quantus's layer randomisation (`hashed_uniform` there): convolutions
/// and linear layers get hashed values in ±1/√fan_in, BatchNorm PyTorch's reset (1, 0, running 0 and 1).
fn hashed_fresh(original: &Checkpoint) -> Checkpoint {
    let layers = parameter_layers(original.spec).unwrap();
    let mut fresh = original.clone();
    for (key, layer) in layers.iter().enumerate() {
        let weight = &original.tensors[&format!("{layer}.weight")];
        let batch_norm = original.tensors.contains_key(&format!("{layer}.running_mean"));
        let fan_in: usize = weight.dims()[1..].iter().product();
        for (kind, name) in ["weight", "bias", "running_mean", "running_var"].iter().enumerate() {
            let full = format!("{layer}.{name}");
            let Some(t) = original.tensors.get(&full) else { continue };
            let n = t.elem_count();
            let values: Vec<f32> = if batch_norm {
                vec![if *name == "weight" || *name == "running_var" { 1.0 } else { 0.0 }; n]
            } else {
                let bound = 1.0f32 / (fan_in as f32).sqrt();
                (0..n as u64)
                    .map(|j| {
                        let h = ((j + 1) * 2654435761 + key as u64 * 97 + kind as u64 * 13) % 4294967296;
                        ((h % 2001) as i64 - 1000) as f32 / 1000.0 * bound
                    })
                    .collect()
            };
            fresh.tensors.insert(full, Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap());
        }
    }
    fresh
}

#[test]
fn mprt_emprt_and_random_logit_equal_quantus() {
    let g = Golden::load("mnist");
    let ck_path = repo_root().join("weights/mnist/simple-cnn.safetensors");
    let ck = Checkpoint::from_bytes("ck", &std::fs::read(ck_path).unwrap(), &Device::Cpu).unwrap();
    let (x, targets) = (g.f32s("inputs"), g.targets());
    let maps = g.f32s("randomisation_maps");
    let batch = Batch::new(&x, g.shape, &targets, &maps).unwrap();
    let (_, c, h, w) = g.shape;
    let vbp = ModifiedGradient::new(ReluRule::Standard);
    let mut explain = |m: &dyn Classifier, x: &[f32], t: &[u32]| -> whitebox_core::Result<Vec<f32>> {
        let x = Tensor::from_slice(x, (t.len(), c, h, w), &Device::Cpu)?;
        Ok(vbp.attribute(m, &x, t, Score::Logit)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let fresh = hashed_fresh(&ck);
    assert_eq!(parameter_layers(ck.spec).unwrap().len(), g.f32s("mprt_layer_count")[0] as usize);
    for (order, key) in [(Order::TopDown, "mprt_top_down"), (Order::Independent, "mprt_independent")] {
        let ours = mprt(&ck, &fresh, order, &batch, Similarity::Spearman, &mut explain).unwrap();
        let flat: Vec<f64> = ours.similarity.iter().flatten().copied().collect();
        check(key, &flat, &g.f64s(key), 1e-4);
    }
    check("eMPRT", &efficient_mprt(&ck, &fresh, &batch, &mut explain).unwrap(), &g.f64s("emprt"), 1e-4);
    let others: Vec<u32> = g.t["random_logit_classes"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
    let ours = random_logit(g.model.as_ref(), &batch, &others, Similarity::Ssim, &mut explain).unwrap();
    check("random logit", &ours, &g.f64s("random_logit"), 1e-4);
    // Our own re-initialisation destroys the maps as well: the fully randomised similarity is far from 1.
    let ours =
        mprt(&ck, &fresh_checkpoint(ck.spec, 1).unwrap(), Order::TopDown, &batch, Similarity::Spearman, &mut explain)
            .unwrap();
    assert!(ours.similarity.last().unwrap().iter().all(|s| s.abs() < 0.5), "{:?}", ours.similarity.last());
    // sMPRT: the denoised maps (the clean input and 3 noisy copies, σ = 0.1 × each image's range, the saved draws)
    // of the original model are the reference, each model from the bottom layer up is explained the same way.
    let noise = g.f32s("smprt_noise");
    let mut smooth = smoothed(&mut explain, 0.1, &noise, c * h * w);
    let original = ck.model().unwrap();
    let denoised = smooth(original.as_ref(), &x, &targets).unwrap();
    let smooth_batch = Batch::new(&x, g.shape, &targets, &denoised).unwrap();
    let ours = mprt(&ck, &fresh, Order::BottomUp, &smooth_batch, Similarity::Spearman, &mut smooth).unwrap();
    let flat: Vec<f64> = ours.similarity.iter().flatten().copied().collect();
    check("sMPRT", &flat, &g.f64s("smprt_bottom_up"), 1e-4);
}
