//! The seed's SimpleCNN family: three blocks of [3×3 conv → BatchNorm → ReLU → 2×2 max-pool] (32, 64, 128
//! channels), then either the fully connected classifier (flatten → 1024 → ReLU → 10) or, for the CAM variant, the
//! class-activation-mapping head of Zhou et al. (2016) (global average pooling → linear 128 → 10). The CBAM variant
//! inserts a CBAM module (Woo et al. 2018) before each BatchNorm.
//!
//! As in the seed, the CAM variant also holds the (unused) classifier and the CBAM variant the (unused) CAM head, so
//! parameter counts and `state_dict` keys match. Unlike the seed, the models return logits: the seed's softmax
//! inside the model, before a cross-entropy loss, was a bug.

use super::{Arch, Classifier, ModelSpec, Tapped, TrainingStep};
use crate::engine::{Layer, Plan};
use crate::graph::{Builder, Conv as GraphConv, Graph, Scope};
use crate::nn::{self, BatchNorm2d, Conv2d, Linear, Pass};
use crate::ops;
use crate::ops::BatchStats;
use crate::train::cnn_step::{Block, Head, Net, Values, Workspace};
use crate::train::Gradients;
use candle_core::{DType, Storage};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

const CHANNELS: [usize; 3] = [32, 64, 128];

#[derive(Clone, Debug)]
pub struct SimpleCnn {
    spec: ModelSpec,
    convs: Vec<Conv2d>,
    bns: Vec<BatchNorm2d>,
    cbams: Vec<super::cbam::Cbam>,
    fc1: Linear,
    fc2: Linear,
    cam_head: Option<Linear>,
    /// The evaluation-mode engine, built on first use for constant weights on the CPU.
    engine: std::sync::OnceLock<Option<Plan>>,
    /// The training step's buffers, kept between steps.
    workspace: std::sync::Arc<std::sync::Mutex<Workspace>>,
}

/// Builds the model of `spec` (SimpleCNN, CAM or CBAM) with parameters from `vb`.
pub fn simple_cnn(spec: ModelSpec, vb: VarBuilder) -> Result<SimpleCnn> {
    // The creation order fixes the seeded initial values (and so the shipped weights' training runs); it equals the
    // seed's `state_dict` order except that each CBAM module comes right after its block's BatchNorm.
    let features = vb.pp("features");
    let mut in_c = spec.dataset.channels();
    let (mut convs, mut bns, mut cbams) = (vec![], vec![], vec![]);
    for (i, &c) in CHANNELS.iter().enumerate() {
        // `features` is a Sequential of [Conv2d, BatchNorm2d, ReLU, MaxPool2d] × 3: indices 4i and 4i + 1.
        convs.push(nn::conv2d(in_c, c, 3, 1, features.pp(4 * i))?);
        bns.push(nn::batch_norm2d(c, features.pp(4 * i + 1))?);
        if spec.arch == Arch::Cbam {
            cbams.push(super::cbam::cbam(c, vb.pp(format!("cbam{i}")))?);
        }
        in_c = c;
    }
    let side = spec.dataset.side() / 8;
    let classifier = vb.pp("classifier");
    let fc1 = nn::linear(CHANNELS[2] * side * side, 1024, classifier.pp(0))?;
    let fc2 = nn::linear(1024, spec.dataset.num_classes(), classifier.pp(2))?;
    let cam_head = match spec.arch {
        Arch::Cam | Arch::Cbam => {
            Some(nn::linear(CHANNELS[2], spec.dataset.num_classes(), vb.pp("cam_mlp").pp("mlp").pp(0))?)
        }
        _ => None,
    };
    Ok(SimpleCnn {
        spec,
        convs,
        bns,
        cbams,
        fc1,
        fc2,
        cam_head,
        engine: std::sync::OnceLock::new(),
        workspace: Default::default(),
    })
}

impl SimpleCnn {
    /// The layers for the evaluation-mode engine: not for weights being trained (variables) or off the CPU.
    fn build_plan(&self) -> Option<Plan> {
        let weight = self.convs[0].weight();
        if weight.is_variable() || !weight.device().is_cpu() {
            return None;
        }
        let flat = |t: &Tensor| {
            t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F32)).and_then(|t| t.to_vec1::<f32>()).ok()
        };
        let mut layers = Vec::new();
        let mut taps = Vec::new();
        for (i, (conv, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            let (c_out, c_in, k, _) = conv.weight().dims4().ok()?;
            if conv.stride() != 1 {
                return None;
            }
            let bias = match conv.bias() {
                Some(b) => flat(b)?,
                None => vec![0.0; c_out],
            };
            layers.push(Layer::Conv { weight: flat(conv.weight())?, bias, c_in, c_out, k, pad: conv.padding() });
            taps.push(layers.len() - 1);
            if let Some(cbam) = self.cbams.get(i) {
                layers.push(Layer::Cbam(Box::new(cbam.engine_params()?)));
            }
            let (scale, shift) = bn.eval_affine().ok()?;
            for layer in [Layer::Affine { scale: flat(&scale)?, shift: flat(&shift)? }, Layer::Relu, Layer::MaxPool2] {
                layers.push(layer);
                taps.push(layers.len() - 1);
            }
        }
        let linear = |l: &Linear| -> Option<Layer> {
            let (out, inp) = l.weight().dims2().ok()?;
            Some(Layer::Linear { weight: flat(l.weight())?, bias: flat(l.bias()?)?, inp, out })
        };
        match self.cam_head() {
            Some(head) => {
                layers.push(Layer::GlobalAvgPool);
                layers.push(linear(head)?);
            }
            None => {
                layers.push(linear(&self.fc1)?);
                layers.push(Layer::Relu);
                layers.push(linear(&self.fc2)?);
            }
        }
        let kind = self.spec.dataset;
        Plan::new((kind.channels(), kind.side(), kind.side()), layers, taps).ok()
    }
}

impl SimpleCnn {
    /// The tensors the training step reads, in the order [`SimpleCnn::step_net`] takes their values: per block the
    /// convolution's weight and bias (when it has one) and the BatchNorm's weight and bias, then the head's weights and
    /// biases.
    fn step_tensors(&self) -> Vec<&Tensor> {
        let mut out = Vec::new();
        for (conv, bn) in self.convs.iter().zip(&self.bns) {
            out.push(conv.weight());
            out.extend(conv.bias());
            out.extend([bn.weight(), bn.bias()]);
        }
        for layer in self.step_head() {
            out.push(layer.weight());
            out.extend(layer.bias());
        }
        out
    }

    /// The linear layers of the head the training step runs.
    fn step_head(&self) -> Vec<&Linear> {
        match self.cam_head() {
            Some(h) => vec![h],
            None => vec![&self.fc1, &self.fc2],
        }
    }

    /// The network of the training step (SimpleCNN and CAM; CBAM has no such step) on `values`, the contents of
    /// [`SimpleCnn::step_tensors`] in order.
    fn step_net<'a>(&self, values: &[&'a [f32]]) -> crate::Result<Net<'a>> {
        let mut values = values.iter().map(|&v| Values::Borrowed(v));
        let mut next =
            || values.next().ok_or_else(|| crate::Error::InvalidArgument("training step: too few parameters".into()));
        let mut blocks = Vec::with_capacity(self.convs.len());
        for (conv, bn) in self.convs.iter().zip(&self.bns) {
            let (c_out, c_in, k, _) = conv.weight().dims4()?;
            let weight = next()?;
            let bias = if conv.bias().is_some() { next()? } else { Values::Owned(vec![0.0; c_out]) };
            let (gamma, beta) = (next()?, next()?);
            blocks.push(Block { weight, bias, gamma, beta, c_in, c_out, k, pad: conv.padding(), eps: bn.eps() as f32 });
        }
        let mut linear = |l: &Linear| -> crate::Result<(Values<'a>, Values<'a>)> {
            let w = next()?;
            let b = if l.bias().is_some() { next()? } else { Values::Owned(vec![0.0; l.weight().dim(0)?]) };
            Ok((w, b))
        };
        let head = match self.cam_head() {
            Some(h) => {
                let (w, b) = linear(h)?;
                Head::Cam { w, b }
            }
            None => {
                let ((w1, b1), (w2, b2)) = (linear(&self.fc1)?, linear(&self.fc2)?);
                Head::Mlp { w1, b1, w2, b2 }
            }
        };
        let kind = self.spec.dataset;
        Ok(Net { blocks, head, input: (kind.channels(), kind.side(), kind.side()), classes: kind.num_classes() })
    }

    /// [`Classifier::training_step`] on the CPU's own buffers (`train/cnn_step.rs`).
    fn buffer_step(&self, x: &Tensor, labels: &Tensor) -> crate::Result<TrainingStep> {
        super::check_input(self.spec, x)?;
        let n = x.dim(0)?;
        let mut workspace = self
            .workspace
            .lock()
            .map_err(|_| crate::Error::InvalidArgument("an earlier training step panicked".into()))?;
        // The parameters are read in place (a read lock on each tensor's storage for the step's duration).
        let tensors = self.step_tensors();
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let values = guards
            .iter()
            .map(|(storage, layout)| match &**storage {
                Storage::Cpu(cpu) => Ok(ops::slice_f32(cpu, layout)?),
                _ => Err(crate::Error::InvalidArgument("training step: parameters must be on the CPU".into())),
            })
            .collect::<crate::Result<Vec<&[f32]>>>()?;
        let step = self.step_net(&values)?.step(
            &x.flatten_all()?.to_vec1::<f32>()?,
            &labels.to_vec1::<u32>()?,
            n,
            &mut workspace,
        )?;
        drop(guards);
        let dev = x.device();
        let mut grads = Gradients::default();
        let mut put = |param: Option<&Tensor>, grad: Vec<f32>| -> crate::Result<()> {
            if let Some(p) = param {
                grads.insert(p, Tensor::from_vec(grad, p.shape(), dev)?);
            }
            Ok(())
        };
        for ((conv, bn), g) in self.convs.iter().zip(&self.bns).zip(step.blocks) {
            put(Some(conv.weight()), g.weight)?;
            put(conv.bias(), g.bias)?;
            put(Some(bn.weight()), g.gamma)?;
            put(Some(bn.bias()), g.beta)?;
            bn.update_running(&BatchStats { mean: g.batch_mean, var: g.batch_var, count: g.count })?;
        }
        let mut head_grads = step.head.into_iter();
        for layer in self.step_head() {
            let (w, b) = (head_grads.next(), head_grads.next());
            put(Some(layer.weight()), w.unwrap_or_default())?;
            put(layer.bias(), b.unwrap_or_default())?;
        }
        let logits = Tensor::from_vec(step.logits, (n, self.spec.dataset.num_classes()), dev)?;
        Ok(TrainingStep { logits, loss: step.loss, grads })
    }
}

impl Classifier for SimpleCnn {
    /// SimpleCNN and CAM on the CPU train through [`SimpleCnn::buffer_step`]; CBAM and other devices through
    /// autograd.
    fn training_step(&self, x: &Tensor, labels: &Tensor) -> crate::Result<TrainingStep> {
        let weight = self.convs[0].weight();
        if self.cbams.is_empty() && x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
            return self.buffer_step(x, labels);
        }
        super::autograd_step(self, x, labels)
    }

    fn engine(&self) -> Option<&dyn crate::engine::Engine> {
        self.engine.get_or_init(|| self.build_plan()).as_ref().map(|p| p as &dyn crate::engine::Engine)
    }

    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn cam_head(&self) -> Option<&Linear> {
        self.cam_head.as_ref().filter(|_| self.spec.arch == Arch::Cam)
    }

    fn last_feature_index(&self) -> usize {
        4 * CHANNELS.len() - 1
    }

    fn default_gradcam_layer(&self) -> usize {
        4 * (CHANNELS.len() - 1)
    }

    fn tap_names(&self) -> Vec<String> {
        (0..CHANNELS.len())
            .flat_map(|b| ["conv", "bn", "relu", "pool"].map(|l| format!("block{} {l}", b + 1)))
            .collect()
    }

    /// Each block's convolution, as the seed's per-layer figure.
    fn layer_names(&self) -> Vec<(usize, String)> {
        (0..CHANNELS.len()).map(|b| (4 * b, format!("GC f{}", 4 * b))).collect()
    }

    fn forward_tapped(&self, x: &Tensor, pass: &Pass, tap: Option<usize>) -> Result<(Tensor, Option<Tapped>)> {
        super::check_input(self.spec, x)?;
        let mut x = x.clone();
        let mut tapped = None;
        // `features[k]` in the seed's numbering: 4i conv, 4i+1 BatchNorm (after CBAM), 4i+2 ReLU, 4i+3 max-pool.
        let mut visit = |k: usize, x: Tensor| super::tap_if(tap == Some(k), x, &mut tapped);
        for i in 0..CHANNELS.len() {
            if !pass.train && self.cbams.is_empty() && tap != Some(4 * i) {
                // Evaluation mode: the BatchNorm folds into the convolution (one op instead of two).
                x = visit(4 * i + 1, self.bns[i].fold_into(&self.convs[i])?.forward(&x)?)?;
            } else {
                x = visit(4 * i, self.convs[i].forward(&x)?)?;
                if let Some(cbam) = self.cbams.get(i) {
                    x = cbam.forward(&x, pass)?;
                }
                x = visit(4 * i + 1, self.bns[i].forward(&x, pass)?)?;
            }
            x = visit(4 * i + 2, pass.relu(&x)?)?;
            x = visit(4 * i + 3, ops::max_pool2x2(&x)?)?;
        }
        let logits = match self.cam_head() {
            Some(head) => head.forward(&nn::global_avg_pool(&x)?)?,
            None => self.fc2.forward(&pass.relu(&self.fc1.forward(&x.flatten_from(1)?)?)?)?,
        };
        Ok((logits, tapped))
    }
}

/// The network of `spec` (SimpleCNN, CAM or CBAM) as a graph, with the candle modules' parameter names and
/// `features[k]` numbering.
pub fn graph(spec: ModelSpec) -> crate::Result<Graph> {
    let kind = spec.dataset;
    let mut g = Builder::new((kind.channels(), kind.side(), kind.side()));
    let features = Scope::root().at("features");
    let mut x = g.input();
    for (i, &c) in CHANNELS.iter().enumerate() {
        let b = i + 1;
        x = g.conv(x, &features.at(4 * i), GraphConv::new(c, 3, 1))?;
        g.tap(x, format!("block{b} conv"));
        if spec.arch == Arch::Cbam {
            x = super::cbam::graph(&mut g, x, &Scope::root().at(format!("cbam{i}")))?;
        }
        x = g.batch_norm(x, &features.at(4 * i + 1))?;
        g.tap(x, format!("block{b} bn"));
        x = g.relu(x);
        g.tap(x, format!("block{b} relu"));
        x = g.max_pool2(x, false)?;
        g.tap(x, format!("block{b} pool"));
    }
    let classes = kind.num_classes();
    let logits = if spec.arch == Arch::Cam {
        let pooled = g.global_avg_pool(x);
        g.linear(pooled, &Scope::root().at("cam_mlp").at("mlp").at(0), classes, true)?
    } else {
        let classifier = Scope::root().at("classifier");
        let hidden = g.linear(x, &classifier.at(0), 1024, true)?;
        let hidden = g.relu(hidden);
        g.linear(hidden, &classifier.at(2), classes, true)?
    };
    Ok(g.finish(logits))
}
