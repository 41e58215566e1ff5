//! Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
//! Localization"): ReLU(Σ_k α_k A^k) with α_k the spatial mean of ∂S_c/∂A^k, up-sampled bilinearly to the input
//! (Captum's `LayerAttribution.interpolate`).

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::attribution::{layer_gradient, to_input, Attribution, Interpolation, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "gc",
    aliases: &["gradcam", "grad-cam"],
    label: "GC",
    title: "Grad-CAM",
    paper: "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: true,
    build: |s: &Settings, model: &dyn Classifier| {
        Ok(Box::new(GradCam { layer: s.params.layer(&LAYER).unwrap_or(model.default_gradcam_layer()) }))
    },
};

pub struct GradCam {
    pub layer: usize,
}

impl Attribution for GradCam {
    fn name(&self) -> String {
        "GC".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        to_input(&grad_cam_coarse(model, x, targets, score, self.layer)?, x, Interpolation::Bilinear)
    }
}

/// The Grad-CAM map at `layer`, before up-sampling (`N×1×h×w`).
pub(crate) fn grad_cam_coarse(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    layer: usize,
) -> Result<Tensor> {
    let (act, grad) = layer_gradient(model, x, targets, score, ReluRule::Standard, layer)?;
    let (n, c, h, w) = act.dims4()?;
    let map = grad_cam_formula(&act.flatten_all()?.to_vec1::<f32>()?, &grad.flatten_all()?.to_vec1::<f32>()?, c, h * w);
    Ok(Tensor::from_vec(map, (n, 1, h, w), x.device())?)
}

/// ReLU(Σ_k α_k A^k) with α_k the spatial mean of ∂S/∂A^k, over images of `c` planes of `hw` values each.
fn grad_cam_formula(act: &[f32], grad: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let n = act.len() / (c * hw);
    let mut map = vec![0f32; n * hw];
    for (i, m) in map.chunks_mut(hw).enumerate() {
        for k in 0..c {
            let plane = (i * c + k) * hw;
            let alpha = grad[plane..plane + hw].iter().sum::<f32>() / hw as f32;
            m.iter_mut().zip(&act[plane..plane + hw]).for_each(|(v, a)| *v += alpha * a);
        }
        m.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    map
}
