//! Gradient maps through a modified-ReLU backward pass:
//! - Vanilla Backpropagation, the saliency map of Simonyan, Vedaldi & Zisserman (2014): ∂S_c/∂x;
//! - Guided Backpropagation (Springenberg et al. 2015) and DeconvNet (Zeiler & Fergus 2014): the same pass with the
//!   guided or deconv ReLU rule;
//! - Input × Gradient (Shrikumar et al. 2016): x ⊙ ∂S_c/∂x.

use super::{input_gradient, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

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

pub struct InputXGradient;

impl Attribution for InputXGradient {
    fn name(&self) -> String {
        "IB".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        Ok((x * input_gradient(model, x, targets, score, ReluRule::Standard)?)?)
    }
}
