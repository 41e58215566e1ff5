//! CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization"): Σ_k w_{c,k} A^k over the last
//! feature layer, for models whose head is global average pooling and one linear layer; up-sampled bilinearly.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{layer_activation, to_input, Attribution, Interpolation, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "cam",
    aliases: &[],
    label: "CAM",
    title: "Class Activation Mapping",
    paper: "Zhou et al. 2016, Learning Deep Features for Discriminative Localization",
    family: Family::Layer,
    params: &[],
    needs: Needs::CamHead,
    display: Display::MinMax,
    seed: false,
    build: |_: &Settings, _: &dyn Classifier| Ok(Box::new(Cam)),
};

pub struct Cam;

impl Attribution for Cam {
    fn name(&self) -> String {
        "CAM".into()
    }

    /// Needs a model with a CAM head; the score setting does not apply (CAM reads the head's weights).
    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], _score: Score) -> Result<Tensor> {
        let Some(head) = model.cam_head() else {
            crate::invalid!(
                "CAM needs a model with a CAM head (global average pooling + linear), not {}",
                model.spec().arch
            );
        };
        let act = layer_activation(model, x, model.last_feature_index())?;
        let idx = Tensor::from_slice(targets, targets.len(), x.device())?;
        let w = head.weight().index_select(&idx, 0)?; // N×K
        let (n, k) = w.dims2()?;
        let map = act.broadcast_mul(&w.reshape((n, k, 1, 1))?)?.sum_keepdim(1)?;
        to_input(&map, x, Interpolation::Bilinear)
    }
}
