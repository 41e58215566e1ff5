//! DeconvNet (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"): the input gradient
//! with the deconvolution ReLU rule — a ReLU passes back the positive part of the incoming gradient, whatever its
//! input was.

use super::vanilla_gradient::ModifiedGradient;
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::models::Classifier;
use crate::ops::ReluRule;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "deconvnet",
    aliases: &["deconv", "deconvolution"],
    label: "DeconvNet",
    title: "DeconvNet",
    paper: "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
    family: Family::Gradient,
    params: &[],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: true,
    build: |_: &Settings, _: &dyn Classifier| Ok(Box::new(ModifiedGradient::new(ReluRule::Deconv))),
};
