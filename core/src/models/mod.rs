//! The model zoo. Each architecture is defined once, here, and used by training, the CLI and the browser.

pub(crate) mod cbam;
mod ran;
pub(crate) mod simple_cnn;
mod warn;

pub use cbam::{cbam, Cbam};
pub use ran::{ran, Ran};
pub use simple_cnn::{simple_cnn, SimpleCnn};
pub use warn::{warn, Warn};

use crate::data::DatasetKind;
use crate::nn::Pass;
use crate::{Error, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// The architectures whitebox defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Arch {
    SimpleCnn,
    Cam,
    Cbam,
    /// Residual Attention Network, depth 56.
    Ran,
    /// Residual Attention Network, depth 92.
    #[cfg_attr(feature = "clap", value(name = "ran-92"))]
    Ran92,
    /// Wide ResNet 28-4 with attention (Attend and Rectify).
    Warn,
}

impl Arch {
    /// The small models, cheap enough for every test and the browser demo.
    pub const SMALL: [Arch; 3] = [Arch::SimpleCnn, Arch::Cam, Arch::Cbam];
    /// Every architecture.
    pub const ALL: [Arch; 6] = [Arch::SimpleCnn, Arch::Cam, Arch::Cbam, Arch::Ran, Arch::Ran92, Arch::Warn];

    pub fn name(self) -> &'static str {
        match self {
            Arch::SimpleCnn => "simple-cnn",
            Arch::Cam => "cam",
            Arch::Cbam => "cbam",
            Arch::Ran => "ran",
            Arch::Ran92 => "ran-92",
            Arch::Warn => "warn",
        }
    }

    /// A short name for legends: SimpleCNN, CAM, CBAM, RAN-56, RAN-92, WARN.
    pub fn label(self) -> &'static str {
        match self {
            Arch::SimpleCnn => "SimpleCNN",
            Arch::Cam => "CAM",
            Arch::Cbam => "CBAM",
            Arch::Ran => "RAN-56",
            Arch::Ran92 => "RAN-92",
            Arch::Warn => "WARN",
        }
    }

    /// The seed's name for the architecture, as in its result tables.
    pub fn title(self) -> &'static str {
        match self {
            Arch::SimpleCnn => "Simple CNN",
            Arch::Cam => "Simple CNN + CAM",
            Arch::Cbam => "Simple CNN + CBAM",
            Arch::Ran => "RAN",
            Arch::Ran92 => "RAN-92",
            Arch::Warn => "WARN",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "simple-cnn" | "simplecnn" | "cnn" => Ok(Arch::SimpleCnn),
            "cam" => Ok(Arch::Cam),
            "cbam" => Ok(Arch::Cbam),
            "ran" | "ran-56" | "ran56" => Ok(Arch::Ran),
            "ran-92" | "ran92" => Ok(Arch::Ran92),
            "warn" => Ok(Arch::Warn),
            other => Err(Error::InvalidArgument(format!(
                "unknown model '{other}' (expected simple-cnn, cam, cbam, ran, ran-92 or warn)"
            ))),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An architecture for a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub dataset: DatasetKind,
}

/// An intermediate activation captured during a forward pass, with the zero "probe" variable that was added to it:
/// the gradient of any output with respect to `probe` is its gradient with respect to the activation.
#[derive(Clone, Debug)]
pub struct Tapped {
    pub activation: Tensor,
    pub probe: Var,
}

/// An image classifier: input batch `N×C×H×W` (normalised) → logits `N×classes`.
pub trait Classifier: Send + Sync {
    fn spec(&self) -> ModelSpec;

    /// The intermediate outputs that can be tapped (`--layer k`), by index: SimpleCNN's are the seed's `features[k]`.
    fn tap_names(&self) -> Vec<String>;

    /// Number of intermediate outputs that can be tapped: `0..tap_points()`.
    fn tap_points(&self) -> usize {
        self.tap_names().len()
    }

    /// Index of the last feature map (the input of the classifier head): CAM and ConvOutput use it.
    fn last_feature_index(&self) -> usize;

    /// Where Grad-CAM looks by default (the seed's choice: the last convolution's output, `features[8]`).
    fn default_gradcam_layer(&self) -> usize;

    /// The class-activation-mapping head (`classes × channels` weight and bias), for models that classify with one.
    fn cam_head(&self) -> Option<&crate::nn::Linear> {
        None
    }

    /// The evaluation-mode engine for this model's weights, when it has one (CPU, constant weights, supported
    /// layers); the attribution methods use it instead of autograd.
    fn engine(&self) -> Option<&dyn crate::graph::Engine> {
        None
    }

    /// The engine that runs this model's graph, for the methods that send relevance back by rules of their own
    /// (DeepLIFT; [`crate::graph::Propagation`]). By default the evaluation engine.
    fn propagator(&self) -> Option<&dyn crate::graph::Engine> {
        self.engine()
    }

    /// The layers drawn in the per-layer Grad-CAM figure, with their names.
    fn layer_names(&self) -> Vec<(usize, String)>;

    /// The model's own attention maps for `x` (evaluation mode), one `N×H×W` tensor per map, with its name: RAN's
    /// soft masks per module, WARN's attention heads. Empty for models without attention maps.
    fn attention_maps(&self, _x: &Tensor) -> candle_core::Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// Training-mode logits and the loss to minimise for `labels`: cross-entropy, plus the model's own
    /// regularisation where it has one.
    fn training_loss(&self, x: &Tensor, labels: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let logits = self.forward(x, &Pass::TRAIN)?;
        let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
        Ok((logits, loss))
    }

    /// One training step's forward and backward pass for `labels`: the loss of [`Classifier::training_loss`] and
    /// the gradient of every trainable parameter. Also updates BatchNorm running statistics, as a training-mode
    /// forward pass does. By default through candle's autograd ([`autograd_step`]); models with a faster exact
    /// path use it.
    fn training_step(&self, x: &Tensor, labels: &Tensor) -> Result<TrainingStep> {
        autograd_step(self, x, labels)
    }

    /// The logits, and the output of `features[tap]` when asked for.
    fn forward_tapped(
        &self,
        x: &Tensor,
        pass: &Pass,
        tap: Option<usize>,
    ) -> candle_core::Result<(Tensor, Option<Tapped>)>;

    fn forward(&self, x: &Tensor, pass: &Pass) -> candle_core::Result<Tensor> {
        Ok(self.forward_tapped(x, pass, None)?.0)
    }
}

/// What one training step computed.
pub struct TrainingStep {
    /// Training-mode logits (`N×classes`, no autograd graph).
    pub logits: Tensor,
    pub loss: f32,
    pub grads: crate::graph::Gradients,
}

/// [`Classifier::training_step`] through candle's autograd.
pub fn autograd_step<M: Classifier + ?Sized>(model: &M, x: &Tensor, labels: &Tensor) -> Result<TrainingStep> {
    let (logits, loss) = model.training_loss(x, labels)?;
    let grads = loss.backward()?;
    Ok(TrainingStep { logits: logits.detach(), loss: loss.to_scalar::<f32>()?, grads: grads.into() })
}

/// When `wanted`, adds a zero probe variable to the activation `x` and records both in `tapped` (the gradient with
/// respect to the probe is the gradient with respect to the activation); otherwise passes `x` through.
pub(crate) fn tap_if(wanted: bool, x: Tensor, tapped: &mut Option<Tapped>) -> candle_core::Result<Tensor> {
    if !wanted {
        return Ok(x);
    }
    let probe = Var::zeros(x.shape(), x.dtype(), x.device())?;
    let x = x.broadcast_add(&probe)?;
    *tapped = Some(Tapped { activation: x.detach(), probe });
    Ok(x)
}

/// Evaluation-mode logits of `x`: through the model's engine when it has one (constant CPU weights), else through
/// candle. Both give the same values (tested with the engine).
pub fn eval_logits(model: &dyn Classifier, x: &Tensor) -> crate::Result<Tensor> {
    match model.engine() {
        Some(engine) => {
            check_input(model.spec(), x)?;
            let n = x.dim(0)?;
            let logits = engine.forward(&x.flatten_all()?.to_vec1::<f32>()?, n)?;
            Ok(Tensor::from_vec(logits, (n, engine.classes()), x.device())?)
        }
        None => Ok(model.forward(x, &crate::nn::Pass::EVAL)?),
    }
}

/// Builds the model of `spec` with parameters from `vb` (a checkpoint, or a seeded initialiser for training).
pub fn build(spec: ModelSpec, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
    Ok(match spec.arch {
        Arch::SimpleCnn | Arch::Cam | Arch::Cbam => Box::new(simple_cnn(spec, vb)?),
        Arch::Ran => Box::new(ran(spec, 56, vb)?),
        Arch::Ran92 => Box::new(ran(spec, 92, vb)?),
        Arch::Warn => Box::new(warn(spec, vb)?),
    })
}

/// The network of `spec` as a graph (see [`crate::graph`]).
pub fn graph(spec: ModelSpec) -> Result<crate::graph::Graph> {
    match spec.arch {
        Arch::SimpleCnn | Arch::Cam | Arch::Cbam => simple_cnn::graph(spec),
        Arch::Ran => ran::graph(spec, 56),
        Arch::Ran92 => ran::graph(spec, 92),
        Arch::Warn => warn::graph(spec),
    }
}

/// [`check_input`] with the crate's error.
pub(crate) fn check_input_shape(spec: ModelSpec, x: &Tensor) -> Result<()> {
    Ok(check_input(spec, x)?)
}

pub(crate) fn check_input(spec: ModelSpec, x: &Tensor) -> candle_core::Result<()> {
    let (c, s) = (spec.dataset.channels(), spec.dataset.side());
    match x.dims() {
        &[_, xc, xh, xw] if (xc, xh, xw) == (c, s, s) => Ok(()),
        d => candle_core::bail!("{} for {} expects N×{c}×{s}×{s} input, got {d:?}", spec.arch, spec.dataset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{init_model, parameter_count};
    use candle_core::{DType, Device};

    /// The seed's table: MNIST 1,284,042 / 1,285,332 / 1,288,561; CIFAR-10 2,202,122 / 2,203,412 / 2,206,641.
    #[test]
    fn parameter_counts_equal_the_seed() -> Result<()> {
        let want = [
            (Arch::SimpleCnn, DatasetKind::Mnist, 1_284_042),
            (Arch::Cam, DatasetKind::Mnist, 1_285_332),
            (Arch::Cbam, DatasetKind::Mnist, 1_288_561),
            (Arch::SimpleCnn, DatasetKind::Cifar10, 2_202_122),
            (Arch::Cam, DatasetKind::Cifar10, 2_203_412),
            (Arch::Cbam, DatasetKind::Cifar10, 2_206_641),
        ];
        for (arch, dataset, n) in want {
            assert_eq!(parameter_count(ModelSpec { arch, dataset })?, n, "{arch} {dataset}");
        }
        Ok(())
    }

    /// The graph's matrix-product count, by hand for SimpleCNN (3×3 convolutions of 32, 64, 128 channels at full,
    /// half and quarter size, then 128·s² → 1024 → 10) and for CAM (the same convolutions, then 128 → 10).
    #[test]
    fn forward_flops_count_every_product() -> Result<()> {
        let convs = |c: usize, s: usize| [(c, 32, s), (32, 64, s / 2), (64, 128, s / 4)];
        for (dataset, c, s) in [(DatasetKind::Mnist, 1, 28), (DatasetKind::Cifar10, 3, 32)] {
            let conv_macs: usize = convs(c, s).iter().map(|&(i, o, side)| o * side * side * i * 9).sum();
            let last = s / 8; // 28 → 14 → 7 → 3, 32 → 16 → 8 → 4
            let simple = conv_macs + 128 * last * last * 1024 + 1024 * 10;
            let cam = conv_macs + 128 * 10;
            for (arch, macs) in [(Arch::SimpleCnn, simple), (Arch::Cam, cam)] {
                let got = graph(ModelSpec { arch, dataset })?.forward_flops();
                assert_eq!(got, 2.0 * macs as f64, "{arch} {dataset}");
            }
        }
        Ok(())
    }

    /// Keys follow the seed's `state_dict`.
    #[test]
    fn keys_follow_the_seed() -> Result<()> {
        let names: Vec<String> =
            crate::params::tensor_shapes(ModelSpec { arch: Arch::Cbam, dataset: DatasetKind::Mnist })?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
        for k in [
            "features.0.weight",
            "features.1.running_mean",
            "features.8.bias",
            "classifier.0.weight",
            "classifier.2.bias",
            "cam_mlp.mlp.0.weight",
            "cbam0.CA.mlp.0.weight",
            "cbam2.CA.mlp.2.bias",
            "cbam1.SA.conv_block.0.weight",
            "cbam1.SA.conv_block.1.running_var",
        ] {
            assert!(names.iter().any(|n| n == k), "missing {k}");
        }
        Ok(())
    }

    /// Batched logits equal per-image logits in evaluation mode, and the input is validated.
    #[test]
    fn batched_equals_unbatched_and_bad_input_errors() -> Result<()> {
        for arch in Arch::SMALL {
            let spec = ModelSpec { arch, dataset: DatasetKind::Cifar10 };
            let (_, model) = init_model(spec, 5, &Device::Cpu)?;
            let x = crate::testing::random(&[3, 3, 32, 32], 9)?;
            let all = model.forward(&x, &Pass::EVAL)?;
            for i in 0..3 {
                let one = model.forward(&x.narrow(0, i, 1)?, &Pass::EVAL)?;
                let d = (one - all.narrow(0, i, 1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-4, "{arch}: {d}");
            }
            let bad = Tensor::zeros((1, 1, 28, 28), DType::F32, &Device::Cpu)?;
            assert!(model.forward(&bad, &Pass::EVAL).unwrap_err().to_string().contains("expects N×3×32×32"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod attention_model_tests {
    use super::*;
    use crate::attribution::{Attribution, GradCam, Score};
    use crate::params::init_model;
    use candle_core::Device;

    /// The models' own attention maps obey their definitions: RAN's soft masks are sigmoids (in (0, 1)), one per
    /// attention module; WARN's heads are softmaxes over space (each sums to 1), four per module. Grad-CAM works at
    /// every named layer.
    #[test]
    fn attention_maps_and_layer_grad_cams() -> crate::Result<()> {
        for (arch, maps_per_image) in [(Arch::Ran, 3), (Arch::Warn, 12)] {
            let spec = ModelSpec { arch, dataset: DatasetKind::Mnist };
            let (_, model) = init_model(spec, 3, &Device::Cpu)?;
            let x = crate::testing::random(&[2, 1, 28, 28], 7)?;
            let maps = model.attention_maps(&x)?;
            assert_eq!(maps.len(), maps_per_image, "{arch}");
            for (name, m) in &maps {
                let v = m.flatten_all()?.to_vec1::<f32>()?;
                match arch {
                    Arch::Ran => assert!(v.iter().all(|&p| p > 0.0 && p < 1.0), "{name}"),
                    _ => {
                        for total in m.flatten_from(1)?.sum(1)?.to_vec1::<f32>()? {
                            assert!((total - 1.0).abs() < 1e-5, "{name}: sums to {total}");
                        }
                    }
                }
            }
            // Grad-CAM keeps the positive part of the weighted activations; over all classes, some must be positive.
            for (layer, name) in model.layer_names() {
                let mut positive = false;
                for target in 0..10 {
                    let gc = GradCam { layer }.attribute(model.as_ref(), &x, &[target, target], Score::Logit)?;
                    let v = gc.flatten_all()?.to_vec1::<f32>()?;
                    assert!(v.iter().all(|a| a.is_finite()), "{arch} {name}");
                    positive |= v.iter().any(|&a| a > 0.0);
                }
                assert!(positive, "{arch} {name}: Grad-CAM is zero for every class");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod folding_tests {
    use super::*;
    use crate::params::init_model;
    use candle_core::{Device, Var};

    /// Folding BatchNorm into the convolution (evaluation mode) changes neither logits nor input gradients: compare
    /// with the unfolded path, which a tap at the convolution's output forces.
    #[test]
    fn folded_batch_norm_equals_the_unfolded_pair() -> candle_core::Result<()> {
        let spec = ModelSpec { arch: Arch::SimpleCnn, dataset: DatasetKind::Mnist };
        let (map, model) = init_model(spec, 2, &Device::Cpu).unwrap();
        // Non-trivial running statistics and affine parameters.
        for (k, v) in map.data().lock().unwrap().iter() {
            if k.contains("features.1") || k.contains("features.5") || k.contains("features.9") {
                let r = crate::testing::random(v.dims(), k.len() as u64)?;
                v.set(&(r.abs()? + 0.5)?)?;
            }
        }
        let x = crate::testing::random(&[3, 1, 28, 28], 4)?;
        let run = |tap: Option<usize>| -> candle_core::Result<(Tensor, Tensor)> {
            let xv = Var::from_tensor(&x)?;
            let (logits, _) = model.forward_tapped(&xv, &Pass::EVAL, tap)?;
            let g = logits.sum_all()?.backward()?;
            Ok((logits.detach(), g.get(&xv).unwrap().clone()))
        };
        let (folded, unfolded) = (run(None)?, run(Some(0))?);
        // Tapping features[0] unfolds only block 0; tapping 8 as well covers block 2.
        let unfolded2 = run(Some(8))?;
        for (a, b) in [(&folded, &unfolded), (&folded, &unfolded2)] {
            assert!(crate::testing::rel_error(&a.0, &b.0, 1.0)? < 1e-5);
            assert!(crate::testing::rel_error(&a.1, &b.1, 1.0)? < 1e-5);
        }
        Ok(())
    }
}
