//! What the layers above ask of the layers below, defined here at the bottom so that every module depends one way:
//! the class score a map explains ([`Score`]), an evaluation engine ([`Engine`]: logits and the gradient of a
//! score under a ReLU backward rule) and a training step's parameter gradients ([`Gradients`]). Models return an
//! engine without knowing how it is built (`engine/`), attribution methods ask for one without knowing which.

use crate::ops::ReluRule;
use crate::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, TensorId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which output is explained: the class logit (default), or its softmax probability (the seed's choice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Score {
    #[default]
    Logit,
    Prob,
}

/// An engine gradient: `grad`, and the tapped layer's activation when a layer was asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradient {
    pub grad: Vec<f32>,
    pub activation: Option<Vec<f32>>,
}

impl Gradient {
    /// No images yet, with an activation (a layer was asked for) or without.
    pub fn empty(tapped: bool) -> Gradient {
        Gradient { grad: Vec::new(), activation: tapped.then(Vec::new) }
    }

    /// The next images' gradient (and activation) after these: engines that answer a request in chunks.
    pub fn append(&mut self, next: Gradient) {
        self.grad.extend(next.grad);
        if let (Some(all), Some(a)) = (self.activation.as_mut(), next.activation) {
            all.extend(a);
        }
    }
}

/// A backward pass that is not the gradient: relevance sent back through each layer by a rule of the method's, over
/// the layers' forward values. One mechanism for every such method: the method names its rules here, the engine that
/// runs the graph applies them ([`Engine::propagate`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Propagation {
    /// DeepLIFT's rescale rule against a reference input (`n` references, as the input), as Captum's `DeepLift`
    /// computes it: the result is (x − x′) ⊙ the multipliers.
    Rescale { reference: Vec<f32> },
    /// LRP under `composite`; `bounds`: the lowest and highest input value of each channel (the z^B rule's box).
    Lrp { composite: Composite, bounds: (Vec<f32>, Vec<f32>) },
}

/// An LRP rule of a convolution or linear layer (Montavon et al. 2019), as Zennit defines it.
#[derive(Clone, Debug, PartialEq)]
pub enum LrpRule {
    /// `R_i = x_i·Σ_j w_ij R_j/(z_j + ε·sign z_j)`.
    Epsilon(f32),
    /// Positive and negative contributions weighted α and β (α − β = 1); α = 1, β = 0 is the z⁺ rule.
    AlphaBeta { alpha: f32, beta: f32 },
    /// Positive weights (of the sign of the output) boosted by γ.
    Gamma(f32),
    /// z^B: inputs bounded by the box of [`Propagation::Lrp`]'s `bounds` (the first layer, on pixels).
    ZBox,
    /// Every weight 1 and every input 1: relevance spread evenly over the receptive field.
    Flat,
}

/// Which rule each layer takes: the first convolution or linear layer, the other convolutions, the other linear
/// layers. ReLU and BatchNorm pass relevance on; BatchNorm is folded into the layer before it where it can be.
#[derive(Clone, Debug, PartialEq)]
pub struct Composite {
    pub first: LrpRule,
    pub conv: LrpRule,
    pub linear: LrpRule,
}

impl Propagation {
    /// The method's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Propagation::Rescale { .. } => "DeepLIFT",
            Propagation::Lrp { .. } => "LRP",
        }
    }
}

/// An evaluation-mode engine for one model's weights.
pub trait Engine: Send + Sync {
    fn classes(&self) -> usize;

    /// `(channels, height, width)` of `features[layer]`.
    fn layer_shape(&self, layer: usize) -> (usize, usize, usize);

    /// Logits of `n` images (`x`: `n × C×H×W` values, channel-major).
    fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>>;

    /// The gradient of each image's target score with respect to the input (`layer` None) or to `features[layer]`,
    /// with the ReLU backward `rule`; for a layer, also its activation. Both `n × (layer shape)`.
    fn gradient(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        score: Score,
        rule: ReluRule,
        layer: Option<usize>,
    ) -> Result<Gradient>;

    /// Each image's relevance map for its target's logit under `how` (`n × input`, image-major). Engines that do
    /// not run the network's graph cannot.
    fn propagate(&self, _x: &[f32], _n: usize, _targets: &[u32], _score: Score, how: &Propagation) -> Result<Vec<f32>> {
        crate::invalid!("{} needs the graph executor (constant weights on the CPU)", how.name())
    }

    /// Logits of `n` images (`x`) whose `features[layer]` is replaced by `activation` (`n ×` the layer's shape,
    /// image-major): the network from the layer on (Ablation-CAM's ablated channels). Engines that do not run the
    /// network's graph cannot.
    fn forward_from(&self, _x: &[f32], _n: usize, _layer: usize, _activation: &[f32]) -> Result<Vec<f32>> {
        crate::invalid!("a forward pass from an edited layer needs the graph executor (constant weights on the CPU)")
    }

    /// Whether [`Engine::propagate`] can run `how` on this model.
    fn can_propagate(&self, _how: &Propagation) -> bool {
        false
    }

    /// The engine as its concrete type (`engine::plan_of` finds the CPU plan a GPU engine is built from).
    fn as_any(&self) -> &dyn std::any::Any;

    /// `features[layer]` of `n` images.
    fn activation(&self, x: &[f32], n: usize, layer: usize) -> Result<Vec<f32>> {
        let g = self.gradient(x, n, &vec![0; n], Score::Logit, ReluRule::Standard, Some(layer))?;
        Ok(g.activation.expect("a layer was asked for"))
    }
}

/// The gradient of each trainable parameter, by tensor: from candle's autograd or from a model's own training
/// step.
#[derive(Default)]
pub struct Gradients(HashMap<TensorId, Tensor>);

impl Gradients {
    pub fn insert(&mut self, param: &Tensor, grad: Tensor) {
        self.0.insert(param.id(), grad);
    }

    pub fn get(&self, param: &Tensor) -> Option<&Tensor> {
        self.0.get(&param.id())
    }
}

impl From<GradStore> for Gradients {
    fn from(store: GradStore) -> Self {
        Gradients(store.get_ids().filter_map(|&id| Some((id, store.get_id(id)?.clone()))).collect())
    }
}
