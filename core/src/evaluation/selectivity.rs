//! Selectivity (Montavon, Samek & Müller 2018, §4.1; the pixel-flipping of Bach et al. 2015), as the seed runs it:
//! at each step, measure the accuracy and the softmax score of the true class, compute the map of the true class,
//! and remove the most relevant pixel(s) not yet removed; the map is recomputed on the modified image every step.
//!
//! Differences from the seed: a removed pixel is never chosen again (the seed could pick the same arg-max twice,
//! wasting a step), and several pixels may go per step (`pixels_per_step`) for a faster variant.

use super::ranking::{most_relevant_first, pixel_relevance, Ranking};
use super::remove::Fill;
use crate::attribution::{probabilities, Explanation};
use crate::data::ImageSet;
use crate::models::Classifier;
use crate::Result;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectivityConfig {
    /// Removal steps; the curves have `steps + 1` points (before any removal, then after each step).
    pub steps: usize,
    pub pixels_per_step: usize,
    pub fill: Fill,
    pub ranking: Ranking,
    /// Images per forward pass when measuring.
    pub batch: usize,
}

/// Where a run stands: everything needed to resume it (the removed pixels replay onto the original images).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectivityState {
    /// Accuracy after 0, 1, … steps.
    pub accuracy: Vec<f64>,
    /// Mean softmax probability of the true class after 0, 1, … steps.
    pub mean_score: Vec<f64>,
    /// Per image, the removed pixel locations in removal order.
    pub removed: Vec<Vec<u32>>,
}

impl SelectivityState {
    pub fn is_complete(&self, config: &SelectivityConfig) -> bool {
        self.accuracy.len() == config.steps + 1
    }
}

/// The area under a curve sampled at equal steps over [0, 1] (trapezoid rule); a curve of one point is that point.
pub fn area_under_curve(curve: &[f64]) -> f64 {
    match curve.len() {
        0 => 0.0,
        1 => curve[0],
        n => curve.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / (n - 1) as f64,
    }
}

/// Runs (or resumes, from `state`) Selectivity of `explanation` on `images`, calling `on_step` with the state after
/// every step (to save it). The explained class is each image's label.
pub fn selectivity(
    model: &dyn Classifier,
    explanation: &Explanation,
    images: &ImageSet,
    config: &SelectivityConfig,
    state: &mut SelectivityState,
    on_step: &mut dyn FnMut(&SelectivityState) -> Result<()>,
) -> Result<()> {
    let kind = model.spec().dataset;
    let n = images.len();
    if n == 0 || config.pixels_per_step == 0 || config.batch == 0 {
        crate::invalid!("selectivity needs images, at least one pixel per step and a positive batch size");
    }
    let plane = images.height * images.width;
    if config.steps * config.pixels_per_step > plane {
        crate::invalid!(
            "{} steps of {} pixels remove more than the {plane} pixels of an image",
            config.steps,
            config.pixels_per_step
        );
    }
    if state.removed.is_empty() {
        state.removed = vec![vec![]; n];
    }
    let done = state.accuracy.len();
    let consistent = state.removed.len() == n
        && state.mean_score.len() == done
        && done <= config.steps + 1
        && state.removed.iter().all(|r| r.len() == done.min(config.steps) * config.pixels_per_step);
    if !consistent {
        crate::invalid!("the saved selectivity state does not belong to these images and settings");
    }
    let fill = config.fill.raw(kind);
    let mut current = images.clone();
    let mut is_removed = vec![false; n * plane];
    let per = images.image_len();
    let set_removed = |pixels: &mut [u8], is_removed: &mut [bool], i: usize, p: u32| {
        is_removed[i * plane + p as usize] = true;
        for (c, &v) in fill.iter().enumerate() {
            pixels[i * per + c * plane + p as usize] = v;
        }
    };
    for (i, removed) in state.removed.iter().enumerate() {
        for &p in removed {
            set_removed(&mut current.pixels, &mut is_removed, i, p);
        }
    }
    let labels: Vec<u32> = images.labels.iter().map(|&l| l as u32).collect();
    let all: Vec<usize> = (0..n).collect();
    while !state.is_complete(config) {
        let (mut correct, mut score_sum) = (0usize, 0f64);
        for chunk in all.chunks(config.batch) {
            let (x, _) = current.batch(chunk, kind, &candle_core::Device::Cpu)?;
            let probs = probabilities(model, &x)?.to_vec2::<f32>()?;
            for (row, &i) in probs.iter().zip(chunk) {
                let label = labels[i] as usize;
                let best = row.iter().enumerate().fold(0, |b, (k, &v)| if v > row[b] { k } else { b });
                correct += (best == label) as usize;
                score_sum += row[label] as f64;
            }
        }
        state.accuracy.push(correct as f64 / n as f64);
        state.mean_score.push(score_sum / n as f64);
        if !state.is_complete(config) {
            let (x, _) = current.batch(&all, kind, &candle_core::Device::Cpu)?;
            let maps = explanation.run(model, &x, &labels, &mut |_| {})?.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..n {
                let relevance = pixel_relevance(&maps[i * per..(i + 1) * per], images.channels, config.ranking)?;
                let chosen: Vec<u32> = most_relevant_first(&relevance)
                    .into_iter()
                    .filter(|&p| !is_removed[i * plane + p as usize])
                    .take(config.pixels_per_step)
                    .collect();
                for &p in &chosen {
                    set_removed(&mut current.pixels, &mut is_removed, i, p);
                }
                state.removed[i].extend(chosen);
            }
        }
        on_step(state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{input_gradient, Method, Score};
    use crate::data::DatasetKind;
    use crate::models::{Arch, ModelSpec};
    use crate::ops::ReluRule;
    use crate::params::init_model;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn images(n: usize) -> ImageSet {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let pixels = (0..n * 784).map(|_| rng.random_range(0..=255u8)).collect();
        ImageSet::new(pixels, (0..n as u8).map(|i| i % 10).collect(), 1, 28, 28).unwrap()
    }

    #[test]
    fn removes_the_most_relevant_remaining_pixels_and_resumes_exactly() -> Result<()> {
        let spec = ModelSpec { arch: Arch::SimpleCnn, dataset: DatasetKind::Mnist };
        let (_, model) = init_model(spec, 3, &Device::Cpu)?;
        let set = images(3);
        let config =
            SelectivityConfig { steps: 4, pixels_per_step: 2, fill: Fill::Zero, ranking: Ranking::Signed, batch: 2 };
        let vbp = Explanation::of(Method::VBP);
        let mut full = SelectivityState::default();
        let mut saved = vec![];
        selectivity(model.as_ref(), &vbp, &set, &config, &mut full, &mut |s| {
            saved.push(s.clone());
            Ok(())
        })?;
        assert_eq!(full.accuracy.len(), 5);
        assert_eq!(saved.len(), 5);
        // Step 0 measures the untouched images: the scores are the model's softmax of the label.
        let (x, _) = set.batch(&[0, 1, 2], DatasetKind::Mnist, &Device::Cpu)?;
        let p = probabilities(model.as_ref(), &x)?.to_vec2::<f32>()?;
        let mean0 = (0..3).map(|i| p[i][set.labels[i] as usize] as f64).sum::<f64>() / 3.0;
        assert!((full.mean_score[0] - mean0).abs() < 1e-6);
        // Each step removed the two pixels of largest VBP value among those left, on the image as it was then.
        let mut current = set.clone();
        for step in 0..4 {
            let (x, _) = current.batch(&[0, 1, 2], DatasetKind::Mnist, &Device::Cpu)?;
            let labels: Vec<u32> = set.labels.iter().map(|&l| l as u32).collect();
            let g = input_gradient(model.as_ref(), &x, &labels, Score::Logit, ReluRule::Standard)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for i in 0..3 {
                let removed = &full.removed[i][..step * 2];
                let mut left: Vec<(f32, u32)> =
                    (0..784u32).filter(|p| !removed.contains(p)).map(|p| (g[i * 784 + p as usize], p)).collect();
                left.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                assert_eq!(&full.removed[i][step * 2..step * 2 + 2], &[left[0].1, left[1].1], "image {i} step {step}");
                for &(_, p) in &left[..2] {
                    current.pixels[i * 784 + p as usize] = 0;
                }
            }
        }
        // Resuming from the state saved after step 2 gives the same run.
        let mut resumed = saved[2].clone();
        selectivity(model.as_ref(), &vbp, &set, &config, &mut resumed, &mut |_| Ok(()))?;
        assert_eq!(resumed, full);
        // A state of other settings is refused.
        let other = SelectivityConfig { pixels_per_step: 3, ..config.clone() };
        assert!(selectivity(model.as_ref(), &vbp, &set, &other, &mut saved[2].clone(), &mut |_| Ok(())).is_err());
        Ok(())
    }

    #[test]
    fn area_by_hand() {
        assert_eq!(area_under_curve(&[1.0, 0.0]), 0.5);
        assert_eq!(area_under_curve(&[1.0, 1.0, 0.0]), 0.75);
        assert_eq!(area_under_curve(&[0.3]), 0.3);
    }
}
