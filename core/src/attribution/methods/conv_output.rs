//! ConvOutput, the seed's control (WhiteBox-Part1): the channel mean of a layer's feature maps, which knows nothing
//! of the class; up-sampled bilinearly.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::attribution::{layer_activation, to_input, Attribution, Interpolation, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "co",
    aliases: &["conv-output", "convoutput"],
    label: "CO",
    title: "ConvOutput",
    paper: "WhiteBox-Part1 (the seed): the mean of a layer's feature maps, a class-blind control",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| {
        Ok(Box::new(ConvOutput { layer: s.params.layer(&LAYER).unwrap_or(model.last_feature_index()) }))
    },
};

pub struct ConvOutput {
    pub layer: usize,
}

impl Attribution for ConvOutput {
    fn name(&self) -> String {
        "CO".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, _targets: &[u32], _score: Score) -> Result<Tensor> {
        let map = layer_activation(model, x, self.layer)?.mean_keepdim(1)?;
        to_input(&map, x, Interpolation::Bilinear)
    }
}
