//! LayerCAM (Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization"):
//! Σ_k ReLU(G^k) ⊙ A^k, each pixel weighted by its own positive gradient — meaningful at shallow layers too.

use crate::attribution::class_activation::{pixelwise_sum, LayerFormula};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::models::Classifier;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "layercam",
    aliases: &["layer-cam"],
    label: "LayerCAM",
    title: "LayerCAM",
    paper: "Jiang et al. 2021, LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| Ok(Box::new(LayerFormula::new("LayerCAM", s, model, formula, true))),
};

pub fn formula(act: &[f32], grad: &[f32], _c: usize, hw: usize) -> Vec<f32> {
    pixelwise_sum(act, grad, hw, |g, a| g.max(0.0) * a)
}
