//! XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs"):
//! w_k = Σ_p A^k_p G^k_p / (Σ_p A^k_p + ε), ε = 1e-7 as pytorch-grad-cam.

use crate::attribution::class_activation::{weighted_sum, LayerFormula};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::models::Classifier;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "xgc",
    aliases: &["xgradcam", "xgrad-cam"],
    label: "XGC",
    title: "XGrad-CAM",
    paper: "Fu et al. 2020, Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| Ok(Box::new(LayerFormula::new("XGC", s, model, formula, true))),
};

/// The channel weights in f64 (the denominators may nearly cancel; see `weighted_sum`).
pub fn formula(act: &[f32], grad: &[f32], _c: usize, hw: usize) -> Vec<f32> {
    let weights: Vec<f64> = act
        .chunks_exact(hw)
        .zip(grad.chunks_exact(hw))
        .map(|(a, g)| {
            let denom = a.iter().map(|&v| v as f64).sum::<f64>() + 1e-7;
            a.iter().zip(g).map(|(&a, &g)| g as f64 * a as f64 / denom).sum()
        })
        .collect();
    weighted_sum(act, &weights, hw)
}
