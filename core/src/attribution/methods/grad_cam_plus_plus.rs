//! Grad-CAM++ (Chattopadhay et al. 2018, "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
//! Convolutional Networks"): Grad-CAM with each channel's weight a weighted sum of its positive gradients,
//! w_k = Σ_p α^k_p ReLU(G^k_p), α^k_p = G² / (2G² + (Σ_q A^k_q) G³ + ε) (the paper's eq. 19 with an exponential
//! score, as pytorch-grad-cam computes it; ε = 1e-6, α = 0 where G = 0).

use crate::attribution::class_activation::{weighted_sum, LayerFormula};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::models::Classifier;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "gcpp",
    aliases: &["gradcam++", "grad-cam++", "gradcampp", "grad-cam-plus-plus"],
    label: "GC++",
    title: "Grad-CAM++",
    paper: "Chattopadhay et al. 2018, Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep Convolutional Networks",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| Ok(Box::new(LayerFormula::new("GC++", s, model, formula, true))),
};

/// The channel weights in f64 (their sums cancel; see `weighted_sum`).
pub fn formula(act: &[f32], grad: &[f32], _c: usize, hw: usize) -> Vec<f32> {
    let weights: Vec<f64> = act
        .chunks_exact(hw)
        .zip(grad.chunks_exact(hw))
        .map(|(a, g)| {
            let sum_a: f64 = a.iter().map(|&v| v as f64).sum();
            g.iter()
                .map(|&g| {
                    if g == 0.0 {
                        return 0.0;
                    }
                    let g = g as f64;
                    let (g2, g3) = (g * g, g * g * g);
                    g.max(0.0) * (g2 / (2.0 * g2 + sum_a * g3 + 1e-6))
                })
                .sum()
        })
        .collect();
    weighted_sum(act, &weights, hw)
}
