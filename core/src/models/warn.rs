//! Wide Residual Network with attention, WARN (Rodríguez, Gonfaus, Cucurull, Roca & Gonzàlez 2018, "Attend and
//! Rectify: a Gated Attention Mechanism for Fine-Grained Recovery"), as the seed defines it: WRN-28-4 (Zagoruyko &
//! Komodakis 2016) with pre-activation groups of widths 64, 128, 256; attention modules on the inputs of groups 1
//! and 2 and on the output of group 2, each with 4 attention heads (3×3 convolution, softmax over space), an output
//! head (class hypotheses per head) and a self-attention score per head; a tanh-BatchNorm gate over the global
//! features; and the gated (softmax) mixture of the log-softmax outputs of the attention modules and the classifier.
//!
//! The returned "logits" are that mixture of log-probabilities, as in the seed. Training adds the inter-head
//! regularisation loss (squared overlaps of each module's 2×2-average-pooled masks, weight 0.001), averaged over the
//! modules. The constant `att_head.diag` buffer of the seed's `state_dict` (one minus the identity) is not stored.

use super::{check_input, Classifier, ModelSpec, Tapped};
use crate::graph::{Builder, Conv as GraphConv, Graph, MapOf, NodeId, Penalty, Scope};
use crate::nn::{self, BatchNorm2d, Conv2d, ConvOptions, Linear, Pass};
use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

const WIDTHS: [usize; 3] = [64, 128, 256];
/// Blocks per group: (depth 28 − 4) / 6.
const BLOCKS: usize = 4;
const HEADS: usize = 4;
const REG_WEIGHT: f64 = 0.001;

/// 3×3 convolution without bias, initialised as the seed does (`kaiming_normal_`).
fn conv3x3(in_c: usize, out_c: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    nn::conv2d_with(in_c, out_c, 3, ConvOptions { stride, padding: 1, bias: false, kaiming_normal: true }, vb)
}

/// Pre-activation residual block: BN → ReLU → conv (stride) → BN → ReLU → conv, plus the input, projected by a 1×1
/// convolution when the width changes.
#[derive(Clone, Debug)]
struct Block {
    bn0: BatchNorm2d,
    conv0: Conv2d,
    bn1: BatchNorm2d,
    conv1: Conv2d,
    reduce: Option<Conv2d>,
}

fn block(ni: usize, no: usize, stride: usize, vb: VarBuilder) -> Result<Block> {
    // Created in the seed's registration order, which fixes the `state_dict` order.
    let conv0 = conv3x3(ni, no, stride, vb.pp("conv0"))?;
    let bn0 = nn::batch_norm2d(ni, vb.pp("bn0"))?;
    let conv1 = conv3x3(no, no, 1, vb.pp("conv1"))?;
    let bn1 = nn::batch_norm2d(no, vb.pp("bn1"))?;
    let reduce = if ni != no {
        let o = ConvOptions { stride, padding: 0, bias: false, kaiming_normal: true };
        Some(nn::conv2d_with(ni, no, 1, o, vb.pp("conv_reduce"))?)
    } else {
        None
    };
    Ok(Block { bn0, conv0, bn1, conv1, reduce })
}

impl Block {
    /// The block's output and its pre-activated input (which the seed's attention modules look at).
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<(Tensor, Tensor)> {
        let input = pass.relu(&self.bn0.forward(x, pass)?)?;
        let y = pass.relu(&self.bn1.forward(&self.conv0.forward(&input)?, pass)?)?;
        let z = self.conv1.forward(&y)?;
        let shortcut = match &self.reduce {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        Ok(((z + shortcut)?, input))
    }
}

/// An attention module with its heads' masks (`N×heads×H×W`, each summing to one over space).
#[derive(Clone, Debug)]
struct AttentionModule {
    att_head: Conv2d,
    out_head: Conv2d,
    score: Conv2d,
    classes: usize,
}

/// Keys `att_head.conv`, `out_head.conv`, `score.conv`.
fn attention_module(in_c: usize, classes: usize, vb: VarBuilder) -> Result<AttentionModule> {
    Ok(AttentionModule {
        att_head: conv3x3(in_c, HEADS, 1, vb.pp("att_head").pp("conv"))?,
        out_head: conv3x3(in_c, classes * HEADS, 1, vb.pp("out_head").pp("conv"))?,
        score: conv3x3(in_c, HEADS, 1, vb.pp("score").pp("conv"))?,
        classes,
    })
}

impl AttentionModule {
    /// The module's class hypotheses (`N×classes`, the heads mixed by the softmax of their tanh self-attention
    /// scores) and its masks.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, _, h, w) = x.dims4()?;
        let logits = self.att_head.forward(x)?.reshape((n, HEADS, h * w))?;
        let mask = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let weighted = |t: Tensor, per_head: usize| -> Result<Tensor> {
            t.reshape((n, HEADS, per_head, h * w))?.broadcast_mul(&mask.unsqueeze(2)?)?.sum(3)
        };
        let output = weighted(self.out_head.forward(x)?, self.classes)?;
        let scores = candle_nn::ops::softmax(&weighted(self.score.forward(x)?, 1)?.tanh()?, 1)?;
        let mixed = output.broadcast_mul(&scores)?.sum(1)?;
        Ok((mixed, mask.reshape((n, HEADS, h, w))?))
    }
}

/// `Σ (M Mᵀ ⊙ (1 − I))² / (N·heads²)` over the module's masks average-pooled 2×2 (floor), the seed's inter-head
/// regularisation (before its weight).
fn overlap_loss(mask: &Tensor) -> Result<Tensor> {
    let (n, heads, h, w) = mask.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let pooled =
        mask.narrow(2, 0, 2 * ho)?.narrow(3, 0, 2 * wo)?.reshape((n, heads, ho, 2, wo, 2))?.mean(5)?.mean(3)?;
    let flat = pooled.reshape((n, heads, ho * wo))?;
    let gram = flat.matmul(&flat.t()?)?;
    let off_diagonal = Tensor::ones((heads, heads), mask.dtype(), mask.device())?.sub(&Tensor::eye(
        heads,
        mask.dtype(),
        mask.device(),
    )?)?;
    gram.broadcast_mul(&off_diagonal)?.sqr()?.mean_all()
}

/// WRN-28-4 with attention.
#[derive(Clone, Debug)]
pub struct Warn {
    spec: ModelSpec,
    conv0: Conv2d,
    bn0: BatchNorm2d,
    groups: Vec<Vec<Block>>,
    bn_g2: BatchNorm2d,
    classifier: Linear,
    /// `att2`, `att1`, `att0`, in the seed's order.
    attention: Vec<(usize, AttentionModule)>,
    gate: Linear,
    gate_bn: BatchNorm2d,
}

/// Builds WARN for `spec`'s data set with the seed's `state_dict` keys (`conv0`, `bn0`, `group_g.block_i`, `bn_g2`,
/// `classifier`, `att{2,1,0}`, `output_gate.gates`, `output_gate.bn`).
pub fn warn(spec: ModelSpec, vb: VarBuilder) -> Result<Warn> {
    let classes = spec.dataset.num_classes();
    // Created in the seed's registration order, which fixes the `state_dict` order.
    let conv0 = conv3x3(spec.dataset.channels(), 16, 1, vb.pp("conv0"))?;
    let bn0 = nn::batch_norm2d(16, vb.pp("bn0"))?;
    let mut groups = Vec::new();
    let mut ni = 16;
    for (g, &no) in WIDTHS.iter().enumerate() {
        let vg = vb.pp(format!("group_{g}"));
        let stride = if g == 0 { 1 } else { 2 };
        let blocks = (0..BLOCKS)
            .map(|i| {
                block(if i == 0 { ni } else { no }, no, if i == 0 { stride } else { 1 }, vg.pp(format!("block_{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        groups.push(blocks);
        ni = no;
    }
    let bn_g2 = nn::batch_norm2d(WIDTHS[2], vb.pp("bn_g2"))?;
    let classifier = nn::linear_kaiming(WIDTHS[2], classes, true, vb.pp("classifier"))?;
    let attention = [2, 1, 0]
        .into_iter()
        .map(|i| Ok((i, attention_module(WIDTHS[i], classes, vb.pp(format!("att{i}")))?)))
        .collect::<Result<Vec<_>>>()?;
    let gate = vb.pp("output_gate");
    let gate_linear = nn::linear_kaiming(WIDTHS[2], HEADS, false, gate.pp("gates"))?;
    let gate_bn = nn::batch_norm2d(HEADS, gate.pp("bn"))?;
    Ok(Warn { spec, conv0, bn0, groups, bn_g2, classifier, attention, gate: gate_linear, gate_bn })
}

/// What a forward pass produced besides the output.
struct Extras {
    tapped: Option<Tapped>,
    /// Each attention module's name and masks.
    masks: Vec<(String, Tensor)>,
}

impl Warn {
    /// The forward pass. Features: 0 the stem, 1 + 4g + i block `i` of group `g`, 13 group 2 after its BatchNorm and
    /// ReLU.
    fn run(&self, x: &Tensor, pass: &Pass, tap: Option<usize>) -> Result<(Tensor, Extras)> {
        check_input(self.spec, x)?;
        let mut tapped = None;
        let mut visit = |k: usize, x: Tensor| super::tap_if(tap == Some(k), x, &mut tapped);
        let mut out = visit(0, pass.relu(&self.bn0.forward(&self.conv0.forward(x)?, pass)?)?)?;
        // The pre-activated inputs of groups 1 and 2, which attention modules 0 and 1 look at.
        let mut group_inputs = Vec::new();
        for (g, blocks) in self.groups.iter().enumerate() {
            for (i, b) in blocks.iter().enumerate() {
                let (y, input) = b.forward(&out, pass)?;
                if i == 0 && g > 0 {
                    group_inputs.push(input);
                }
                out = visit(1 + BLOCKS * g + i, y)?;
            }
        }
        let last = visit(1 + BLOCKS * WIDTHS.len(), pass.relu(&self.bn_g2.forward(&out, pass)?)?)?;
        group_inputs.push(last.clone());
        let mut outputs = Vec::new();
        let mut masks = Vec::new();
        for (i, module) in &self.attention {
            let (o, m) = module.forward(&group_inputs[*i])?;
            outputs.push(o.unsqueeze(1)?);
            masks.push((format!("att{i}"), m));
        }
        // The seed's `avg_pool2d(group2, 7 or 8, 1)` covers the whole final map: a global average.
        let features = nn::global_avg_pool(&last)?;
        let gates = self.gate_bn.forward_flat(&self.gate.forward(&features)?, pass)?.tanh()?;
        outputs.push(self.classifier.forward(&features)?.unsqueeze(1)?);
        let log_probs = candle_nn::ops::log_softmax(&Tensor::cat(&outputs, 1)?, 2)?;
        let weights = candle_nn::ops::softmax(&gates, 1)?.unsqueeze(2)?;
        let mixed = log_probs.broadcast_mul(&weights)?.sum(1)?;
        Ok((mixed, Extras { tapped, masks }))
    }
}

impl Classifier for Warn {
    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn tap_names(&self) -> Vec<String> {
        let blocks = (0..WIDTHS.len()).flat_map(|g| (0..BLOCKS).map(move |i| format!("group{g}.block{i}")));
        ["stem".to_string()].into_iter().chain(blocks).chain(["group2 bn+relu".to_string()]).collect()
    }

    fn last_feature_index(&self) -> usize {
        self.tap_points() - 1
    }

    fn default_gradcam_layer(&self) -> usize {
        self.last_feature_index()
    }

    fn layer_names(&self) -> Vec<(usize, String)> {
        (0..WIDTHS.len())
            .map(|g| (BLOCKS * (g + 1), format!("Group{g}")))
            .chain([(self.last_feature_index(), "Group2+BN".into())])
            .collect()
    }

    fn attention_maps(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let (_, extras) = self.run(x, &Pass::EVAL, None)?;
        let mut maps = Vec::new();
        for (name, m) in extras.masks {
            for head in 0..HEADS {
                maps.push((format!("{name} h{head}"), m.narrow(1, head, 1)?.squeeze(1)?));
            }
        }
        Ok(maps)
    }

    fn training_loss(&self, x: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        let (logits, extras) = self.run(x, &Pass::TRAIN, None)?;
        let loss = (candle_nn::loss::cross_entropy(&logits, labels)? + regularisation(&extras.masks)?)?;
        Ok((logits, loss))
    }

    fn forward_tapped(&self, x: &Tensor, pass: &Pass, tap: Option<usize>) -> Result<(Tensor, Option<Tapped>)> {
        let (logits, extras) = self.run(x, pass, tap)?;
        Ok((logits, extras.tapped))
    }
}

impl Warn {
    /// The weighted inter-head regularisation term of a training-mode pass on `x`.
    pub fn regularisation(&self, x: &Tensor) -> Result<Tensor> {
        regularisation(&self.run(x, &Pass::TRAIN, None)?.1.masks)
    }
}

/// The seed's `reg_loss`: the weighted overlap losses of the modules' masks, averaged over the modules.
fn regularisation(masks: &[(String, Tensor)]) -> Result<Tensor> {
    let mut total = overlap_loss(&masks[0].1)?;
    for (_, m) in &masks[1..] {
        total = (total + overlap_loss(m)?)?;
    }
    total * (REG_WEIGHT / masks.len() as f64)
}

/// A 3×3 convolution without bias, as graph layers.
fn conv3x3_graph(out: usize, stride: usize) -> GraphConv {
    GraphConv::new(out, 3, 1).stride(stride).no_bias()
}

/// An attention module on `x` as graph layers: its class hypotheses and its masks.
fn attention_graph(g: &mut Builder, x: NodeId, scope: &Scope, classes: usize) -> crate::Result<(NodeId, NodeId)> {
    let heads = g.conv(x, &scope.at("att_head").at("conv"), conv3x3_graph(HEADS, 1))?;
    let mask = g.spatial_softmax(heads);
    let outputs = g.conv(x, &scope.at("out_head").at("conv"), conv3x3_graph(classes * HEADS, 1))?;
    let output = g.head_pool(outputs, mask)?;
    let scores = g.conv(x, &scope.at("score").at("conv"), conv3x3_graph(HEADS, 1))?;
    let scores = g.head_pool(scores, mask)?;
    let scores = g.tanh(scores);
    let scores = g.softmax(scores)?;
    Ok((g.head_mix(output, scores)?, mask))
}

/// WARN for `spec` as a graph, with the candle modules' parameter names and `features[k]` numbering, the
/// inter-head regularisation as a penalty and one attention map per head.
pub fn graph(spec: ModelSpec) -> crate::Result<Graph> {
    let kind = spec.dataset;
    let classes = kind.num_classes();
    let mut g = Builder::new((kind.channels(), kind.side(), kind.side()));
    let root = Scope::root();
    let input = g.input();
    let stem = g.conv(input, &root.at("conv0"), conv3x3_graph(16, 1))?;
    let stem = g.batch_norm(stem, &root.at("bn0"))?;
    let mut out = g.relu(stem);
    g.tap(out, "stem");
    let mut group_inputs = Vec::new();
    for (gi, &no) in WIDTHS.iter().enumerate() {
        for i in 0..BLOCKS {
            let scope = root.at(format!("group_{gi}")).at(format!("block_{i}"));
            let stride = if i == 0 && gi > 0 { 2 } else { 1 };
            let ni = g.shape(out).0;
            let pre = g.batch_norm(out, &scope.at("bn0"))?;
            let pre = g.relu(pre);
            if i == 0 && gi > 0 {
                group_inputs.push(pre);
            }
            let y = g.conv(pre, &scope.at("conv0"), conv3x3_graph(no, stride))?;
            let y = g.batch_norm(y, &scope.at("bn1"))?;
            let y = g.relu(y);
            let z = g.conv(y, &scope.at("conv1"), conv3x3_graph(no, 1))?;
            let shortcut = if ni != no {
                let o = GraphConv { out: no, k: 1, stride, pad: 0, bias: false };
                g.conv(out, &scope.at("conv_reduce"), o)?
            } else {
                out
            };
            out = g.add(z, shortcut)?;
            g.tap(out, format!("group{gi}.block{i}"));
        }
    }
    let last = g.batch_norm(out, &root.at("bn_g2"))?;
    let last = g.relu(last);
    g.tap(last, "group2 bn+relu");
    group_inputs.push(last);
    let mut outputs = Vec::new();
    let modules = [2, 1, 0];
    for i in modules {
        let (o, mask) = attention_graph(&mut g, group_inputs[i], &root.at(format!("att{i}")), classes)?;
        outputs.push(o);
        g.penalty(Penalty::HeadOverlap { node: mask, weight: (REG_WEIGHT / modules.len() as f64) as f32 });
        for head in 0..HEADS {
            g.map(format!("att{i} h{head}"), mask, MapOf::Channel(head));
        }
    }
    let features = g.global_avg_pool(last);
    let gate = root.at("output_gate");
    let gates = g.linear(features, &gate.at("gates"), HEADS, false)?;
    let gates = g.batch_norm(gates, &gate.at("bn"))?;
    let gates = g.tanh(gates);
    let weights = g.softmax(gates)?;
    outputs.push(g.linear(features, &root.at("classifier"), classes, true)?);
    let all = g.concat(&outputs)?;
    let log_probs = g.log_softmax_groups(all, outputs.len())?;
    let mixed = g.head_mix(log_probs, weights)?;
    Ok(g.finish(mixed))
}
