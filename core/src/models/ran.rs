//! Residual Attention Network (Wang, Jiang, Qian, Yang, Li, Zhang, Wang & Tang 2017, "Residual Attention Network
//! for Image Classification"), as the seed defines it for 28×28 and 32×32 inputs: a 5×5 stem convolution, stages of
//! bottleneck residual units and attention modules, three 2048-channel residual units and global average pooling.
//!
//! An attention module computes a trunk `T` (two residual units) and a soft mask `M` (max-pool down, residual
//! units, bilinear up-sampling with skip connections back to the recorded sizes, two 1×1 convolutions, sigmoid),
//! and outputs `(1 + M) · T`. As in the seed, the soft-mask branch applies *one* residual unit (shared weights)
//! everywhere it needs one, and its 1×1 convolution twice; the projection shortcut of every residual unit exists
//! (and counts as parameters) even where the identity is used. The model returns logits (the seed's softmax inside
//! the model, before a cross-entropy loss, is left out, as for SimpleCNN).

use super::{check_input, Classifier, ModelSpec, Tapped};
use crate::graph::{Builder, Conv as GraphConv, Graph, MapOf, NodeId, Scope};
use crate::nn::{self, BatchNorm2d, Conv2d, ConvOptions, Linear, Pass};
use crate::ops;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Bottleneck residual unit: 1×1 → 3×3 (stride) → 1×1 convolutions with BatchNorm and ReLU, plus a shortcut that is
/// projected (1×1 convolution with bias, BatchNorm) when the stride or the channel count changes.
#[derive(Clone, Debug)]
struct ResidualUnit {
    convs: [Conv2d; 3],
    bns: [BatchNorm2d; 3],
    downsample: (Conv2d, BatchNorm2d),
    project: bool,
}

/// Keys `conv1..3`, `bn1..3`, `downsample.0`, `downsample.1`.
fn residual_unit(in_c: usize, out_c: usize, stride: usize, vb: &VarBuilder) -> Result<ResidualUnit> {
    let mid = out_c / 4;
    let plain = ConvOptions { bias: false, ..ConvOptions::default() };
    // Created in the seed's registration order (conv1, bn1, conv2, …), which fixes the `state_dict` order.
    let conv1 = nn::conv2d_with(in_c, mid, 1, plain, vb.pp("conv1"))?;
    let bn1 = nn::batch_norm2d(mid, vb.pp("bn1"))?;
    let conv2 = nn::conv2d_with(mid, mid, 3, ConvOptions { stride, padding: 1, ..plain }, vb.pp("conv2"))?;
    let bn2 = nn::batch_norm2d(mid, vb.pp("bn2"))?;
    let conv3 = nn::conv2d_with(mid, out_c, 1, plain, vb.pp("conv3"))?;
    let bn3 = nn::batch_norm2d(out_c, vb.pp("bn3"))?;
    let down = vb.pp("downsample");
    let down_conv = nn::conv2d_with(in_c, out_c, 1, ConvOptions { stride, ..ConvOptions::default() }, down.pp(0))?;
    Ok(ResidualUnit {
        convs: [conv1, conv2, conv3],
        bns: [bn1, bn2, bn3],
        downsample: (down_conv, nn::batch_norm2d(out_c, down.pp(1))?),
        project: stride != 1 || in_c != out_c,
    })
}

impl ResidualUnit {
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let mut out = x.clone();
        for (i, (conv, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            out = bn.forward(&conv.forward(&out)?, pass)?;
            if i < 2 {
                out = pass.relu(&out)?;
            }
        }
        let identity =
            if self.project { self.downsample.1.forward(&self.downsample.0.forward(x)?, pass)? } else { x.clone() };
        pass.relu(&(out + identity)?)
    }
}

/// The soft-mask branch: `skips` down-sampling steps with a skip connection each, a middle, and as many
/// up-sampling steps back to `sizes` (largest first), then the 1×1 convolution (twice) and a sigmoid.
#[derive(Clone, Debug)]
struct SoftMaskBranch {
    unit: ResidualUnit,
    conv: Conv2d,
    sizes: Vec<usize>,
    skips: usize,
}

/// The seed's `r`: residual units per step of the soft-mask branch (the middle has `2r`).
const R: usize = 1;

impl SoftMaskBranch {
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let units = |mut out: Tensor, n: usize| -> Result<Tensor> {
            for _ in 0..n {
                out = self.unit.forward(&out, pass)?;
            }
            Ok(out)
        };
        let mut out = x.clone();
        let mut skips = Vec::with_capacity(self.skips);
        for _ in 0..self.skips {
            out = units(ops::max_pool2x2_ceil(&out)?, R)?;
            skips.push(out.clone());
        }
        out = units(ops::max_pool2x2_ceil(&out)?, 2 * R)?;
        for (i, skip) in skips.iter().rev().enumerate() {
            let s = self.sizes[self.skips - i];
            out = units((ops::upsample_bilinear_aligned(&out, (s, s))? + skip)?, R)?;
        }
        out = ops::upsample_bilinear_aligned(&out, (self.sizes[0], self.sizes[0]))?;
        let out = self.conv.forward(&self.conv.forward(&out)?)?;
        candle_nn::ops::sigmoid(&out)
    }
}

/// Attention module: a residual unit in, trunk and soft-mask branches, `(1 + M) · T`, a residual unit out.
#[derive(Clone, Debug)]
struct AttentionModule {
    unit_in: ResidualUnit,
    trunk: [ResidualUnit; 2],
    mask: SoftMaskBranch,
    unit_out: ResidualUnit,
}

/// Keys `residual_unit_in`, `trunk_b.0`, `trunk_b.1`, `softmask_b.residual_unit`, `softmask_b.conv`,
/// `residual_unit_out`.
fn attention_module(
    in_c: usize,
    out_c: usize,
    sizes: &[usize],
    skips: usize,
    vb: &VarBuilder,
) -> Result<AttentionModule> {
    let mask = vb.pp("softmask_b");
    let plain = ConvOptions { bias: false, ..ConvOptions::default() };
    Ok(AttentionModule {
        unit_in: residual_unit(in_c, out_c, 1, &vb.pp("residual_unit_in"))?,
        trunk: [
            residual_unit(out_c, out_c, 1, &vb.pp("trunk_b").pp(0))?,
            residual_unit(out_c, out_c, 1, &vb.pp("trunk_b").pp(1))?,
        ],
        mask: SoftMaskBranch {
            unit: residual_unit(out_c, out_c, 1, &mask.pp("residual_unit"))?,
            conv: nn::conv2d_with(out_c, out_c, 1, plain, mask.pp("conv"))?,
            sizes: sizes.to_vec(),
            skips,
        },
        unit_out: residual_unit(out_c, out_c, 1, &vb.pp("residual_unit_out"))?,
    })
}

impl AttentionModule {
    /// The output and the soft mask `M`.
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<(Tensor, Tensor)> {
        let x = self.unit_in.forward(x, pass)?;
        let trunk = self.trunk[1].forward(&self.trunk[0].forward(&x, pass)?, pass)?;
        let mask = self.mask.forward(&x, pass)?;
        let out = ((mask.clone() + 1.0)? * trunk)?;
        Ok((self.unit_out.forward(&out, pass)?, mask))
    }
}

// A network holds a few dozen stages, built once: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Stage {
    Unit(ResidualUnit),
    Attention(AttentionModule),
}

/// A Residual Attention Network.
#[derive(Clone, Debug)]
pub struct Ran {
    spec: ModelSpec,
    stem: (Conv2d, BatchNorm2d),
    stages: Vec<(String, Stage)>,
    tail: Vec<ResidualUnit>,
    classifier: Linear,
}

/// Builds RAN-`depth` (56 or 92) for `spec`'s data set, with the seed's `state_dict` keys (`conv.0`, `conv.1`,
/// `stages.k`, `avgpool.0..2`, `classifier.0`).
pub fn ran(spec: ModelSpec, depth: usize, vb: VarBuilder) -> Result<Ran> {
    let side = spec.dataset.side();
    // The up-sampling sizes, rounded up: 28 → 14, 7, 4; 32 → 16, 8, 4.
    let sizes: Vec<usize> = [2, 4, 8].iter().map(|d| side.div_ceil(*d)).collect();
    let conv = vb.pp("conv");
    let stem = (nn::conv2d(spec.dataset.channels(), 64, 5, 2, conv.pp(0))?, nn::batch_norm2d(64, conv.pp(1))?);
    let vs = vb.pp("stages");
    let mut stages = Vec::new();
    for (k, (name, s)) in layout(depth).map_err(candle_core::Error::wrap)?.into_iter().enumerate() {
        let v = vs.pp(k);
        stages.push(match s {
            StageSpec::Unit(i, o, stride) => (name, Stage::Unit(residual_unit(i, o, stride, &v)?)),
            StageSpec::Att(i, o, first_size, skips) => {
                (name, Stage::Attention(attention_module(i, o, &sizes[first_size..], skips, &v)?))
            }
        });
    }
    let va = vb.pp("avgpool");
    let tail = vec![
        residual_unit(512, 2048, 1, &va.pp(0))?,
        residual_unit(2048, 2048, 1, &va.pp(1))?,
        residual_unit(2048, 2048, 1, &va.pp(2))?,
    ];
    let classifier = nn::linear(2048, spec.dataset.num_classes(), vb.pp("classifier").pp(0))?;
    Ok(Ran { spec, stem, stages, tail, classifier })
}

/// One entry of the stage table: a residual unit (in, out, stride) or an attention module (in, out, index of its
/// largest up-sampling size, skip connections).
#[derive(Clone, Copy, Debug)]
enum StageSpec {
    Unit(usize, usize, usize),
    Att(usize, usize, usize, usize),
}

/// The stages of RAN-`depth` (56 or 92) with their names (`ResUnit1`, `Stage1`, `Stage2.1`, …).
fn layout(depth: usize) -> crate::Result<Vec<(String, StageSpec)>> {
    use StageSpec::*;
    let layout: &[StageSpec] = match depth {
        56 => &[
            Unit(64, 256, 1),
            Att(256, 128, 0, 2),
            Unit(128, 512, 2),
            Att(512, 256, 1, 1),
            Unit(256, 1024, 2),
            Att(1024, 512, 2, 0),
        ],
        92 => &[
            Unit(64, 256, 1),
            Att(256, 128, 0, 2),
            Unit(128, 512, 2),
            Att(512, 256, 1, 1),
            Att(256, 256, 1, 1),
            Unit(256, 1024, 2),
            Att(1024, 512, 2, 0),
            Att(512, 512, 2, 0),
            Att(512, 512, 2, 0),
        ],
        other => crate::invalid!("RAN is defined for depth 56 or 92, not {other}"),
    };
    let (mut unit_no, mut att_no) = (0, 0);
    Ok(layout
        .iter()
        .map(|&s| {
            let name = match s {
                Unit(..) => {
                    unit_no += 1;
                    att_no = 0;
                    format!("ResUnit{unit_no}")
                }
                Att(_, _, first_size, _) => {
                    att_no += 1;
                    // Stages with several attention modules (depth 92) number them: Stage2.1, Stage2.2.
                    let several =
                        layout.iter().filter(|s| matches!(s, Att(_, _, f, _) if *f == first_size)).count() > 1;
                    if several {
                        format!("Stage{unit_no}.{att_no}")
                    } else {
                        format!("Stage{unit_no}")
                    }
                }
            };
            (name, s)
        })
        .collect())
}

impl Ran {
    /// The forward pass, tapping `features[tap]` and collecting the soft masks when `masks` is given.
    /// Features: 0 stem, 1 max-pool, 2.. the stages, then the three tail units.
    fn run(
        &self,
        x: &Tensor,
        pass: &Pass,
        tap: Option<usize>,
        mut masks: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<(Tensor, Option<Tapped>)> {
        check_input(self.spec, x)?;
        let mut tapped = None;
        let mut visit = |k: usize, x: Tensor| super::tap_if(tap == Some(k), x, &mut tapped);
        let mut out = visit(0, pass.relu(&self.stem.1.forward(&self.stem.0.forward(x)?, pass)?)?)?;
        out = visit(1, ops::max_pool2x2(&out)?)?;
        for (k, (name, stage)) in self.stages.iter().enumerate() {
            out = match stage {
                Stage::Unit(u) => u.forward(&out, pass)?,
                Stage::Attention(a) => {
                    let (y, m) = a.forward(&out, pass)?;
                    if let Some(masks) = masks.as_deref_mut() {
                        masks.push((name.clone(), m));
                    }
                    y
                }
            };
            out = visit(2 + k, out)?;
        }
        for (k, unit) in self.tail.iter().enumerate() {
            out = visit(2 + self.stages.len() + k, unit.forward(&out, pass)?)?;
        }
        // The seed's `AvgPool2d(4, stride=1)` on the final 4×4 map: a global average.
        let logits = self.classifier.forward(&nn::global_avg_pool(&out)?)?;
        Ok((logits, tapped))
    }
}

impl Classifier for Ran {
    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn tap_names(&self) -> Vec<String> {
        let stages = self.stages.iter().map(|(name, _)| name.clone());
        let tail = (1..=self.tail.len()).map(|k| format!("Tail{k}"));
        ["stem".to_string(), "pool".to_string()].into_iter().chain(stages).chain(tail).collect()
    }

    fn last_feature_index(&self) -> usize {
        self.tap_points() - 1
    }

    fn default_gradcam_layer(&self) -> usize {
        self.last_feature_index()
    }

    fn layer_names(&self) -> Vec<(usize, String)> {
        self.stages.iter().enumerate().map(|(k, (name, _))| (2 + k, name.clone())).collect()
    }

    fn attention_maps(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let mut masks = Vec::new();
        self.run(x, &Pass::EVAL, None, Some(&mut masks))?;
        // One map per module: the soft mask averaged over its channels.
        masks.into_iter().map(|(name, m)| Ok((name, m.mean(1)?))).collect()
    }

    fn forward_tapped(&self, x: &Tensor, pass: &Pass, tap: Option<usize>) -> Result<(Tensor, Option<Tapped>)> {
        self.run(x, pass, tap, None)
    }
}

/// A bottleneck residual unit as graph layers (the candle module's names under `scope`).
fn unit_graph(g: &mut Builder, x: NodeId, scope: &Scope, out_c: usize, stride: usize) -> crate::Result<NodeId> {
    let in_c = g.shape(x).0;
    let mid = out_c / 4;
    let mut out = x;
    for (i, (k, s, c)) in [(1, 1, mid), (3, stride, mid), (1, 1, out_c)].into_iter().enumerate() {
        let conv = GraphConv { out: c, k, stride: s, pad: k / 2, bias: false };
        out = g.conv(out, &scope.at(format!("conv{}", i + 1)), conv)?;
        out = g.batch_norm(out, &scope.at(format!("bn{}", i + 1)))?;
        if i < 2 {
            out = g.relu(out);
        }
    }
    let identity = if stride != 1 || in_c != out_c {
        let down = scope.at("downsample");
        let p = g.conv(x, &down.at(0), GraphConv::new(out_c, 1, 0).stride(stride))?;
        g.batch_norm(p, &down.at(1))?
    } else {
        x
    };
    let sum = g.add(out, identity)?;
    Ok(g.relu(sum))
}

/// An attention module as graph layers: its output and its soft mask.
fn attention_graph(
    g: &mut Builder,
    x: NodeId,
    scope: &Scope,
    out_c: usize,
    sizes: &[usize],
    skips: usize,
) -> crate::Result<(NodeId, NodeId)> {
    let x = unit_graph(g, x, &scope.at("residual_unit_in"), out_c, 1)?;
    let trunk_scope = scope.at("trunk_b");
    let t = unit_graph(g, x, &trunk_scope.at(0), out_c, 1)?;
    let trunk = unit_graph(g, t, &trunk_scope.at(1), out_c, 1)?;
    let mask_scope = scope.at("softmask_b");
    let unit = mask_scope.at("residual_unit");
    let units = |g: &mut Builder, mut out: NodeId, n: usize| -> crate::Result<NodeId> {
        for _ in 0..n {
            out = unit_graph(g, out, &unit, out_c, 1)?;
        }
        Ok(out)
    };
    let mut out = x;
    let mut skip_nodes = Vec::with_capacity(skips);
    for _ in 0..skips {
        let pooled = g.max_pool2(out, true)?;
        out = units(g, pooled, R)?;
        skip_nodes.push(out);
    }
    let pooled = g.max_pool2(out, true)?;
    out = units(g, pooled, 2 * R)?;
    for (i, &skip) in skip_nodes.iter().rev().enumerate() {
        let s = sizes[skips - i];
        let up = g.upsample(out, (s, s))?;
        let sum = g.add(up, skip)?;
        out = units(g, sum, R)?;
    }
    out = g.upsample(out, (sizes[0], sizes[0]))?;
    let conv = GraphConv::new(out_c, 1, 0).no_bias();
    let once = g.conv(out, &mask_scope.at("conv"), conv)?;
    let twice = g.conv(once, &mask_scope.at("conv"), conv)?;
    let mask = g.sigmoid(twice);
    let gated = g.gate(mask, trunk)?;
    Ok((unit_graph(g, gated, &scope.at("residual_unit_out"), out_c, 1)?, mask))
}

/// RAN-`depth` for `spec` as a graph, with the candle modules' parameter names, `features[k]` numbering and one
/// attention map (the channel mean of the soft mask) per attention module.
pub fn graph(spec: ModelSpec, depth: usize) -> crate::Result<Graph> {
    let kind = spec.dataset;
    let side = kind.side();
    let sizes: Vec<usize> = [2, 4, 8].iter().map(|d| side.div_ceil(*d)).collect();
    let mut g = Builder::new((kind.channels(), side, side));
    let root = Scope::root();
    let input = g.input();
    let stem = g.conv(input, &root.at("conv").at(0), GraphConv::new(64, 5, 2))?;
    let stem = g.batch_norm(stem, &root.at("conv").at(1))?;
    let mut out = g.relu(stem);
    g.tap(out, "stem");
    out = g.max_pool2(out, false)?;
    g.tap(out, "pool");
    let stages = root.at("stages");
    for (k, (name, s)) in layout(depth)?.into_iter().enumerate() {
        out = match s {
            StageSpec::Unit(_, o, stride) => unit_graph(&mut g, out, &stages.at(k), o, stride)?,
            StageSpec::Att(_, o, first_size, skips) => {
                let (y, mask) = attention_graph(&mut g, out, &stages.at(k), o, &sizes[first_size..], skips)?;
                g.map(name.clone(), mask, MapOf::ChannelMean);
                y
            }
        };
        g.tap(out, name);
    }
    let tail = root.at("avgpool");
    for k in 0..3 {
        out = unit_graph(&mut g, out, &tail.at(k), 2048, 1)?;
        g.tap(out, format!("Tail{}", k + 1));
    }
    let pooled = g.global_avg_pool(out);
    let logits = g.linear(pooled, &root.at("classifier").at(0), kind.num_classes(), true)?;
    Ok(g.finish(logits))
}
