//! The seed's SimpleCNN family: three blocks of [3×3 conv → BatchNorm → ReLU → 2×2 max-pool] (32, 64, 128
//! channels), then either the fully connected classifier (flatten → 1024 → ReLU → 10) or, for the CAM variant, the
//! class-activation-mapping head of Zhou et al. (2016) (global average pooling → linear 128 → 10). The CBAM variant
//! inserts a CBAM module (Woo et al. 2018) before each BatchNorm.
//!
//! As in the seed, the CAM variant also holds the (unused) classifier and the CBAM variant the (unused) CAM head, so
//! parameter counts and `state_dict` keys match. Unlike the seed, the models return logits: the seed's softmax
//! inside the model, before a cross-entropy loss, was a bug.

use super::{Arch, Classifier, ModelSpec, Tapped};
use crate::graph::{Builder, Conv as GraphConv, Graph, Scope};
use crate::nn::{self, BatchNorm2d, Conv2d, Linear, Pass};
use crate::ops;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

const CHANNELS: [usize; 3] = [32, 64, 128];

#[derive(Clone, Debug)]
pub struct SimpleCnn {
    pub(crate) spec: ModelSpec,
    pub(crate) convs: Vec<Conv2d>,
    pub(crate) bns: Vec<BatchNorm2d>,
    pub(crate) cbams: Vec<super::cbam::Cbam>,
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
    cam_head: Option<Linear>,
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
    Ok(SimpleCnn { spec, convs, bns, cbams, fc1, fc2, cam_head })
}

impl Classifier for SimpleCnn {
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
