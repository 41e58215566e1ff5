//! Layer-wise relevance propagation (Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier
//! Decisions by Layer-Wise Relevance Propagation"; rules and composites as Montavon et al. 2019, "Layer-Wise
//! Relevance Propagation: An Overview", and as Zennit names them): the target's relevance is sent back layer by
//! layer, each convolution and linear layer by the rule its composite gives it — ε, z⁺ (α1β0), α2β1, γ, z^B (the
//! first layer, bounded by the pixel range) or flat — with BatchNorm folded into the convolution before it. The rules
//! run in the engine that runs the model's graph (`engine/executor/lrp.rs`); networks of convolutions, BatchNorm,
//! ReLU, pooling and linear layers (SimpleCNN, CAM): LRP has no standard rule for attention products.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{propagate, Attribution, Score};
use crate::graph::{Composite, LrpRule, Propagation};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

/// The composite: which rule each layer takes.
pub static COMPOSITE: ParamSpec = ParamSpec {
    key: "lrp-composite",
    aliases: &["composite"],
    label: "Composite",
    help: "Rules per layer (LRP; Zennit's composites): epsilon-plus-flat = flat first layer, z+ convolutions, ε dense \
           layers; epsilon-gamma-box = z^B first layer, γ convolutions, ε dense; epsilon-alpha2-beta1 = α2β1 \
           convolutions, ε dense; epsilon-plus = z+ convolutions, ε dense; epsilon = ε everywhere",
    kind: ParamKind::Choice {
        values: &["epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1", "epsilon-plus", "epsilon"],
        default: "epsilon-plus-flat",
    },
};

/// ε of the ε rule.
pub static EPSILON: ParamSpec = ParamSpec {
    key: "lrp-epsilon",
    aliases: &[],
    label: "ε",
    help: "Stabiliser of the ε rule (LRP)",
    kind: ParamKind::Real { default: 1e-6, min: 1e-12, max: 100.0 },
};

/// γ of the γ rule.
pub static GAMMA: ParamSpec = ParamSpec {
    key: "lrp-gamma",
    aliases: &[],
    label: "γ",
    help: "Boost of the positive weights in the γ rule (LRP, epsilon-gamma-box)",
    kind: ParamKind::Real { default: 0.25, min: 0.0, max: 100.0 },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "lrp",
    aliases: &["layer-wise-relevance-propagation"],
    label: "LRP",
    title: "Layer-wise relevance propagation",
    paper: "Bach et al. 2015, On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance \
            Propagation; Montavon et al. 2019, Layer-Wise Relevance Propagation: An Overview",
    family: Family::Propagation,
    params: &[&COMPOSITE, &EPSILON, &GAMMA],
    needs: Needs::LrpRules,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| {
        Ok(Box::new(Lrp {
            composite: composite(
                s.params.choice(&COMPOSITE),
                s.params.real(&EPSILON) as f32,
                s.params.real(&GAMMA) as f32,
            )?,
        }))
    },
};

/// The composite called `name` (Zennit's name, in kebab case).
pub fn composite(name: &str, epsilon: f32, gamma: f32) -> Result<Composite> {
    let eps = LrpRule::Epsilon(epsilon);
    let plus = LrpRule::AlphaBeta { alpha: 1.0, beta: 0.0 };
    let (first, conv) = match name {
        "epsilon-plus-flat" => (LrpRule::Flat, plus),
        "epsilon-gamma-box" => (LrpRule::ZBox, LrpRule::Gamma(gamma)),
        "epsilon-alpha2-beta1" => {
            (LrpRule::AlphaBeta { alpha: 2.0, beta: 1.0 }, LrpRule::AlphaBeta { alpha: 2.0, beta: 1.0 })
        }
        "epsilon-plus" => (plus.clone(), plus),
        "epsilon" => (eps.clone(), eps.clone()),
        other => crate::invalid!("unknown LRP composite '{other}'"),
    };
    // The first layer of a composite without a rule of its own for it is a convolution like the others.
    Ok(Composite { first, conv, linear: eps })
}

/// A propagation of the kind LRP asks for, to ask an engine whether it can.
pub fn probe() -> Propagation {
    Propagation::Lrp {
        composite: composite("epsilon", 1e-6, 0.25).expect("a known composite"),
        bounds: (vec![], vec![]),
    }
}

pub struct Lrp {
    pub composite: Composite,
}

impl Attribution for Lrp {
    fn name(&self) -> String {
        "LRP".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let kind = model.spec().dataset;
        let low = kind.mean().iter().zip(kind.std()).map(|(m, s)| (0.0 - m) / s).collect();
        let high = kind.mean().iter().zip(kind.std()).map(|(m, s)| (1.0 - m) / s).collect();
        let how = Propagation::Lrp { composite: self.composite.clone(), bounds: (low, high) };
        propagate(model, x, targets, score, &how)
    }
}
