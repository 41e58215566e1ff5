//! Vanilla Backpropagation, the saliency map of Simonyan, Vedaldi & Zisserman (2014), "Deep Inside Convolutional
//! Networks": ∂S_c/∂x. [`ModifiedGradient`] is the same backward pass under any ReLU rule, which Guided
//! Backpropagation and DeconvNet use with theirs.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{input_gradient, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "vbp",
    aliases: &["saliency", "gradient"],
    label: "VBP",
    title: "Vanilla Backpropagation",
    paper: "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
    family: Family::Gradient,
    params: &[],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: true,
    build: |_: &Settings, _: &dyn Classifier| Ok(Box::new(ModifiedGradient::new(ReluRule::Standard))),
};

/// The gradient of the class score with respect to the input under a ReLU backward rule.
pub struct ModifiedGradient {
    pub rule: ReluRule,
}

impl ModifiedGradient {
    pub fn new(rule: ReluRule) -> Self {
        ModifiedGradient { rule }
    }
}

impl Attribution for ModifiedGradient {
    fn name(&self) -> String {
        match self.rule {
            ReluRule::Standard => "VBP",
            ReluRule::Guided => "GB",
            ReluRule::Deconv => "DeconvNet",
        }
        .into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        input_gradient(model, x, targets, score, self.rule)
    }
}
