//! DeepLIFT with the rescale rule (Shrikumar, Greenside & Kundaje 2017, "Learning Important Features Through
//! Propagating Activation Differences"; as Captum's `DeepLift` computes it): each pixel's share of the difference
//! between the target's logit at the input and at a reference x′, (x − x′) ⊙ m, where the multipliers m come back
//! through the network as the gradient does except at the nonlinearities, which pass the secant Δy/Δx between
//! input and reference instead of their derivative (ReLU, sigmoid, tanh; max-pooling by Captum's rule). The
//! reference is the zero (normalised-mean) image, IG's baseline. The rules are applied by the engine that runs the
//! model's graph (`Executor::rescale`).

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{propagate, Attribution, Score};
use crate::graph::Propagation;
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "deeplift",
    aliases: &["deep-lift", "dl"],
    label: "DeepLIFT",
    title: "DeepLIFT (rescale rule)",
    paper:
        "Shrikumar, Greenside & Kundaje 2017, Learning Important Features Through Propagating Activation Differences",
    family: Family::Propagation,
    params: &[],
    needs: Needs::Graph,
    display: Display::AbsMax,
    seed: false,
    build: |_: &Settings, _: &dyn Classifier| Ok(Box::new(DeepLift { reference: None })),
};

/// A propagation of the kind DeepLIFT asks for, to ask an engine whether it can.
pub fn probe() -> Propagation {
    Propagation::Rescale { reference: Vec::new() }
}

pub struct DeepLift {
    /// The reference of each image (`N×C×H×W`); zeros when None.
    pub reference: Option<Tensor>,
}

impl Attribution for DeepLift {
    fn name(&self) -> String {
        "DeepLIFT".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let reference = match &self.reference {
            Some(r) if r.dims() == x.dims() => r.flatten_all()?.to_vec1::<f32>()?,
            Some(r) => crate::invalid!("the DeepLIFT reference has shape {:?}, the input {:?}", r.dims(), x.dims()),
            None => vec![0.0; x.elem_count()],
        };
        propagate(model, x, targets, score, &Propagation::Rescale { reference })
    }
}
