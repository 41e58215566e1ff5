//! Guided Grad-CAM (Selvaraju et al. 2017): Guided Backpropagation ⊙ Grad-CAM, the Grad-CAM map up-sampled with
//! nearest-neighbour interpolation as Captum's `GuidedGradCam` does.

use super::grad_cam::grad_cam_coarse;
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::attribution::{input_gradient, to_input, Attribution, Interpolation, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "gbgc",
    aliases: &["guided-gradcam", "guided-grad-cam"],
    label: "GB-GC",
    title: "Guided Grad-CAM",
    paper: "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: true,
    build: |s: &Settings, model: &dyn Classifier| {
        Ok(Box::new(GuidedGradCam {
            layer: s.params.layer(&LAYER).unwrap_or(model.default_gradcam_layer()),
            interpolation: Interpolation::Nearest,
        }))
    },
};

pub struct GuidedGradCam {
    pub layer: usize,
    pub interpolation: Interpolation,
}

impl Attribution for GuidedGradCam {
    fn name(&self) -> String {
        "GB-GC".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let cam = to_input(&grad_cam_coarse(model, x, targets, score, self.layer)?, x, self.interpolation)?;
        let guided = input_gradient(model, x, targets, score, ReluRule::Guided)?;
        Ok((guided * cam)?)
    }
}
