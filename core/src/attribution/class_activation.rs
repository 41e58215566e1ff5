//! What the CAM family shares: a map computed at a feature layer from its activations A (`c` planes of `hw`
//! values per image) and, for most members, the gradient G = ∂S_c/∂A; ReLU'd, then up-sampled bilinearly to the
//! input as Grad-CAM's is. Each member is a [`Formula`] in its own file (`grad_cam_plus_plus.rs`, `xgrad_cam.rs`,
//! …), checked against pytorch-grad-cam's implementation of it.

use super::registry::{Settings, LAYER};
use super::{layer_activation, layer_gradient, to_input, Attribution, Interpolation, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

/// One image's map before the ReLU (`hw` values) from its activations and gradients (`c·hw` values each; the
/// gradient is empty for a formula that does not read it).
pub type Formula = fn(act: &[f32], grad: &[f32], c: usize, hw: usize) -> Vec<f32>;

/// A CAM-family method: `formula` at `layer`.
pub struct LayerFormula {
    pub label: &'static str,
    pub layer: usize,
    pub formula: Formula,
    /// Whether the formula reads the gradient (Eigen-CAM does not: no backward pass is run).
    pub gradient: bool,
}

impl LayerFormula {
    /// The layer of `settings`, or the model's Grad-CAM layer.
    pub fn new(
        label: &'static str,
        settings: &Settings,
        model: &dyn Classifier,
        formula: Formula,
        gradient: bool,
    ) -> Self {
        let layer = settings.params.layer(&LAYER).unwrap_or(model.default_gradcam_layer());
        LayerFormula { label, layer, formula, gradient }
    }

    /// The ReLU'd map at the layer, before up-sampling (`N×1×h×w`).
    pub fn coarse(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let (act, grad) = if self.gradient {
            let (a, g) = layer_gradient(model, x, targets, score, ReluRule::Standard, self.layer)?;
            (a, Some(g))
        } else {
            (layer_activation(model, x, self.layer)?, None)
        };
        let (n, c, h, w) = act.dims4()?;
        let act = act.flatten_all()?.to_vec1::<f32>()?;
        let grad = match grad {
            Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
            None => Vec::new(),
        };
        let per = c * h * w;
        let mut map = Vec::with_capacity(n * h * w);
        for i in 0..n {
            let g = if grad.is_empty() { &[][..] } else { &grad[i * per..(i + 1) * per] };
            let m = (self.formula)(&act[i * per..(i + 1) * per], g, c, h * w);
            map.extend(m.into_iter().map(|v| v.max(0.0)));
        }
        Ok(Tensor::from_vec(map, (n, 1, h, w), x.device())?)
    }
}

impl Attribution for LayerFormula {
    fn name(&self) -> String {
        self.label.into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        to_input(&self.coarse(model, x, targets, score)?, x, Interpolation::Bilinear)
    }
}

/// Σ_k w_k A^k for per-channel weights `w`, accumulated in f64: where channels cancel, f32 sums lose digits.
pub fn weighted_sum(act: &[f32], weights: &[f64], hw: usize) -> Vec<f32> {
    let mut map = vec![0f64; hw];
    for (plane, &w) in act.chunks_exact(hw).zip(weights) {
        map.iter_mut().zip(plane).for_each(|(m, &a)| *m += w * a as f64);
    }
    map.into_iter().map(|v| v as f32).collect()
}

/// Σ_k f(G^k_p, A^k_p) at each pixel p, accumulated in f64.
pub fn pixelwise_sum(act: &[f32], grad: &[f32], hw: usize, f: impl Fn(f64, f64) -> f64) -> Vec<f32> {
    let mut map = vec![0f64; hw];
    for (a_plane, g_plane) in act.chunks_exact(hw).zip(grad.chunks_exact(hw)) {
        map.iter_mut().zip(a_plane.iter().zip(g_plane)).for_each(|(m, (&a, &g))| *m += f(g as f64, a as f64));
    }
    map.into_iter().map(|v| v as f32).collect()
}
