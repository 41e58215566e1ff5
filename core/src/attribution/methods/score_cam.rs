//! Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
//! Networks"): each channel of a layer, up-sampled to the input (bilinear, corners aligned) and scaled to [0, 1],
//! masks the input; the target's logit on each masked input, soft-maxed over the channels, weighs the channel in
//! Σ_k w_k A^k (ReLU'd). No gradient: one forward pass per channel and image, in batches of at most `batch`
//! inputs — as pytorch-grad-cam's `ScoreCAM` computes it.

use crate::attribution::class_activation::weighted_sum;
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::attribution::{check_targets, layer_activation, resize, to_input, Attribution, Interpolation, Score};
use crate::models::{eval_logits, Classifier};
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "scorecam",
    aliases: &["score-cam"],
    label: "ScoreCAM",
    title: "Score-CAM",
    paper: "Wang et al. 2020, Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| {
        Ok(Box::new(ScoreCam {
            layer: s.params.layer(&LAYER).unwrap_or(model.default_gradcam_layer()),
            batch: s.batch,
        }))
    },
};

pub struct ScoreCam {
    pub layer: usize,
    /// Masked inputs per forward pass.
    pub batch: usize,
}

impl ScoreCam {
    /// The ReLU'd map at the layer, before up-sampling (`N×1×h×w`). The score is always the logit (the masked
    /// inputs' scores are soft-maxed over channels already).
    pub fn coarse(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let (n, _, height, width) = x.dims4()?;
        check_targets(model, n, targets)?;
        let act = layer_activation(model, x, self.layer)?;
        let (_, c, h, w) = act.dims4()?;
        // Each channel up-sampled and scaled to [0, 1]: N×c×H×W.
        let up = resize(&act, height, width, Interpolation::BilinearAligned)?;
        let flat = up.flatten_from(2)?;
        let (lo, hi) = (flat.min_keepdim(2)?.unsqueeze(3)?, flat.max_keepdim(2)?.unsqueeze(3)?);
        let masks = up.broadcast_sub(&lo)?.broadcast_div(&((hi - &lo)? + 1e-8)?)?;
        let act = act.flatten_all()?.to_vec1::<f32>()?;
        let mut maps = Vec::with_capacity(n * h * w);
        for i in 0..n {
            // c masked copies of image i: c×C×H×W.
            let masked = masks.get(i)?.unsqueeze(1)?.broadcast_mul(&x.get(i)?.unsqueeze(0)?)?;
            let mut scores = Vec::with_capacity(c);
            for start in (0..c).step_by(self.batch.max(1)) {
                let len = self.batch.max(1).min(c - start);
                let logits = eval_logits(model, &masked.narrow(0, start, len)?)?;
                scores.extend(logits.narrow(1, targets[i] as usize, 1)?.flatten_all()?.to_vec1::<f32>()?);
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = exp.iter().sum();
            let weights: Vec<f64> = exp.iter().map(|e| (e / total) as f64).collect();
            let per = c * h * w;
            maps.extend(weighted_sum(&act[i * per..(i + 1) * per], &weights, h * w).into_iter().map(|v| v.max(0.0)));
        }
        Ok(Tensor::from_vec(maps, (n, 1, h, w), x.device())?)
    }
}

impl Attribution for ScoreCam {
    fn name(&self) -> String {
        "ScoreCAM".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], _score: Score) -> Result<Tensor> {
        to_input(&self.coarse(model, x, targets)?, x, Interpolation::Bilinear)
    }
}
