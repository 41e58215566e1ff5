//! The CPU executor of a [`Graph`]: forward passes with running or batch statistics, and backward passes from a
//! class score (to the input or a tapped layer, under a ReLU backward rule) or from the training loss (to every
//! parameter). One executor serves evaluation, attribution and training for every model; candle's autograd on the
//! models' own modules is its test oracle.

#[cfg(test)]
mod kernel_tests;
mod kernels;
mod lrp;
#[cfg(test)]
mod tests;

use super::cpu::relu_backward;
use super::{Engine, Gradient};
use crate::graph::{len, Graph, NodeId, Op, Penalty, Propagation, Score};
use crate::ops::{on_pool, transpose_planes, ReluRule};
use crate::{Error, Result};
use kernels::*;
use std::sync::{Arc, OnceLock};

/// An attention map of `n` images: its name, its size and the values (`n × h × w`).
pub type Map = (String, (usize, usize), Vec<f32>);

/// What a layer's backward pass needs from its forward pass beyond the values.
enum Saved {
    Nothing,
    /// Per output value, the index in its plane (or channel) of the maximum it took.
    Index(Vec<u32>),
    /// Batch normalisation with batch statistics: mean, biased variance and `1/√(var + ε)` per channel.
    Stats {
        mean: Vec<f32>,
        var: Vec<f32>,
        invstd: Vec<f32>,
    },
}

/// A forward pass over `n` images: every computed node's value (`c × n × h·w`) and what its backward pass needs.
pub(crate) struct Forward {
    n: usize,
    values: Vec<Vec<f32>>,
    saved: Vec<Saved>,
}

/// One BatchNorm application's batch statistics, for the running-statistics update (in forward order: a layer
/// applied twice updates twice, as in PyTorch).
#[derive(Clone, Debug)]
pub struct BatchStatistics {
    pub node: NodeId,
    pub mean: Vec<f32>,
    /// Biased (divided by the count).
    pub var: Vec<f32>,
    /// Values per channel the statistics were taken over.
    pub count: usize,
}

/// What a training step computed.
pub struct TrainOutput {
    /// `n × classes`, row-major.
    pub logits: Vec<f32>,
    /// Mean cross-entropy plus the penalties.
    pub loss: f32,
    /// Each parameter's gradient (None for buffers and parameters the graph does not use).
    pub grads: Vec<Option<Vec<f32>>>,
    pub stats: Vec<BatchStatistics>,
}

/// The executor: a graph and its parameters' values (indexed like `graph.params`).
pub struct Executor<'a> {
    graph: &'a Graph,
    params: Vec<&'a [f32]>,
    /// Where the parameters are constant ([`GraphEngine`]): each convolution's flipped weight, made on first use
    /// ([`flipped_weight`]), for input gradients over few positions.
    flipped: Option<&'a [OnceLock<Vec<f32>>]>,
}

impl<'a> Executor<'a> {
    pub fn new(graph: &'a Graph, params: Vec<&'a [f32]>) -> Result<Self> {
        if params.len() != graph.params.len() {
            crate::invalid!("{} parameter values for a graph of {}", params.len(), graph.params.len());
        }
        for (p, v) in graph.params.iter().zip(&params) {
            if p.len() != v.len() {
                crate::invalid!("{}: {} values, expected {}", p.name, v.len(), p.len());
            }
        }
        Ok(Executor { graph, params, flipped: None })
    }

    /// Nodes needed for `roots` (not what only `given`, a node whose value is supplied, needs).
    fn needed(&self, roots: &[NodeId], given: Option<NodeId>) -> Vec<bool> {
        let mut need = vec![false; self.graph.nodes.len()];
        for &r in roots {
            need[r] = true;
        }
        for i in (0..need.len()).rev() {
            if need[i] && Some(i) != given {
                for &j in &self.graph.nodes[i].inputs {
                    need[j] = true;
                }
            }
        }
        need
    }

    /// The forward pass of `x` (`n` images, channel-major) to `roots`; with `train`, batch statistics. Unless
    /// `keep`, a value is dropped after its last use (inference).
    fn forward(&self, x: Vec<f32>, n: usize, train: bool, roots: &[NodeId], keep: bool) -> Result<Forward> {
        self.forward_given(x, n, train, roots, keep, None)
    }

    /// [`Executor::forward`] with node `given.0`'s value supplied (channel-major) instead of computed.
    fn forward_given(
        &self,
        x: Vec<f32>,
        n: usize,
        train: bool,
        roots: &[NodeId],
        keep: bool,
        given: Option<(NodeId, Vec<f32>)>,
    ) -> Result<Forward> {
        let nodes = &self.graph.nodes;
        let need = self.needed(roots, given.as_ref().map(|g| g.0));
        let mut last_use = vec![0usize; nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            for &j in &node.inputs {
                last_use[j] = i;
            }
        }
        for &r in roots {
            last_use[r] = usize::MAX;
        }
        let mut values: Vec<Vec<f32>> = (0..nodes.len()).map(|_| Vec::new()).collect();
        let mut saved: Vec<Saved> = (0..nodes.len()).map(|_| Saved::Nothing).collect();
        values[0] = x;
        for i in 1..nodes.len() {
            if !need[i] {
                continue;
            }
            let (y, s) = match &given {
                Some((g, value)) if *g == i => (value.clone(), Saved::Nothing),
                _ => self.node_forward(i, &values, n, train)?,
            };
            values[i] = y;
            saved[i] = s;
            if !keep {
                for &j in &nodes[i].inputs {
                    if last_use[j] == i {
                        values[j] = Vec::new();
                    }
                }
            }
        }
        Ok(Forward { n, values, saved })
    }

    fn p(&self, id: usize) -> &'a [f32] {
        self.params[id]
    }

    fn node_forward(&self, i: usize, values: &[Vec<f32>], n: usize, train: bool) -> Result<(Vec<f32>, Saved)> {
        let node = &self.graph.nodes[i];
        let input = |k: usize| -> &[f32] { &values[node.inputs[k]] };
        let in_shape = |k: usize| self.graph.nodes[node.inputs[k]].shape;
        let (c, h, w) = node.shape;
        let hw = h * w;
        let x = input(0);
        Ok(match &node.op {
            Op::Input => unreachable!("the input is node 0"),
            Op::Conv { weight, bias, k, stride, pad } => {
                let g = ConvGeometry { n, input: in_shape(0), c_out: c, k: *k, stride: *stride, pad: *pad };
                let bias = bias.map(|b| self.p(b));
                let y = if g.is_narrow() {
                    g.direct_forward(x, self.p(*weight), bias)
                } else if let Some(wg) = g.winograd().filter(|_| train) {
                    wg.convolve(self.p(*weight), x, bias)
                } else {
                    g.forward(x, self.p(*weight), bias)
                };
                (y, Saved::Nothing)
            }
            Op::BatchNorm { gamma, beta, mean, var, eps, .. } => {
                let (gamma, beta) = (self.p(*gamma), self.p(*beta));
                if train {
                    let (m, v) = batch_stats(x, c);
                    let invstd: Vec<f32> = v.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                    let scale: Vec<f32> = invstd.iter().zip(gamma).map(|(s, g)| s * g).collect();
                    let shift: Vec<f32> = (0..c).map(|j| beta[j] - m[j] * scale[j]).collect();
                    (channel_affine(x, &scale, &shift), Saved::Stats { mean: m, var: v, invstd })
                } else {
                    let (scale, shift) = eval_affine(gamma, beta, self.p(*mean), self.p(*var), *eps);
                    (channel_affine(x, &scale, &shift), Saved::Nothing)
                }
            }
            Op::Linear { weight, bias } => {
                let xm = flatten(x, in_shape(0), n);
                (linear_forward(&xm, n, self.p(*weight), bias.map(|b| self.p(b)), c), Saved::Nothing)
            }
            Op::Relu => (map(x, |v| v.max(0.0)), Saved::Nothing),
            Op::Sigmoid => (map(x, |v| 1.0 / (1.0 + (-v).exp())), Saved::Nothing),
            Op::Tanh => (map(x, f32::tanh), Saved::Nothing),
            Op::MaxPool2 { .. } => {
                let (_, hi, wi) = in_shape(0);
                let (y, arg) = max_pool(x, (hi, wi), (h, w));
                (y, Saved::Index(arg))
            }
            Op::GlobalAvgPool => {
                let (_, hi, wi) = in_shape(0);
                (plane_means(x, hi * wi), Saved::Nothing)
            }
            Op::GlobalMaxPool => {
                let (_, hi, wi) = in_shape(0);
                let (y, arg) = plane_max(x, hi * wi);
                (y, Saved::Index(arg))
            }
            Op::ChannelMax => {
                let (y, arg) = channel_max(x, in_shape(0).0);
                (y, Saved::Index(arg))
            }
            Op::ChannelMean => (channel_mean(x, in_shape(0).0), Saved::Nothing),
            Op::Concat => (node.inputs.iter().flat_map(|&j| values[j].iter().copied()).collect(), Saved::Nothing),
            Op::Add => (zip_map(x, input(1), |a, b| a + b), Saved::Nothing),
            Op::Mul => (Broadcast::of(node.shape, in_shape(1)).mul(x, input(1), n, hw), Saved::Nothing),
            Op::Gate => (zip_map(x, input(1), |m, t| (1.0 + m) * t), Saved::Nothing),
            Op::Upsample { .. } => {
                let (_, hi, wi) = in_shape(0);
                (upsample(x, (hi, wi), (h, w), false), Saved::Nothing)
            }
            Op::SpatialSoftmax => (softmax_rows(x, hw), Saved::Nothing),
            Op::Softmax => {
                let t = transpose(x, c, n);
                (transpose(&softmax_rows(&t, c), n, c), Saved::Nothing)
            }
            Op::HeadPool { heads } => {
                let (vc, hi, wi) = in_shape(0);
                let (m, per) = (input(1), vc / heads);
                let hwi = hi * wi;
                let mut y = zeros(vc * n);
                for (r, yv) in y.iter_mut().enumerate() {
                    let (ch, ni) = (r / n, r % n);
                    let v = &x[r * hwi..][..hwi];
                    let mk = &m[((ch / per) * n + ni) * hwi..][..hwi];
                    *yv = v.iter().zip(mk).map(|(a, b)| a * b).sum();
                }
                (y, Saved::Nothing)
            }
            Op::HeadMix { heads } => {
                let wts = input(1);
                let mut y = zeros(c * n);
                for hd in 0..*heads {
                    for j in 0..c {
                        for ni in 0..n {
                            y[j * n + ni] += x[(hd * c + j) * n + ni] * wts[hd * n + ni];
                        }
                    }
                }
                (y, Saved::Nothing)
            }
            Op::LogSoftmaxGroups { groups } => {
                let per = c / groups;
                let t = transpose(x, c, n);
                let mut out = zeros(t.len());
                for (o, row) in out.chunks_mut(per).zip(t.chunks(per)) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let lse = row.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
                    o.iter_mut().zip(row).for_each(|(o, v)| *o = v - lse);
                }
                (transpose(&out, n, c), Saved::Nothing)
            }
        })
    }

    /// Back-propagates `seeds` (gradients of nodes' values) through the graph. Returns the gradient of `stop`'s
    /// value (when given) and, with `param_grads`, every parameter's gradient. With `release`, each node's value
    /// and arg-maxes are dropped once its own backward pass is done (no node before it reads them): the pass
    /// holds the activations of the layers it has yet to reach, not the whole network's.
    fn backward(
        &self,
        fwd: &mut Forward,
        seeds: Vec<(NodeId, Vec<f32>)>,
        rule: ReluRule,
        stop: Option<NodeId>,
        param_grads: bool,
        release: bool,
    ) -> Result<(Grad, Vec<Grad>)> {
        let nodes = &self.graph.nodes;
        let n = fwd.n;
        let mut grads: Vec<Option<Vec<f32>>> = (0..nodes.len()).map(|_| None).collect();
        let mut pgrads: Vec<Option<Vec<f32>>> = (0..self.params.len()).map(|_| None).collect();
        for (node, g) in seeds {
            accumulate(&mut grads[node], g);
        }
        let floor = stop.unwrap_or(0);
        for i in (floor + 1..nodes.len()).rev() {
            if let Some(g) = grads[i].take() {
                let node = &nodes[i];
                // An input needs a gradient unless it is the model's input and nobody asked for that.
                let wants: Vec<bool> = node.inputs.iter().map(|&j| j != 0 || stop == Some(0)).collect();
                let pg = param_grads.then_some(&mut pgrads);
                let din = self.node_backward(i, fwd, g, rule, &wants, pg, &mut grads)?;
                for (k, d) in din.into_iter().enumerate() {
                    if let Some(d) = d {
                        accumulate(&mut grads[node.inputs[k]], d);
                    }
                }
            }
            if release {
                fwd.values[i] = Vec::new();
                if let Saved::Index(_) = fwd.saved[i] {
                    fwd.saved[i] = Saved::Nothing;
                }
            }
        }
        let out = stop.map(|s| grads[s].take().unwrap_or_else(|| zeros(len(nodes[s].shape) * n)));
        Ok((out, pgrads))
    }

    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    fn node_backward(
        &self,
        i: usize,
        fwd: &Forward,
        g: Vec<f32>,
        rule: ReluRule,
        wants: &[bool],
        mut pgrads: Option<&mut Vec<Option<Vec<f32>>>>,
        acc: &mut [Grad],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let node = &self.graph.nodes[i];
        let n = fwd.n;
        let value = |j: NodeId| -> Result<&[f32]> {
            let v = &fwd.values[j];
            if v.is_empty() && len(self.graph.nodes[j].shape) * n > 0 {
                return Err(Error::InvalidArgument(format!("graph backward: node {j}'s value was not kept")));
            }
            Ok(v)
        };
        let x = value(node.inputs[0])?;
        let in_shape = |k: usize| self.graph.nodes[node.inputs[k]].shape;
        let (c, h, w) = node.shape;
        let hw = h * w;
        let wants_params = pgrads.is_some();
        let mut add_param = |id: usize, d: Vec<f32>| {
            if let Some(p) = pgrads.as_deref_mut() {
                accumulate(&mut p[id], d);
            }
        };
        let one = |d: Option<Vec<f32>>| vec![d];
        Ok(match &node.op {
            Op::Input => vec![],
            Op::Conv { weight, bias, k, stride, pad } => {
                let geo = ConvGeometry { n, input: in_shape(0), c_out: c, k: *k, stride: *stride, pad: *pad };
                if geo.is_narrow() {
                    if wants_params {
                        add_param(*weight, geo.direct_weight_grad(x, &g));
                        if let Some(b) = bias {
                            add_param(*b, channel_sums(&g, c));
                        }
                    }
                    return Ok(one(wants[0].then(|| geo.direct_input_grad(self.p(*weight), &g))));
                }
                // Training (parameter gradients wanted) goes through Winograd, as its forward pass did.
                if let Some(wg) = geo.winograd().filter(|_| wants_params) {
                    let (dw, dx) = wg.gradients(self.p(*weight), x, &g, wants[0]);
                    add_param(*weight, dw);
                    if let Some(b) = bias {
                        add_param(*b, channel_sums(&g, c));
                    }
                    return Ok(one(dx));
                }
                // Few positions and constant weights: the input gradient as the flipped convolution of `dy`.
                if let Some(flipped) = self.flipped.filter(|_| !wants_params && wants[0]) {
                    if let Some(t) = geo.transposed().filter(|t| t.positions() < FLIP_BELOW) {
                        let wf = flipped[*weight].get_or_init(|| flipped_weight(self.p(*weight), c, t.c_out, *k));
                        return Ok(one(Some(t.forward(&g, wf, None))));
                    }
                }
                let cols_owned;
                let cols: &[f32] = if geo.is_pointwise() {
                    x
                } else if wants_params {
                    let mut buf = scratch(geo.rows() * geo.positions());
                    geo.im2col(x, &mut buf);
                    cols_owned = buf;
                    &cols_owned
                } else {
                    &[]
                };
                if wants_params {
                    let (dw, db) = conv_param_grads(&geo, cols, &g, bias.is_some());
                    add_param(*weight, dw);
                    if let (Some(b), Some(db)) = (bias, db) {
                        add_param(*b, db);
                    }
                }
                one(wants[0].then(|| {
                    let mut dcols = conv_cols_grad(&geo, self.p(*weight), &g);
                    if geo.is_pointwise() {
                        dcols
                    } else {
                        let mut dx = scratch(len(geo.input) * n);
                        geo.col2im(&mut dcols, &mut dx);
                        dx
                    }
                }))
            }
            Op::BatchNorm { gamma, beta, mean, var, eps, .. } => match &fwd.saved[i] {
                Saved::Stats { mean: m, invstd, .. } => {
                    let mut dx = g;
                    let (dgamma, dbeta) = batch_norm_backward(x, &mut dx, m, invstd, self.p(*gamma));
                    add_param(*gamma, dgamma);
                    add_param(*beta, dbeta);
                    one(wants[0].then_some(dx))
                }
                _ => {
                    let (scale, _) = eval_affine(self.p(*gamma), self.p(*beta), self.p(*mean), self.p(*var), *eps);
                    one(wants[0].then(|| channel_affine(&g, &scale, &vec![0.0; c])))
                }
            },
            Op::Linear { weight, bias } => {
                let xm = flatten(x, in_shape(0), n);
                let (dw, db, dx) = linear_backward(&xm, n, self.p(*weight), &g, (wants_params, wants[0]));
                if let Some(dw) = dw {
                    add_param(*weight, dw);
                }
                if let (Some(b), Some(db)) = (bias, db) {
                    add_param(*b, db);
                }
                one(dx.map(|d| unflatten(d, in_shape(0), n)))
            }
            // The output's gradient becomes the input's, in place.
            Op::Relu => {
                let mut g = g;
                match rule {
                    ReluRule::Standard => zip_map_into(&mut g, x, |gv, xv| relu_backward(ReluRule::Standard, gv, xv)),
                    _ => zip_map_into(&mut g, x, |gv, xv| relu_backward(rule, gv, xv)),
                }
                one(Some(g))
            }
            Op::Sigmoid => {
                let mut g = g;
                zip_map_into(&mut g, value(i)?, |gv, yv| gv * yv * (1.0 - yv));
                one(Some(g))
            }
            Op::Tanh => {
                let mut g = g;
                zip_map_into(&mut g, value(i)?, |gv, yv| gv * (1.0 - yv * yv));
                one(Some(g))
            }
            // Gradients that are sparse or cheap to add go into the input's gradient in place when it has one
            // already (CBAM's pools share their input with its gates): no buffer of zeros, no extra pass.
            Op::MaxPool2 { .. } | Op::GlobalMaxPool => {
                let Saved::Index(arg) = &fwd.saved[i] else { unreachable!("pooling saves its arg-max") };
                let (_, hi, wi) = in_shape(0);
                one(add_or_new(
                    &mut acc[node.inputs[0]],
                    |d| scatter_into(arg, &g, hw, d),
                    || scatter(arg, &g, hw, hi * wi),
                ))
            }
            Op::GlobalAvgPool => {
                let (_, hi, wi) = in_shape(0);
                one(add_or_new(&mut acc[node.inputs[0]], |d| spread_into(&g, d), || spread(&g, hi * wi)))
            }
            Op::ChannelMax => {
                let Saved::Index(arg) = &fwd.saved[i] else { unreachable!("channel max saves its arg-max") };
                let ci = in_shape(0).0;
                let new = || {
                    let mut d = zeros(ci * g.len());
                    pick_into(arg, &g, &mut d);
                    d
                };
                one(add_or_new(&mut acc[node.inputs[0]], |d| pick_into(arg, &g, d), new))
            }
            Op::ChannelMean => {
                let ci = in_shape(0).0;
                let s = 1.0 / ci as f32;
                let new = || per_channel(&g, ci, |_, _, v| v * s);
                one(add_or_new(&mut acc[node.inputs[0]], |d| add_to_channels(&g, s, d), new))
            }
            Op::Concat => {
                let mut at = 0;
                node.inputs
                    .iter()
                    .map(|&j| {
                        let l = len(self.graph.nodes[j].shape) * n;
                        at += l;
                        Some(g[at - l..at].to_vec())
                    })
                    .collect()
            }
            Op::Add => vec![add_or_new(&mut acc[node.inputs[0]], |d| add_into(d, &g), || g.clone()), Some(g)],
            Op::Mul => {
                let how = Broadcast::of(node.shape, in_shape(1));
                let b = value(node.inputs[1])?;
                if let Some(d) = &mut acc[node.inputs[0]] {
                    let db = how.reduce(&g, x, n, hw);
                    how.mul_into(&g, b, n, hw, d);
                    vec![None, Some(db)]
                } else {
                    let mut da = g;
                    let db = how.backward_in_place(&mut da, x, b, n, hw);
                    vec![Some(da), Some(db)]
                }
            }
            Op::Gate => {
                let t = value(node.inputs[1])?;
                let dm = zip_map(&g, t, |a, b| a * b);
                let dt = zip_map(&g, x, |a, m| a * (1.0 + m));
                vec![Some(dm), Some(dt)]
            }
            Op::Upsample { .. } => {
                let (_, hi, wi) = in_shape(0);
                one(Some(upsample(&g, (hi, wi), (h, w), true)))
            }
            Op::SpatialSoftmax => one(Some(softmax_rows_backward(value(i)?, &g, hw))),
            Op::Softmax => {
                let (y, gt) = (transpose(value(i)?, c, n), transpose(&g, c, n));
                one(Some(transpose(&softmax_rows_backward(&y, &gt, c), n, c)))
            }
            Op::HeadPool { heads } => {
                let (vc, hi, wi) = in_shape(0);
                let m = value(node.inputs[1])?;
                let (per, hwi) = (vc / heads, hi * wi);
                let mut dv = zeros(x.len());
                let mut dm = zeros(m.len());
                for (r, &gv) in g.iter().enumerate() {
                    let (ch, ni) = (r / n, r % n);
                    let mo = ((ch / per) * n + ni) * hwi;
                    for p in 0..hwi {
                        dv[r * hwi + p] = gv * m[mo + p];
                        dm[mo + p] += gv * x[r * hwi + p];
                    }
                }
                vec![Some(dv), Some(dm)]
            }
            Op::HeadMix { heads } => {
                let wts = value(node.inputs[1])?;
                let mut dv = zeros(x.len());
                let mut dw = zeros(wts.len());
                for hd in 0..*heads {
                    for j in 0..c {
                        for ni in 0..n {
                            let (vi, wi) = ((hd * c + j) * n + ni, hd * n + ni);
                            dv[vi] = g[j * n + ni] * wts[wi];
                            dw[wi] += g[j * n + ni] * x[vi];
                        }
                    }
                }
                vec![Some(dv), Some(dw)]
            }
            Op::LogSoftmaxGroups { groups } => {
                let per = c / groups;
                let (y, gt) = (transpose(value(i)?, c, n), transpose(&g, c, n));
                let mut dx = zeros(y.len());
                for ((d, yr), gr) in dx.chunks_mut(per).zip(y.chunks(per)).zip(gt.chunks(per)) {
                    let sum: f32 = gr.iter().sum();
                    d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(o, (&yv, &gv))| *o = gv - yv.exp() * sum);
                }
                one(Some(transpose(&dx, n, c)))
            }
        })
    }
}

/// `g` times DeepLIFT's multiplier of the element-wise `op` between input `a` (output `ya`) and reference `b` (`yb`).
fn secant(op: &Op, g: f32, a: f32, b: f32, ya: f32, yb: f32) -> f32 {
    let dx = a - b;
    match op {
        Op::Relu if dx.abs() < 1e-10 => g * (a > 0.0) as u8 as f32,
        Op::Relu => g * (ya - yb) / dx,
        Op::Sigmoid => {
            let (a, b) = (a as f64, b as f64);
            let d = a - b;
            // (1 − e^(−d))/d → 1 as d → 0; σ(a)·σ(−b) = σ(a)(1 − σ(b)), each in f64 from the pre-activations.
            let ratio = if d.abs() < 1e-12 { 1.0 } else { -(-d).exp_m1() / d };
            (g as f64 * ratio / ((1.0 + (-a).exp()) * (1.0 + b.exp()))) as f32
        }
        _ => {
            let (a, b) = (a as f64, b as f64);
            let d = a - b;
            let ratio = if d.abs() < 1e-12 { 1.0 } else { d.tanh() / d };
            // 1 − tanh a·tanh b = cosh(a − b)/(cosh a·cosh b), without the cancellation near ±1.
            let mut scale = d.cosh() / (a.cosh() * b.cosh());
            if !scale.is_finite() {
                scale = 1.0 - ya as f64 * yb as f64;
            }
            (g as f64 * scale * ratio) as f32
        }
    }
}

/// A contribution to a gradient: added into `slot` in place by `add` when the slot holds one (nothing left to
/// accumulate), or made whole by `new`.
fn add_or_new(slot: &mut Grad, add: impl FnOnce(&mut [f32]), new: impl FnOnce() -> Vec<f32>) -> Grad {
    match slot {
        Some(s) => {
            add(s);
            None
        }
        None => Some(new()),
    }
}

/// Adds `g` into `slot` (or fills it).
fn accumulate(slot: &mut Option<Vec<f32>>, g: Vec<f32>) {
    match slot {
        Some(s) => add_into(s, &g),
        None => *slot = Some(g),
    }
}

/// BatchNorm in evaluation mode as `x·scale + shift` per channel.
pub(crate) fn eval_affine(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + eps).sqrt()).collect();
    let shift = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    (scale, shift)
}

/// `x` (`n × C×H×W`, image-major) channel-major.
fn channel_major(graph: &Graph, x: &[f32], n: usize) -> Result<Vec<f32>> {
    let (c, h, w) = graph.input_shape();
    if x.len() != n * c * h * w {
        crate::invalid!("{} values are not {n} images of {c}×{h}×{w}", x.len());
    }
    Ok(transpose_planes(x, n, c, h * w))
}

/// A value (channel-major) image-major.
fn image_major(v: &[f32], (c, h, w): crate::graph::Shape, n: usize) -> Vec<f32> {
    transpose_planes(v, c, n, h * w)
}

impl Executor<'_> {
    /// One training step on `x` (`n` images, image-major) with `labels`: the forward pass with batch statistics,
    /// the mean cross-entropy plus the graph's penalties, and every parameter's gradient.
    pub fn train_step(&self, x: &[f32], labels: &[u32], n: usize) -> Result<TrainOutput> {
        let classes = self.graph.classes();
        if n == 0 || labels.len() != n {
            crate::invalid!("a training batch of {n} images needs {n} labels (got {})", labels.len());
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            crate::invalid!("label {l} is outside 0..{classes}");
        }
        let out = self.graph.output;
        let mut roots = vec![out];
        roots.extend(self.graph.penalties.iter().map(|Penalty::HeadOverlap { node, .. }| *node));
        let mut fwd = self.forward(channel_major(self.graph, x, n)?, n, true, &roots, true)?;
        let logits = transpose(&fwd.values[out], classes, n);
        // Mean cross-entropy and its gradient (softmax − one-hot)/n.
        let mut loss = 0f64;
        let mut dlogits = zeros(n * classes);
        for (ni, row) in logits.chunks(classes).enumerate() {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            let t = labels[ni] as usize;
            loss += sum.ln() + (max - row[t]) as f64;
            for (j, &v) in row.iter().enumerate() {
                let p = ((v - max) as f64).exp() / sum;
                dlogits[j * n + ni] = ((p - (j == t) as u8 as f64) / n as f64) as f32;
            }
        }
        let mut loss = loss / n as f64;
        let mut seeds = vec![(out, dlogits)];
        for Penalty::HeadOverlap { node, weight } in &self.graph.penalties {
            let (value, grad) = head_overlap(&fwd.values[*node], self.graph.nodes[*node].shape, n, *weight);
            loss += value;
            seeds.push((*node, grad));
        }
        let (_, grads) = self.backward(&mut fwd, seeds, ReluRule::Standard, None, true, true)?;
        let stats = self
            .graph
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| match &fwd.saved[i] {
                Saved::Stats { mean, var, .. } => {
                    let (_, h, w) = node.shape;
                    Some(BatchStatistics { node: i, mean: mean.clone(), var: var.clone(), count: n * h * w })
                }
                _ => None,
            })
            .collect();
        Ok(TrainOutput { logits, loss: loss as f32, grads, stats })
    }

    /// Evaluation-mode logits (`n × classes`).
    pub fn logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let out = self.graph.output;
        let fwd = self.forward(channel_major(self.graph, x, n)?, n, false, &[out], false)?;
        Ok(transpose(&fwd.values[out], self.graph.classes(), n))
    }

    /// Evaluation-mode logits (`n × classes`) with `features[tap]` replaced by `value` (`n ×` the tap's shape,
    /// image-major): the forward pass from the tap on (layers that only feed the tap are not computed).
    pub fn logits_from(&self, x: &[f32], n: usize, tap: usize, value: &[f32]) -> Result<Vec<f32>> {
        let Some(&(_, node)) = self.graph.taps.get(tap) else {
            crate::invalid!("layer {tap} does not exist (the model has features 0..{})", self.graph.taps.len());
        };
        let (c, h, w) = self.graph.nodes[node].shape;
        if value.len() != n * c * h * w {
            crate::invalid!("{} values are not {n} activations of {c}×{h}×{w}", value.len());
        }
        let out = self.graph.output;
        let given = Some((node, transpose_planes(value, n, c, h * w)));
        let fwd = self.forward_given(channel_major(self.graph, x, n)?, n, false, &[out], false, given)?;
        Ok(transpose(&fwd.values[out], self.graph.classes(), n))
    }

    /// The gradient of each image's `score` of its target with respect to the input (`tap` None) or to
    /// `features[tap]`, with the ReLU backward `rule`, image-major; for a tap, also its value.
    pub fn gradient(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        score: Score,
        rule: ReluRule,
        tap: Option<usize>,
    ) -> Result<Gradient> {
        let classes = self.graph.classes();
        let out = self.graph.output;
        let stop = match tap {
            Some(t) => self.graph.taps[t].1,
            None => 0,
        };
        let mut fwd = self.forward(channel_major(self.graph, x, n)?, n, false, &[out], true)?;
        let z = &fwd.values[out];
        let mut seed = zeros(classes * n);
        for (ni, &t) in targets.iter().enumerate() {
            let t = t as usize;
            match score {
                Score::Logit => seed[t * n + ni] = 1.0,
                Score::Prob => {
                    let row: Vec<f32> = (0..classes).map(|j| z[j * n + ni]).collect();
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    let pt = e[t] / sum;
                    for j in 0..classes {
                        seed[j * n + ni] = pt * ((j == t) as u8 as f32 - e[j] / sum);
                    }
                }
            }
        }
        let (grad, _) = self.backward(&mut fwd, vec![(out, seed)], rule, Some(stop), false, true)?;
        let shape = self.graph.nodes[stop].shape;
        let grad = image_major(&grad.expect("a stop node was given"), shape, n);
        let activation = tap.map(|_| image_major(&fwd.values[stop], shape, n));
        Ok(Gradient { grad, activation })
    }

    /// DeepLIFT's rescale rule (Shrikumar, Greenside & Kundaje 2017): `x` and `reference` go forward; the target's
    /// logit sends its gradient back through every layer, except that ReLU, sigmoid and tanh multiply by the
    /// secant Δy/Δx between input and reference instead of their derivative. ReLU's secant is computed as Captum
    /// computes it, `(g·Δy)/Δx` in `f32` with the derivative where |Δx| < 1e-10; sigmoid's and tanh's in `f64` from
    /// identities that do not subtract nearly equal values (σ(a) − σ(b) = σ(a)(1 − σ(b))(1 − e^(b−a)),
    /// tanh a − tanh b = (1 − tanh a·tanh b)·tanh(a − b)), so that a small Δx does not turn rounding into large
    /// multipliers. Max-pooling passes its gradient (the paper's choice for max operations), as do the other
    /// layers. Returns (x − x′) ⊙ the multipliers, image-major.
    pub fn rescale(&self, x: &[f32], reference: &[f32], n: usize, targets: &[u32], score: Score) -> Result<Vec<f32>> {
        if score != Score::Logit {
            crate::invalid!("DeepLIFT explains the logit (score logit), not the probability");
        }
        if reference.len() != x.len() {
            crate::invalid!("{} reference values for {} input values", reference.len(), x.len());
        }
        let nodes = &self.graph.nodes;
        let (classes, out) = (self.graph.classes(), self.graph.output);
        let fi = self.forward(channel_major(self.graph, x, n)?, n, false, &[out], true)?;
        let fr = self.forward(channel_major(self.graph, reference, n)?, n, false, &[out], true)?;
        let mut seed = zeros(classes * n);
        for (ni, &t) in targets.iter().enumerate() {
            seed[t as usize * n + ni] = 1.0;
        }
        let mut grads: Vec<Option<Vec<f32>>> = (0..nodes.len()).map(|_| None).collect();
        grads[out] = Some(seed);
        for i in (1..nodes.len()).rev() {
            let Some(g) = grads[i].take() else { continue };
            let node = &nodes[i];
            let din = match node.op {
                Op::Relu | Op::Sigmoid | Op::Tanh => {
                    let j = node.inputs[0];
                    let (a, b, ya, yb) = (&fi.values[j], &fr.values[j], &fi.values[i], &fr.values[i]);
                    let d: Vec<f32> = (0..g.len()).map(|p| secant(&node.op, g[p], a[p], b[p], ya[p], yb[p])).collect();
                    vec![Some(d)]
                }
                _ => {
                    let wants = vec![true; node.inputs.len()];
                    self.node_backward(i, &fi, g, ReluRule::Standard, &wants, None, &mut grads)?
                }
            };
            for (k, d) in din.into_iter().enumerate() {
                if let Some(d) = d {
                    accumulate(&mut grads[node.inputs[k]], d);
                }
            }
        }
        let multipliers = image_major(&grads[0].take().unwrap_or_else(|| zeros(x.len())), nodes[0].shape, n);
        Ok(x.iter().zip(reference).zip(&multipliers).map(|((a, b), m)| (a - b) * m).collect())
    }

    /// Each of the graph's attention maps for `n` images (`n × h × w` each, image-major), with its name and size.
    pub fn maps(&self, x: &[f32], n: usize) -> Result<Vec<Map>> {
        let roots: Vec<NodeId> = self.graph.maps.iter().map(|(_, node, _)| *node).collect();
        let fwd = self.forward(channel_major(self.graph, x, n)?, n, false, &roots, false)?;
        Ok(self
            .graph
            .maps
            .iter()
            .map(|(name, node, of)| {
                let (c, h, w) = self.graph.nodes[*node].shape;
                let v = &fwd.values[*node];
                let hw = h * w;
                let map = match of {
                    crate::graph::MapOf::Channel(k) => v[k * n * hw..][..n * hw].to_vec(),
                    crate::graph::MapOf::ChannelMean => {
                        let mut m = zeros(n * hw);
                        for ch in 0..c {
                            m.iter_mut().zip(&v[ch * n * hw..][..n * hw]).for_each(|(o, x)| *o += x);
                        }
                        m.iter_mut().for_each(|o| *o /= c as f32);
                        m
                    }
                };
                (name.clone(), (h, w), map)
            })
            .collect())
    }
}

/// WARN's head-overlap penalty of masks `m` (`heads × n × h·w`) and its gradient.
fn head_overlap(m: &[f32], (heads, h, w): crate::graph::Shape, n: usize, weight: f32) -> (f64, Vec<f32>) {
    let (ho, wo) = (h / 2, w / 2);
    let q = ho * wo;
    // pooled[a][ni][q]
    let mut pooled = zeros(heads * n * q);
    for a in 0..heads {
        for ni in 0..n {
            let plane = &m[(a * n + ni) * h * w..][..h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let s = plane[2 * oy * w + 2 * ox]
                        + plane[2 * oy * w + 2 * ox + 1]
                        + plane[(2 * oy + 1) * w + 2 * ox]
                        + plane[(2 * oy + 1) * w + 2 * ox + 1];
                    pooled[(a * n + ni) * q + oy * wo + ox] = s / 4.0;
                }
            }
        }
    }
    let scale = weight as f64 / (n * heads * heads) as f64;
    let mut value = 0f64;
    let mut dpooled = zeros(pooled.len());
    for ni in 0..n {
        let row = |a: usize| &pooled[(a * n + ni) * q..][..q];
        for a in 0..heads {
            for b in 0..heads {
                if a == b {
                    continue;
                }
                let gram: f32 = row(a).iter().zip(row(b)).map(|(x, y)| x * y).sum();
                value += (gram as f64).powi(2);
                // d(gram²)/d pooled[a] = 2·gram·pooled[b] (and symmetrically for b, which the (b, a) term adds).
                let k = (2.0 * scale * gram as f64) as f32;
                for j in 0..q {
                    dpooled[(a * n + ni) * q + j] += 2.0 * k * pooled[(b * n + ni) * q + j];
                }
            }
        }
    }
    let mut dm = zeros(m.len());
    for a in 0..heads {
        for ni in 0..n {
            let plane = &mut dm[(a * n + ni) * h * w..][..h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let d = dpooled[(a * n + ni) * q + oy * wo + ox] / 4.0;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        plane[(2 * oy + dy) * w + 2 * ox + dx] = d;
                    }
                }
            }
        }
    }
    (value * scale, dm)
}

/// A graph with constant parameters as an [`Engine`]; work is done in chunks of images (bounded memory).
pub struct GraphEngine {
    graph: Arc<Graph>,
    params: Vec<Vec<f32>>,
    /// Per parameter, a convolution weight's flipped form once an input gradient has needed it.
    flipped: Vec<OnceLock<Vec<f32>>>,
    /// The CPU plan of the same network, for the GPU's plan engine (SimpleCNN family; `gpu::GpuGraph` runs any
    /// graph).
    plan: Option<super::Plan>,
}

/// Images per pass of the engine.
const CHUNK: usize = 32;

impl GraphEngine {
    pub fn new(graph: Arc<Graph>, params: Vec<Vec<f32>>, plan: Option<super::Plan>) -> Result<Self> {
        Executor::new(&graph, params.iter().map(|p| p.as_slice()).collect())?;
        let flipped = params.iter().map(|_| OnceLock::new()).collect();
        Ok(GraphEngine { graph, params, flipped, plan })
    }

    fn executor(&self) -> Executor<'_> {
        Executor {
            graph: &self.graph,
            params: self.params.iter().map(|p| p.as_slice()).collect(),
            flipped: Some(&self.flipped),
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph and its parameter values (`graph.params` order): what the GPU's graph engine uploads.
    pub fn parts(&self) -> (Arc<Graph>, &[Vec<f32>]) {
        (self.graph.clone(), &self.params)
    }

    /// The attention maps of `n` images.
    pub fn maps(&self, x: &[f32], n: usize) -> Result<Vec<Map>> {
        on_pool(n, || self.executor().maps(x, n))
    }
}

impl GraphEngine {
    /// The CPU plan this engine was given for the GPU, if any.
    pub fn plan(&self) -> Option<&super::Plan> {
        self.plan.as_ref()
    }
}

impl Engine for GraphEngine {
    fn classes(&self) -> usize {
        self.graph.classes()
    }

    fn layer_shape(&self, layer: usize) -> (usize, usize, usize) {
        self.graph.tap_shape(layer)
    }

    fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let per = len(self.graph.input_shape());
        if x.len() != n * per {
            channel_major(&self.graph, x, n)?;
        }
        on_pool(n, || {
            let ex = self.executor();
            let mut out = Vec::with_capacity(n * self.classes());
            for chunk in x.chunks(CHUNK * per.max(1)) {
                out.extend(ex.logits(chunk, chunk.len() / per)?);
            }
            Ok(out)
        })
    }

    fn gradient(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        score: Score,
        rule: ReluRule,
        layer: Option<usize>,
    ) -> Result<Gradient> {
        let per = len(self.graph.input_shape());
        self.graph.check_request(x, n, targets, layer)?;
        on_pool(n, || {
            let ex = self.executor();
            let mut all = Gradient::empty(layer.is_some());
            for (chunk, ts) in x.chunks(CHUNK * per.max(1)).zip(targets.chunks(CHUNK)) {
                all.append(ex.gradient(chunk, ts.len(), ts, score, rule, layer)?);
            }
            Ok(all)
        })
    }

    fn forward_from(&self, x: &[f32], n: usize, layer: usize, activation: &[f32]) -> Result<Vec<f32>> {
        let per = len(self.graph.input_shape());
        let Some(&(_, node)) = self.graph.taps.get(layer) else {
            crate::invalid!("layer {layer} does not exist (the model has features 0..{})", self.graph.taps.len());
        };
        let per_act = len(self.graph.nodes[node].shape);
        if x.len() != n * per || activation.len() != n * per_act {
            crate::invalid!("{} input and {} activation values are not {n} images", x.len(), activation.len());
        }
        on_pool(n, || {
            let ex = self.executor();
            let mut out = Vec::with_capacity(n * self.classes());
            for (chunk, act) in x.chunks(CHUNK * per.max(1)).zip(activation.chunks(CHUNK * per_act.max(1))) {
                out.extend(ex.logits_from(chunk, chunk.len() / per.max(1), layer, act)?);
            }
            Ok(out)
        })
    }

    fn propagate(&self, x: &[f32], n: usize, targets: &[u32], score: Score, how: &Propagation) -> Result<Vec<f32>> {
        self.graph.check_request(x, n, targets, None)?;
        on_pool(n, || self.propagate_here(x, targets, score, how))
    }

    fn can_propagate(&self, how: &Propagation) -> bool {
        match how {
            Propagation::Rescale { .. } => true,
            Propagation::Lrp { .. } => self.executor().lrp_unsupported().is_none(),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl GraphEngine {
    /// [`Engine::propagate`] on the calling thread, after its checks.
    fn propagate_here(&self, x: &[f32], targets: &[u32], score: Score, how: &Propagation) -> Result<Vec<f32>> {
        let per = len(self.graph.input_shape());
        let ex = self.executor();
        let mut out = Vec::with_capacity(x.len());
        match how {
            Propagation::Rescale { reference } => {
                if reference.len() != x.len() {
                    crate::invalid!("{} reference values for {} input values", reference.len(), x.len());
                }
                let step = CHUNK * per.max(1);
                for ((chunk, r), ts) in x.chunks(step).zip(reference.chunks(step)).zip(targets.chunks(CHUNK)) {
                    out.extend(ex.rescale(chunk, r, ts.len(), ts, score)?);
                }
            }
            Propagation::Lrp { composite, bounds } => {
                if score != Score::Logit {
                    crate::invalid!("LRP explains the logit (score logit), not the probability");
                }
                for (chunk, ts) in x.chunks(CHUNK * per.max(1)).zip(targets.chunks(CHUNK)) {
                    out.extend(ex.lrp(chunk, ts.len(), ts, composite, bounds)?);
                }
            }
        }
        Ok(out)
    }
}
