//! Guided Backpropagation (Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net"): the
//! input gradient with the guided ReLU rule — a ReLU passes gradient back only where its input and the incoming
//! gradient are both positive.

use super::vanilla_gradient::ModifiedGradient;
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::models::Classifier;
use crate::ops::ReluRule;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "gb",
    aliases: &["guided-backprop", "guided-backpropagation"],
    label: "GB",
    title: "Guided Backpropagation",
    paper: "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net",
    family: Family::Gradient,
    params: &[],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: true,
    build: |_: &Settings, _: &dyn Classifier| Ok(Box::new(ModifiedGradient::new(ReluRule::Guided))),
};
