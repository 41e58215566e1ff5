//! HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
//! neural networks"): Σ_k G^k ⊙ A^k, the gradient kept pixel by pixel instead of averaged per channel.

use crate::attribution::class_activation::{pixelwise_sum, LayerFormula};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::models::Classifier;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "hirescam",
    aliases: &["hires-cam"],
    label: "HiResCAM",
    title: "HiResCAM",
    paper: "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural networks",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| Ok(Box::new(LayerFormula::new("HiResCAM", s, model, formula, true))),
};

pub fn formula(act: &[f32], grad: &[f32], _c: usize, hw: usize) -> Vec<f32> {
    pixelwise_sum(act, grad, hw, |g, a| g * a)
}
