//! Sanity checks by randomisation (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018, "Sanity Checks for
//! Saliency Maps"): an explanation that survives the destruction of the model it explains does not explain the
//! model.
//!
//! - **MPRT** (model parameter randomisation test): re-initialise the layers one by one — cascading from the top
//!   (the paper's), cascading from the bottom, or each alone — explain again, and measure how alike the new map is to
//!   the original ([`Similarity`]). A faithful method's similarity falls.
//! - **sMPRT** (Hedström, Weber, Lapuschkin & Höhne 2024, "Sanity Checks Revisited: An Exploration to Repair the
//!   Model Parameter Randomisation Test"): MPRT on denoised explanations, each the mean of the map over noisy copies
//!   of the input (σ = a fraction of each image's range) and the clean input.
//! - **eMPRT** (same paper): the relative rise in the explanation's complexity — the entropy of a 100-bin histogram
//!   of its values — from the original model to the fully randomised one. A faithful method's maps turn to noise.
//! - **Random logit** (Sixt, Granz & Landgraf 2020, "When Explanations Lie"): the similarity between the map of the
//!   explained class and the map of another class drawn at random. A class-sensitive method's similarity is low.
//!
//! Layers are re-initialised as a fresh model of the same architecture is ([`fresh_checkpoint`]); the references'
//! own re-initialised weights can be supplied instead to compare with them.

use super::similarity::Similarity;
use super::Batch;
use crate::models::{Classifier, ModelSpec};
use crate::params::{init_model, tensor_shapes, Checkpoint};
use crate::Result;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The order in which MPRT randomises layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Order {
    /// Cascading from the output layer down (Adebayo et al.'s).
    TopDown,
    /// Cascading from the input layer up (Hedström et al.'s recommendation).
    BottomUp,
    /// One layer at a time, the others kept, from the input up (Quantus's order).
    Independent,
}

/// A model's explainer: maps for `x` (`k × C×H×W`) and targets, in the layout of the batch's maps.
pub type Explain<'e> = dyn FnMut(&dyn Classifier, &[f32], &[u32]) -> Result<Vec<f32>> + 'e;

/// The layers that hold parameters, from the input to the output (PyTorch's `state_dict` order): `features.0`,
/// `features.1`, …, `classifier.1`.
pub fn parameter_layers(spec: ModelSpec) -> Result<Vec<String>> {
    let mut layers: Vec<String> = Vec::new();
    for (name, _) in tensor_shapes(spec)? {
        let layer = name.rsplit_once('.').map_or(String::new(), |(l, _)| l.to_string());
        if !layers.contains(&layer) {
            layers.push(layer);
        }
    }
    Ok(layers)
}

/// A freshly initialised model of `spec` (the initialisation training starts from), seeded.
pub fn fresh_checkpoint(spec: ModelSpec, seed: u64) -> Result<Checkpoint> {
    let (map, _) = init_model(spec, seed, &Device::Cpu)?;
    Checkpoint::from_varmap(spec, &map, BTreeMap::new())
}

/// The layers randomised at MPRT step `step` (0-based) in `order`.
pub fn randomised_layers(layers: &[String], order: Order, step: usize) -> Vec<String> {
    match order {
        Order::TopDown => layers.iter().rev().take(step + 1).cloned().collect(),
        Order::BottomUp => layers.iter().take(step + 1).cloned().collect(),
        Order::Independent => layers.iter().skip(step).take(1).cloned().collect(),
    }
}

/// `original` with the tensors of `layers` taken from `fresh`.
pub fn with_layers_from(original: &Checkpoint, fresh: &Checkpoint, layers: &[String]) -> Result<Checkpoint> {
    let mut out = original.clone();
    for (name, t) in &fresh.tensors {
        if layers.iter().any(|l| name.rsplit_once('.').is_some_and(|(p, _)| p == l)) {
            out.tensors.insert(name.clone(), t.clone());
        }
    }
    Ok(out)
}

/// MPRT's similarities: per step (the layer it randomised last), one per image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Randomisation {
    pub layers: Vec<String>,
    pub similarity: Vec<Vec<f64>>,
}

/// MPRT (and sMPRT, with a denoising `explain`, see [`smoothed`]): the similarity of each image's map under the
/// model `original` (`batch.maps`) to its map after each randomisation step.
pub fn mprt(
    original: &Checkpoint,
    fresh: &Checkpoint,
    order: Order,
    batch: &Batch,
    similarity: Similarity,
    explain: &mut Explain,
) -> Result<Randomisation> {
    if fresh.spec != original.spec {
        crate::invalid!("the fresh weights are for {}, the model is {}", fresh.spec.arch, original.spec.arch);
    }
    let layers = parameter_layers(original.spec)?;
    let map_len = batch.map_channels * batch.plane();
    let mut out = Randomisation { layers: Vec::new(), similarity: Vec::new() };
    for step in 0..layers.len() {
        let changed = randomised_layers(&layers, order, step);
        let model = with_layers_from(original, fresh, &changed)?.model()?;
        let maps = explain(model.as_ref(), batch.x, batch.targets)?;
        if maps.len() != batch.len() * map_len {
            crate::invalid!("the explanation gave {} values for {} maps of {map_len}", maps.len(), batch.len());
        }
        out.layers.push(changed.last().cloned().unwrap_or_default());
        out.similarity.push(
            (0..batch.len()).map(|i| similarity.of(batch.map(i), &maps[i * map_len..(i + 1) * map_len])).collect(),
        );
    }
    Ok(out)
}

/// sMPRT's denoised explainer: the mean of `explain` over `noise.len() / x.len()` noisy copies of the input plus the
/// clean input. `noise` holds standard-normal draws (`samples − 1` copies of the batch, copy-major); each image's σ
/// is `level × (max − min)` of that image.
pub fn smoothed<'e>(
    explain: &'e mut Explain<'e>,
    level: f32,
    noise: &'e [f32],
    image_len: usize,
) -> impl FnMut(&dyn Classifier, &[f32], &[u32]) -> Result<Vec<f32>> + 'e {
    move |model, x, targets| {
        if x.is_empty() || !noise.len().is_multiple_of(x.len()) {
            crate::invalid!("{} noise values for inputs of {}", noise.len(), x.len());
        }
        let copies = noise.len() / x.len();
        let sigma: Vec<f32> = x
            .chunks_exact(image_len)
            .map(|im| {
                let (lo, hi) = im.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
                level * (hi - lo)
            })
            .collect();
        let mut total = explain(model, x, targets)?;
        for z in noise.chunks_exact(x.len()) {
            let noisy: Vec<f32> = x.iter().zip(z).enumerate().map(|(v, (a, n))| a + n * sigma[v / image_len]).collect();
            for (t, m) in total.iter_mut().zip(explain(model, &noisy, targets)?) {
                *t += m;
            }
        }
        let count = (copies + 1) as f32;
        total.iter_mut().for_each(|v| *v /= count);
        Ok(total)
    }
}

/// The discrete entropy of a map's values in `bins` equal-width bins between its minimum and maximum (numpy's
/// `histogram` with float32 edges, as Quantus's `discrete_entropy` computes it).
pub fn histogram_entropy(values: &[f32], bins: usize) -> f64 {
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let mut counts = vec![0usize; bins.max(1)];
    if hi > lo {
        let step = (hi - lo) / bins as f32;
        let edges: Vec<f32> = (0..=bins).map(|k| if k == bins { hi } else { k as f32 * step + lo }).collect();
        let norm = bins as f32 / (hi - lo);
        for &v in values {
            let mut k = (((v - lo) * norm) as usize).min(bins - 1);
            if v < edges[k] {
                k -= 1;
            } else if v >= edges[k + 1] && k != bins - 1 {
                k += 1;
            }
            counts[k] += 1;
        }
    } else {
        // numpy widens an empty range to [v − 0.5, v + 0.5]: everything lands in the middle bin.
        counts[bins / 2] = values.len();
    }
    let total = values.len() as f64;
    -counts.iter().filter(|&&c| c > 0).map(|&c| (c as f64 / total) * (c as f64 / total).ln()).sum::<f64>()
}

/// eMPRT: for each image, `(H(e_random) − H(e_original)) / H(e_original)` with H the 100-bin [`histogram_entropy`]
/// and `e_random` the map under the fully randomised model.
pub fn efficient_mprt(
    original: &Checkpoint,
    fresh: &Checkpoint,
    batch: &Batch,
    explain: &mut Explain,
) -> Result<Vec<f64>> {
    let layers = parameter_layers(original.spec)?;
    let model = with_layers_from(original, fresh, &layers)?.model()?;
    let maps = explain(model.as_ref(), batch.x, batch.targets)?;
    let map_len = batch.map_channels * batch.plane();
    if maps.len() != batch.len() * map_len {
        crate::invalid!("the explanation gave {} values for {} maps of {map_len}", maps.len(), batch.len());
    }
    Ok((0..batch.len())
        .map(|i| {
            let before = histogram_entropy(batch.map(i), 100);
            (histogram_entropy(&maps[i * map_len..(i + 1) * map_len], 100) - before) / before
        })
        .collect())
}

/// One other class per target, drawn uniformly from the `classes − 1` others.
pub fn other_classes(targets: &[u32], classes: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    targets
        .iter()
        .map(|&t| {
            let k = rng.random_range(0..classes as u32 - 1);
            if k >= t {
                k + 1
            } else {
                k
            }
        })
        .collect()
}

/// Random logit: the similarity of each image's map (`batch.maps`, for its target) to its map for `others[i]`.
pub fn random_logit(
    model: &dyn Classifier,
    batch: &Batch,
    others: &[u32],
    similarity: Similarity,
    explain: &mut Explain,
) -> Result<Vec<f64>> {
    if others.len() != batch.len() || others.iter().zip(batch.targets).any(|(o, t)| o == t) {
        crate::invalid!("random logit needs one class per image, each other than the image's target");
    }
    let maps = explain(model, batch.x, others)?;
    let map_len = batch.map_channels * batch.plane();
    if maps.len() != batch.len() * map_len {
        crate::invalid!("the explanation gave {} values for {} maps of {map_len}", maps.len(), batch.len());
    }
    Ok((0..batch.len()).map(|i| similarity.of(batch.map(i), &maps[i * map_len..(i + 1) * map_len])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_entropy_by_hand() {
        let layers: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(randomised_layers(&layers, Order::TopDown, 1), vec!["c", "b"]);
        assert_eq!(randomised_layers(&layers, Order::BottomUp, 1), vec!["a", "b"]);
        assert_eq!(randomised_layers(&layers, Order::Independent, 1), vec!["b"]);
        // Four values in four different bins of 100: ln 4; all equal: 0.
        assert!((histogram_entropy(&[0.0, 1.0, 2.0, 3.0], 100) - 4f64.ln()).abs() < 1e-12);
        assert_eq!(histogram_entropy(&[1.0; 5], 100), 0.0);
        let others = other_classes(&[0, 9, 3, 3, 3, 3], 10, 1);
        assert!(others.iter().zip([0, 9, 3, 3, 3, 3]).all(|(o, t)| *o != t && *o < 10));
    }
}
