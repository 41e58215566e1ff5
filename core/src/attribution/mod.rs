//! Attribution methods: each answers "which input pixels made the model output this class?" with a map of the
//! input's shape. All of them fulfil one contract, [`Attribution`]; each is a file in `methods/` named after it,
//! listed once in the [`registry`]. What they share — back-propagating a class score to the input or to an
//! intermediate layer under a ReLU rule — exists once, in [`input_gradient`] and [`layer_gradient`].

pub mod class_activation;
mod estimator;
mod explanation;
pub mod methods;
mod noise_tunnel;
pub mod perturbation;
pub mod registry;
mod resize;
mod superpixels;

/// The class score a map explains (defined with the graph, at the bottom of the crate).
pub use crate::graph::Score;
pub use estimator::Estimator;
pub use explanation::{limits, Explanation, Job};
pub use methods::cam::Cam;
pub use methods::conv_output::ConvOutput;
pub use methods::grad_cam::GradCam;
pub use methods::guided_grad_cam::GuidedGradCam;
pub use methods::input_x_gradient::InputXGradient;
pub use methods::integrated_gradients::{IntegralSums, IntegratedGradients, Riemann};
pub use methods::random_map::RandomMap;
pub use methods::sobel::Sobel;
pub use methods::vanilla_gradient::ModifiedGradient;
pub(crate) use noise_tunnel::samples_per_chunk;
pub use noise_tunnel::{normal_draw, standard_normal, Ensemble, EnsembleSums, NoiseTunnel};
pub use registry::{Method, Params, Settings};
pub use resize::{resize, to_input, Interpolation};

use crate::models::Classifier;
use crate::nn::Pass;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::{Tensor, Var, D};

/// An attribution method: for an input batch `N×C×H×W` and one target class per image, a map of the input's
/// shape.
pub trait Attribution {
    fn name(&self) -> String;

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor>;

    /// Model inputs per image in one call (IG: its steps), so that callers can bound their batches.
    fn inputs_per_image(&self) -> usize {
        1
    }

    /// A path integral over scaled inputs, which a [`Job`] runs a few steps at a time.
    fn integral(&self) -> Option<&IntegratedGradients> {
        None
    }

    /// Perturbed copies of the input scored by forward passes, which a [`Job`] runs a batch at a time.
    fn perturbation(&self) -> Option<&dyn perturbation::Perturbation> {
        None
    }
}

/// ∂S/∂x: the gradient of each image's target score with respect to the input, with the ReLU backward `rule`.
pub fn input_gradient(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    rule: ReluRule,
) -> Result<Tensor> {
    if let Some(engine) = model.engine() {
        let n = x.dim(0)?;
        let g = engine.gradient(&x.flatten_all()?.to_vec1::<f32>()?, n, targets, score, rule, None)?;
        return Ok(Tensor::from_vec(g.grad, x.shape(), x.device())?);
    }
    autograd_input_gradient(model, x, targets, score, rule)
}

/// [`input_gradient`] through candle's autograd (models without an engine, and the engine's tests).
pub fn autograd_input_gradient(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    rule: ReluRule,
) -> Result<Tensor> {
    let input = Var::from_tensor(x)?;
    let (scores, _) = target_scores(model, input.as_tensor(), targets, score, rule, None)?;
    let grads = scores.sum_all()?.backward()?;
    Ok(grads.get(&input).cloned().map(Ok).unwrap_or_else(|| x.zeros_like())?)
}

/// Each image's relevance map under `how` (DeepLIFT, …), from the engine that runs the model's graph.
pub fn propagate(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    how: &crate::graph::Propagation,
) -> Result<Tensor> {
    let Some(engine) = model.propagator() else {
        crate::invalid!("{} needs the graph executor (constant weights on the CPU)", how.name());
    };
    let n = x.dim(0)?;
    let map = engine.propagate(&x.flatten_all()?.to_vec1::<f32>()?, n, targets, score, how)?;
    Ok(Tensor::from_vec(map, x.shape(), x.device())?)
}

/// `features[layer]` and `∂S/∂features[layer]`. The backward pass stops at the layer: nothing is computed for the
/// input.
pub fn layer_gradient(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    rule: ReluRule,
    layer: usize,
) -> Result<(Tensor, Tensor)> {
    if layer >= model.tap_points() {
        crate::invalid!("layer {layer} does not exist (the model has features 0..{})", model.tap_points());
    }
    if let Some(engine) = model.engine() {
        let n = x.dim(0)?;
        let g = engine.gradient(&x.flatten_all()?.to_vec1::<f32>()?, n, targets, score, rule, Some(layer))?;
        let (c, h, w) = engine.layer_shape(layer);
        let activation = g.activation.expect("a layer was asked for");
        return Ok((
            Tensor::from_vec(activation, (n, c, h, w), x.device())?,
            Tensor::from_vec(g.grad, (n, c, h, w), x.device())?,
        ));
    }
    autograd_layer_gradient(model, x, targets, score, rule, layer)
}

/// [`layer_gradient`] through candle's autograd.
pub fn autograd_layer_gradient(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    rule: ReluRule,
    layer: usize,
) -> Result<(Tensor, Tensor)> {
    let (scores, tapped) = target_scores(model, x, targets, score, rule, Some(layer))?;
    let tapped = tapped.expect("a tapped layer was asked for");
    let grads = scores.sum_all()?.backward()?;
    let grad = grads.get(&tapped.probe).cloned().map(Ok).unwrap_or_else(|| tapped.activation.zeros_like())?;
    Ok((tapped.activation, grad))
}

/// The score of each image's target class (validated), and the tapped layer when asked for.
fn target_scores(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    rule: ReluRule,
    layer: Option<usize>,
) -> Result<(Tensor, Option<crate::models::Tapped>)> {
    let n = x.dim(0)?;
    check_targets(model, n, targets)?;
    if let Some(l) = layer.filter(|&l| l >= model.tap_points()) {
        crate::invalid!("layer {l} does not exist (the model has features 0..{})", model.tap_points());
    }
    let (logits, tapped) = model.forward_tapped(x, &Pass { train: false, relu: rule }, layer)?;
    let out = match score {
        Score::Logit => logits,
        Score::Prob => candle_nn::ops::softmax(&logits, D::Minus1)?,
    };
    let idx = Tensor::from_slice(targets, (n, 1), x.device())?;
    Ok((out.gather(&idx, 1)?.squeeze(1)?, tapped))
}

/// A clear error unless there is one target per image (`n`), each a class of `model`.
pub fn check_targets(model: &dyn Classifier, n: usize, targets: &[u32]) -> Result<()> {
    if targets.len() != n {
        crate::invalid!("{} targets for {n} images", targets.len());
    }
    let classes = model.spec().dataset.num_classes() as u32;
    if let Some(t) = targets.iter().find(|&&t| t >= classes) {
        crate::invalid!("target class {t} is outside 0..{classes}");
    }
    Ok(())
}

/// The softmax class probabilities of each image (evaluation mode).
pub fn probabilities(model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(&crate::models::eval_logits(model, x)?, D::Minus1)?)
}

/// The predicted class of each image (evaluation mode).
pub fn predict(model: &dyn Classifier, x: &Tensor) -> Result<Vec<u32>> {
    Ok(crate::models::eval_logits(model, x)?.argmax(D::Minus1)?.to_vec1::<u32>()?)
}

/// `features[layer]` of each image (evaluation mode), from the engine when the model has one.
pub fn layer_activation(model: &dyn Classifier, x: &Tensor, layer: usize) -> Result<Tensor> {
    if layer >= model.tap_points() {
        crate::invalid!("layer {layer} does not exist (the model has features 0..{})", model.tap_points());
    }
    if let Some(engine) = model.engine() {
        let n = x.dim(0)?;
        let (c, h, w) = engine.layer_shape(layer);
        return Ok(Tensor::from_vec(
            engine.activation(&x.flatten_all()?.to_vec1::<f32>()?, n, layer)?,
            (n, c, h, w),
            x.device(),
        )?);
    }
    let (_, tapped) = model.forward_tapped(x, &Pass::EVAL, Some(layer))?;
    Ok(tapped.expect("a tapped layer was asked for").activation)
}

/// The method `m` configured by `s`, for `model` (layer defaults depend on the model).
pub fn method(m: Method, s: &Settings, model: &dyn Classifier) -> Result<Box<dyn Attribution>> {
    m.build(s, model)
}

#[cfg(test)]
mod tests;
