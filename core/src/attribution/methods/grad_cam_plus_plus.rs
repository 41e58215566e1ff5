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

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's reduction (§3.1): where every α^k_p is the same, Grad-CAM++'s weights are Grad-CAM's up to a
    /// constant. With positive gradients and each channel's activations summing to zero, α = G²/(2G² + 0) = ½
    /// everywhere, so the map is (h·w)/2 times Grad-CAM's Σ_k mean(G^k) A^k. And a channel whose gradients are not
    /// positive adds nothing.
    #[test]
    fn equals_grad_cam_where_the_alphas_are_uniform() {
        let (c, hw) = (5, 12);
        let mut act = vec![0f32; c * hw];
        let mut grad = vec![0f32; c * hw];
        for k in 0..c {
            for p in 0..hw {
                // Channel sums exactly zero: values in ± pairs.
                let v = ((k * 7 + p / 2 * 3) % 11) as f32 * 0.25 - 1.0;
                act[k * hw + p] = if p % 2 == 0 { v } else { -v };
                grad[k * hw + p] = 0.125 + ((k * 5 + p * 3) % 7) as f32 * 0.0625;
            }
        }
        let plus_plus = formula(&act, &grad, c, hw);
        let weights: Vec<f64> =
            grad.chunks_exact(hw).map(|g| g.iter().map(|&v| v as f64).sum::<f64>() / hw as f64).collect();
        let grad_cam = weighted_sum(&act, &weights, hw);
        for (a, b) in plus_plus.iter().zip(&grad_cam) {
            let want = b * hw as f32 / 2.0;
            // The denominator's ε = 1e-6 moves α from ½ by at most ε/(2G²) = 3.2e-5 here.
            assert!((a - want).abs() <= 1e-4 * want.abs().max(1.0), "{a} vs {want}");
        }
        // Negative gradients: ReLU(G) = 0, no weight.
        let negative: Vec<f32> = grad.iter().map(|g| -g).collect();
        assert!(formula(&act, &negative, c, hw).iter().all(|&v| v == 0.0));
    }
}
