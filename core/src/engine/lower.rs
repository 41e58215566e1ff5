//! A network [`Graph`] lowered to the SimpleCNN family's fused CPU paths, so that the network is spelled once (its
//! model file's graph) and these paths read it:
//! - [`plan`]: the evaluation [`Plan`] — a chain of stride-1 convolutions, BatchNorm (folded into a per-channel
//!   affine with the running statistics), ReLU, 2×2 max-pooling, global average pooling, linear layers and CBAM
//!   blocks (Woo et al. 2018);
//! - [`step_layout`]: the hand-written training step's network (`cnn_step.rs`) — blocks of convolution ('same'
//!   padding), BatchNorm, ReLU and 2×2 max-pooling, then a linear–ReLU–linear head or CAM's global average pooling
//!   and linear layer (Zhou et al. 2016).
//!
//! Graphs of another shape (RAN, WARN) get neither and run on the graph executor.

use super::cnn_step::{Block, Head, Net, Values};
use super::cpu::{CbamParams, Layer, Plan};
use super::executor::eval_affine;
use crate::graph::{Graph, NodeId, Op, ParamId};

/// The evaluation plan of `graph` with parameter values `params` (in `graph.params`' order), where the graph is a
/// chain the plan can run; `None` otherwise. `features[k]` of the plan is the graph's tap `k`.
pub(super) fn plan(graph: &Graph, params: &[Vec<f32>]) -> Option<Plan> {
    if params.len() != graph.params.len() {
        return None;
    }
    let nodes = &graph.nodes;
    let mut layers = Vec::new();
    // The plan layer whose output each graph node is (the chain's nodes only).
    let mut layer_of: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut current: NodeId = 0;
    let mut i = 1;
    while i < nodes.len() {
        let node = &nodes[i];
        if node.inputs.first() != Some(&current) {
            return None;
        }
        let (layer, used) = match cbam(graph, params, i) {
            Some(p) => (Layer::Cbam(Box::new(p)), CBAM_NODES),
            None => (single(graph, params, i)?, 1),
        };
        layers.push(layer);
        i += used;
        current = i - 1;
        layer_of[current] = Some(layers.len() - 1);
    }
    if current != graph.output {
        return None;
    }
    let taps = graph.taps.iter().map(|&(_, node)| layer_of[node]).collect::<Option<Vec<_>>>()?;
    Plan::new(graph.input_shape(), layers, taps).ok()
}

/// Node `i`, one input, as one plan layer.
fn single(graph: &Graph, params: &[Vec<f32>], i: NodeId) -> Option<Layer> {
    let node = &graph.nodes[i];
    if node.inputs.len() != 1 {
        return None;
    }
    let p = |id: ParamId| params[id].clone();
    let (c_in, _, _) = graph.nodes[node.inputs[0]].shape;
    Some(match &node.op {
        Op::Conv { weight, bias, k, stride: 1, pad } => {
            let c_out = node.shape.0;
            Layer::Conv { weight: p(*weight), bias: bias.map_or(vec![0.0; c_out], p), c_in, c_out, k: *k, pad: *pad }
        }
        Op::BatchNorm { gamma, beta, mean, var, eps, .. } => {
            let (scale, shift) = eval_affine(&params[*gamma], &params[*beta], &params[*mean], &params[*var], *eps);
            Layer::Affine { scale, shift }
        }
        Op::Relu => Layer::Relu,
        Op::MaxPool2 { ceil: false } => Layer::MaxPool2,
        Op::GlobalAvgPool => Layer::GlobalAvgPool,
        Op::Linear { weight, bias } => {
            let (out, inp) = (node.shape.0, params[*weight].len() / node.shape.0.max(1));
            Layer::Linear { weight: p(*weight), bias: bias.map_or(vec![0.0; out], p), inp, out }
        }
        _ => return None,
    })
}

/// Graph nodes of one CBAM block, as `models::cbam::graph` emits them.
const CBAM_NODES: usize = 19;

/// A node of a pattern: which operations match, and the node's inputs (see [`cbam`]).
type Pattern = (fn(&Op) -> bool, &'static [usize]);

/// The CBAM block whose first node is `i`, where nodes `i..i + CBAM_NODES` are exactly one (the shape
/// `models::cbam::graph` emits: the channel gate's shared MLP over average and max pooling, then the spatial gate's
/// k×k convolution over the channel max and mean, BatchNorm, ReLU, sigmoid); `None` otherwise.
fn cbam(graph: &Graph, params: &[Vec<f32>], i: NodeId) -> Option<CbamParams> {
    let nodes = graph.nodes.get(i..i + CBAM_NODES)?;
    let x = nodes[0].inputs.first().copied()?;
    // Each node's operation and inputs, relative to the block: `X` the block's input, else an offset into it.
    const X: usize = usize::MAX;
    let wiring: [Pattern; CBAM_NODES] = [
        (|o| matches!(o, Op::GlobalAvgPool), &[X]),
        (|o| matches!(o, Op::GlobalMaxPool), &[X]),
        (|o| matches!(o, Op::Linear { bias: Some(_), .. }), &[0]),
        (|o| matches!(o, Op::Relu), &[2]),
        (|o| matches!(o, Op::Linear { bias: Some(_), .. }), &[3]),
        (|o| matches!(o, Op::Linear { bias: Some(_), .. }), &[1]),
        (|o| matches!(o, Op::Relu), &[5]),
        (|o| matches!(o, Op::Linear { bias: Some(_), .. }), &[6]),
        (|o| matches!(o, Op::Add), &[4, 7]),
        (|o| matches!(o, Op::Sigmoid), &[8]),
        (|o| matches!(o, Op::Mul), &[X, 9]),
        (|o| matches!(o, Op::ChannelMax), &[10]),
        (|o| matches!(o, Op::ChannelMean), &[10]),
        (|o| matches!(o, Op::Concat), &[11, 12]),
        (|o| matches!(o, Op::Conv { bias: Some(_), stride: 1, .. }), &[13]),
        (|o| matches!(o, Op::BatchNorm { .. }), &[14]),
        (|o| matches!(o, Op::Relu), &[15]),
        (|o| matches!(o, Op::Sigmoid), &[16]),
        (|o| matches!(o, Op::Mul), &[10, 17]),
    ];
    for (node, (is, inputs)) in nodes.iter().zip(wiring) {
        let wired = node.inputs.len() == inputs.len()
            && node.inputs.iter().zip(inputs).all(|(&got, &want)| got == if want == X { x } else { i + want });
        if !is(&node.op) || !wired {
            return None;
        }
    }
    // The two branches share one MLP.
    let linear = |n: usize| match nodes[n].op {
        Op::Linear { weight, bias: Some(bias) } => Some((weight, bias)),
        _ => None,
    };
    let ((w1, b1), (w2, b2)) = (linear(2)?, linear(4)?);
    if linear(5)? != (w1, b1) || linear(7)? != (w2, b2) {
        return None;
    }
    let Op::Conv { weight, bias: Some(bias), k, pad, .. } = nodes[14].op else { return None };
    let Op::BatchNorm { gamma, beta, mean, var, eps, .. } = nodes[15].op else { return None };
    let (scale, shift) = eval_affine(&params[gamma], &params[beta], &params[mean], &params[var], eps);
    let (c, hidden) = (graph.nodes[x].shape.0, nodes[2].shape.0);
    let one = |v: &[f32]| v.first().copied();
    let p = CbamParams {
        w1: params[w1].clone(),
        b1: params[b1].clone(),
        w2: params[w2].clone(),
        b2: params[b2].clone(),
        hidden,
        conv: params[weight].clone(),
        conv_bias: one(&params[bias])?,
        k,
        scale: one(&scale)?,
        shift: one(&shift)?,
    };
    // The plan's spatial convolution pads by k/2 to one output channel; its BatchNorm has one channel.
    (pad == k / 2 && nodes[14].shape.0 == 1 && scale.len() == 1 && p.w1.len() == hidden * c).then_some(p)
}

/// A block of the training step, by the graph's parameter ids.
pub(super) struct StepBlock {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub gamma: ParamId,
    pub beta: ParamId,
    /// The BatchNorm node (its running statistics are updated after the step).
    pub norm: NodeId,
    c_in: usize,
    c_out: usize,
    k: usize,
    pad: usize,
    eps: f32,
}

/// The training step's network as the graph's parameter ids: blocks, then the head's linear layers (weight, bias,
/// outputs) — two for SimpleCNN's MLP head, one for CAM's.
pub(super) struct StepLayout {
    pub blocks: Vec<StepBlock>,
    pub head: Vec<(ParamId, Option<ParamId>, usize)>,
    cam: bool,
    input: (usize, usize, usize),
    classes: usize,
}

/// The training step's network of `graph`, where the graph is one the step runs; `None` otherwise.
pub(super) fn step_layout(graph: &Graph) -> Option<StepLayout> {
    let nodes = &graph.nodes;
    let chained = |i: NodeId| nodes.get(i).filter(|n| n.inputs == [i - 1]).map(|n| &n.op);
    let mut blocks = Vec::new();
    let mut i = 1;
    while let (Some(&Op::Conv { weight, bias, k, stride: 1, pad }), Some(&Op::BatchNorm { gamma, beta, eps, .. })) =
        (chained(i), chained(i + 1))
    {
        if !matches!((chained(i + 2), chained(i + 3)), (Some(Op::Relu), Some(Op::MaxPool2 { ceil: false })))
            || 2 * pad + 1 != k
        {
            return None;
        }
        let (c_in, c_out) = (nodes[i - 1].shape.0, nodes[i].shape.0);
        blocks.push(StepBlock { weight, bias, gamma, beta, norm: i + 1, c_in, c_out, k, pad, eps });
        i += 4;
    }
    let linear = |i: NodeId| match chained(i) {
        Some(&Op::Linear { weight, bias }) => Some((weight, bias, nodes[i].shape.0)),
        _ => None,
    };
    let (head, cam) = match chained(i)? {
        Op::GlobalAvgPool => (vec![linear(i + 1)?], true),
        Op::Linear { .. } => {
            chained(i + 1).filter(|op| matches!(op, Op::Relu))?;
            (vec![linear(i)?, linear(i + 2)?], false)
        }
        _ => return None,
    };
    let last = i + if cam { 1 } else { 2 };
    (!blocks.is_empty() && last == graph.output && last + 1 == nodes.len()).then_some(StepLayout {
        blocks,
        head,
        cam,
        input: graph.input_shape(),
        classes: graph.classes(),
    })
}

impl StepLayout {
    /// The step's network over `values`, the graph's parameter values in order.
    pub fn net<'a>(&self, values: &[&'a [f32]]) -> Net<'a> {
        let get = |id: ParamId| Values::Borrowed(values[id]);
        let or_zeros = |id: Option<ParamId>, len: usize| id.map_or_else(|| Values::Owned(vec![0.0; len]), get);
        let blocks = (self.blocks.iter())
            .map(|b| Block {
                weight: get(b.weight),
                bias: or_zeros(b.bias, b.c_out),
                gamma: get(b.gamma),
                beta: get(b.beta),
                c_in: b.c_in,
                c_out: b.c_out,
                k: b.k,
                pad: b.pad,
                eps: b.eps,
            })
            .collect();
        let linear = |(w, b, out): (ParamId, Option<ParamId>, usize)| (get(w), or_zeros(b, out));
        let head = if self.cam {
            let (w, b) = linear(self.head[0]);
            Head::Cam { w, b }
        } else {
            let ((w1, b1), (w2, b2)) = (linear(self.head[0]), linear(self.head[1]));
            Head::Mlp { w1, b1, w2, b2 }
        };
        Net { blocks, head, input: self.input, classes: self.classes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;
    use crate::engine::Executor;
    use crate::graph::Score;
    use crate::models::{self, Arch, ModelSpec};
    use crate::ops::ReluRule;

    /// Reproducible values in [-1, 1).
    fn uniform(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Random parameters for `graph`: weights scaled by 1/√fan-in, running variances positive.
    fn params(graph: &Graph) -> Vec<Vec<f32>> {
        (graph.params.iter().enumerate())
            .map(|(i, p)| {
                let v = uniform(p.len(), i as u64 + 1);
                let fan_in = p.shape.iter().skip(1).product::<usize>().max(1) as f32;
                if p.name.ends_with("running_var") {
                    v.iter().map(|v| 0.5 + v.abs()).collect()
                } else {
                    v.iter().map(|v| v / fan_in.sqrt()).collect()
                }
            })
            .collect()
    }

    fn max_error(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The plan lowered from each small model's graph computes what the graph executor computes on the same
    /// parameters — logits, and the gradient to the input and to every tapped layer — and the other models' graphs
    /// have no plan.
    #[test]
    fn lowered_plans_equal_the_graph() -> crate::Result<()> {
        for arch in Arch::ALL {
            for dataset in [DatasetKind::Mnist, DatasetKind::Cifar10] {
                let graph = models::graph(ModelSpec { arch, dataset })?;
                let values = params(&graph);
                let Some(plan) = plan(&graph, &values) else {
                    assert!(!Arch::SMALL.contains(&arch), "{arch:?} on {dataset:?}: no plan");
                    continue;
                };
                assert!(Arch::SMALL.contains(&arch), "{arch:?} on {dataset:?} has a plan");
                let exec = Executor::new(&graph, values.iter().map(Vec::as_slice).collect())?;
                let n = 2;
                let x = uniform(n * crate::graph::len(graph.input_shape()), 99);
                let what = format!("{arch:?} on {dataset:?}");
                let e = max_error(&plan.forward(&x, n)?, &exec.logits(&x, n)?);
                assert!(e < 1e-5, "{what}: logits {e:e}");
                for tap in std::iter::once(None).chain((0..graph.taps.len()).map(Some)) {
                    let ask = |t| (&x[..], n, &[3u32, 7][..], Score::Logit, ReluRule::Standard, t);
                    let (a, b, c, d, r, t) = ask(tap);
                    let (p, g) = (plan.gradient(a, b, c, d, r, t)?, exec.gradient(a, b, c, d, r, t)?);
                    let e = max_error(&p.grad, &g.grad);
                    assert!(e < 1e-4, "{what}: gradient at {tap:?} {e:e}");
                    if let (Some(pa), Some(ga)) = (&p.activation, &g.activation) {
                        assert!(max_error(pa, ga) < 1e-5, "{what}: activation at {tap:?}");
                    }
                }
            }
        }
        Ok(())
    }

    /// The training step lowered from SimpleCNN's and CAM's graphs computes what the graph executor's training
    /// pass computes on the same parameters — logits, loss, each parameter's gradient under its graph id, and the
    /// batch statistics of each BatchNorm node — and no other model's graph lowers to it.
    #[test]
    fn lowered_steps_equal_the_graph() -> crate::Result<()> {
        for arch in Arch::ALL {
            for dataset in [DatasetKind::Mnist, DatasetKind::Cifar10] {
                let graph = models::graph(ModelSpec { arch, dataset })?;
                let Some(layout) = step_layout(&graph) else {
                    assert!(![Arch::SimpleCnn, Arch::Cam].contains(&arch), "{arch:?} on {dataset:?}: no step");
                    continue;
                };
                assert!([Arch::SimpleCnn, Arch::Cam].contains(&arch), "{arch:?} on {dataset:?} has a step");
                let owned = params(&graph);
                let values: Vec<&[f32]> = owned.iter().map(Vec::as_slice).collect();
                let n = 3;
                let x = uniform(n * crate::graph::len(graph.input_shape()), 5);
                let labels = [1u32, 4, 9];
                let what = format!("{arch:?} on {dataset:?}");
                let step = layout.net(&values).step(&x, &labels, n, &mut Default::default())?;
                let exec = Executor::new(&graph, values.clone())?.train_step(&x, &labels, n)?;
                assert!(max_error(&step.logits, &exec.logits) < 1e-5, "{what}: logits");
                assert!((step.loss - exec.loss).abs() < 1e-5 * exec.loss.abs().max(1.0), "{what}: loss");
                let mut ours: Vec<Option<Vec<f32>>> = vec![None; graph.params.len()];
                for (b, g) in layout.blocks.iter().zip(&step.blocks) {
                    ours[b.weight] = Some(g.weight.clone());
                    ours[b.gamma] = Some(g.gamma.clone());
                    ours[b.beta] = Some(g.beta.clone());
                    if let Some(bias) = b.bias {
                        ours[bias] = Some(g.bias.clone());
                    }
                    let stats = exec.stats.iter().find(|s| s.node == b.norm).expect("the block's statistics");
                    assert!(max_error(&g.batch_mean, &stats.mean) < 1e-5, "{what}: batch mean");
                    assert!(max_error(&g.batch_var, &stats.var) < 1e-5, "{what}: batch variance");
                }
                let mut head = step.head.iter();
                for &(w, b, _) in &layout.head {
                    ours[w] = head.next().cloned();
                    ours[b.expect("the graph's head has biases")] = head.next().cloned();
                }
                for (id, (a, b)) in ours.iter().zip(&exec.grads).enumerate() {
                    let name = &graph.params[id].name;
                    match (a, b) {
                        // A convolution's bias before BatchNorm has no effect: both gradients are rounding noise.
                        (Some(_), Some(_))
                            if name.starts_with("features.") && name.ends_with(".bias") && {
                                let i: usize = name[9..name.len() - 5].parse().unwrap_or(1);
                                i.is_multiple_of(4)
                            } => {}
                        (Some(a), Some(b)) => assert!(max_error(a, b) < 1e-4, "{what}: gradient of {name}"),
                        (None, None) => {}
                        _ => panic!("{what}: {name} has a gradient on one side only"),
                    }
                }
            }
        }
        Ok(())
    }
}
