//! Attribution methods: each answers "which input pixels made the model output this class?" with a map of the
//! input's shape. All of them fulfil one contract, [`Attribution`]; what they share — back-propagating a class score
//! to the input or to an intermediate layer under a ReLU rule — exists once, in [`input_gradient`] and
//! [`layer_gradient`].

mod baselines;
mod estimator;
mod explanation;
mod gradient;
mod integrated_gradients;
mod layer_maps;
mod noise_tunnel;
mod resize;

/// The class score a map explains (defined with the graph, at the bottom of the crate).
pub use crate::graph::Score;
pub use baselines::{RandomMap, Sobel};
pub use estimator::Estimator;
pub use explanation::{limits, Explanation, Job};
pub use gradient::{InputXGradient, ModifiedGradient};
pub use integrated_gradients::{IntegralSums, IntegratedGradients, Riemann};
pub use layer_maps::{Cam, ConvOutput, GradCam, GuidedGradCam};
pub use noise_tunnel::{normal_draw, standard_normal, Ensemble, EnsembleSums, NoiseTunnel};
pub use resize::{resize, Interpolation};

use crate::models::Classifier;
use crate::nn::Pass;
use crate::ops::ReluRule;
use crate::{Error, Result};
use candle_core::{Tensor, Var, D};
use serde::{Deserialize, Serialize};

/// An attribution method: for an input batch `N×C×H×W` and one target class per image, a map of the input's
/// shape.
pub trait Attribution {
    fn name(&self) -> String;

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor>;
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

/// `features[layer]` and ∂S/∂features[layer]. The backward pass stops at the layer: nothing is computed for the
/// input.
pub fn layer_gradient(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    rule: ReluRule,
    layer: usize,
) -> Result<(Tensor, Tensor)> {
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
    if targets.len() != n {
        crate::invalid!("{} targets for {n} images", targets.len());
    }
    let classes = model.spec().dataset.num_classes() as u32;
    if let Some(t) = targets.iter().find(|&&t| t >= classes) {
        crate::invalid!("target class {t} is outside 0..{classes}");
    }
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

/// The softmax class probabilities of each image (evaluation mode).
pub fn probabilities(model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(&crate::models::eval_logits(model, x)?, D::Minus1)?)
}

/// The predicted class of each image (evaluation mode).
pub fn predict(model: &dyn Classifier, x: &Tensor) -> Result<Vec<u32>> {
    Ok(crate::models::eval_logits(model, x)?.argmax(D::Minus1)?.to_vec1::<u32>()?)
}

/// The method names of the CLI and the papers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Method {
    Vbp,
    Ib,
    #[cfg_attr(feature = "clap", value(name = "deconvnet"))]
    DeconvNet,
    Gb,
    Ig,
    Gc,
    Gbgc,
    Cam,
    Co,
    Random,
    Sobel,
}

impl Method {
    pub const ALL: [Method; 11] = [
        Method::Vbp,
        Method::Ib,
        Method::DeconvNet,
        Method::Gb,
        Method::Ig,
        Method::Gc,
        Method::Gbgc,
        Method::Cam,
        Method::Co,
        Method::Random,
        Method::Sobel,
    ];

    /// The id the CLI, the web page and result files use (`vbp`, `deconvnet`, `gbgc`, …).
    pub fn id(self) -> &'static str {
        match self {
            Method::Vbp => "vbp",
            Method::Ib => "ib",
            Method::DeconvNet => "deconvnet",
            Method::Gb => "gb",
            Method::Ig => "ig",
            Method::Gc => "gc",
            Method::Gbgc => "gbgc",
            Method::Cam => "cam",
            Method::Co => "co",
            Method::Random => "random",
            Method::Sobel => "sobel",
        }
    }

    /// The ids of [`Method::ALL`], for command-line value lists.
    pub const IDS: [&'static str; 11] =
        ["vbp", "ib", "deconvnet", "gb", "ig", "gc", "gbgc", "cam", "co", "random", "sobel"];

    /// An id, case-insensitive, ignoring `-` and `_`; `deconv` and `gradcam` are accepted too.
    pub fn parse(s: &str) -> Result<Self> {
        let key = s.to_ascii_lowercase().replace(['-', '_'], "");
        let alias = match key.as_str() {
            "deconv" => "deconvnet",
            "gradcam" => "gc",
            other => other,
        };
        Method::ALL.into_iter().find(|m| m.id() == alias).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown method '{s}' (expected one of {})", Method::IDS.join(", ")))
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::Vbp => "VBP",
            Method::Ib => "IB",
            Method::DeconvNet => "DeconvNet",
            Method::Gb => "GB",
            Method::Ig => "IG",
            Method::Gc => "GC",
            Method::Gbgc => "GB-GC",
            Method::Cam => "CAM",
            Method::Co => "CO",
            Method::Random => "Random",
            Method::Sobel => "Sobel",
        }
    }
}

/// Settings shared by the methods that need them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// IG: number of steps and rule.
    pub steps: usize,
    pub riemann: Riemann,
    /// GC, GB-GC, CO: `features[layer]` (default: the model's own choice).
    pub layer: Option<usize>,
    /// Images per internal batch (IG steps and ensemble samples are batched).
    pub batch: usize,
    /// Random: seed.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { steps: 50, riemann: Riemann::Trapezoid, layer: None, batch: 128, seed: 0 }
    }
}

/// The method `m` configured by `s`, for `model` (layer defaults depend on the model).
pub fn method(m: Method, s: &Settings, model: &dyn Classifier) -> Box<dyn Attribution> {
    let gc_layer = s.layer.unwrap_or(model.default_gradcam_layer());
    let last = s.layer.unwrap_or(model.last_feature_index());
    match m {
        Method::Vbp => Box::new(ModifiedGradient::new(ReluRule::Standard)),
        Method::Ib => Box::new(InputXGradient),
        Method::DeconvNet => Box::new(ModifiedGradient::new(ReluRule::Deconv)),
        Method::Gb => Box::new(ModifiedGradient::new(ReluRule::Guided)),
        Method::Ig => Box::new(IntegratedGradients { steps: s.steps, riemann: s.riemann, batch: s.batch }),
        Method::Gc => Box::new(GradCam { layer: gc_layer }),
        Method::Gbgc => Box::new(GuidedGradCam { layer: gc_layer, interpolation: Interpolation::Nearest }),
        Method::Cam => Box::new(Cam),
        Method::Co => Box::new(ConvOutput { layer: last }),
        Method::Random => Box::new(RandomMap { seed: s.seed }),
        Method::Sobel => Box::new(Sobel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod id_tests {
    use super::Method;

    #[test]
    fn ids_round_trip_and_match_the_list_and_serde() {
        for (m, id) in Method::ALL.into_iter().zip(Method::IDS) {
            assert_eq!(m.id(), id);
            assert_eq!(Method::parse(id).unwrap(), m);
            assert_eq!(Method::parse(&id.to_uppercase()).unwrap(), m);
            assert_eq!(serde_json::to_value(m).unwrap(), id, "result files spell methods by their id");
        }
        assert_eq!(Method::parse("Grad-CAM").unwrap(), Method::Gc);
        assert!(Method::parse("lrp").is_err());
    }
}
