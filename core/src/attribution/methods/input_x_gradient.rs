//! Input × Gradient (Shrikumar et al. 2016, "Not Just a Black Box"; the seed's "IB", input × backpropagation):
//! x ⊙ ∂S_c/∂x.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{input_gradient, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "ib",
    aliases: &["input-x-gradient", "ixg"],
    label: "IB",
    title: "Input × Gradient",
    paper: "Shrikumar et al. 2016, Not Just a Black Box: Learning Important Features Through Propagating Activation Differences",
    family: Family::Gradient,
    params: &[],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: true,
    build: |_: &Settings, _: &dyn Classifier| Ok(Box::new(InputXGradient)),
};

pub struct InputXGradient;

impl Attribution for InputXGradient {
    fn name(&self) -> String {
        "IB".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        Ok((x * input_gradient(model, x, targets, score, ReluRule::Standard)?)?)
    }
}
