//! Layer-wise relevance propagation (Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier
//! Decisions by Layer-Wise Relevance Propagation"; the rules as Montavon et al. 2019, "Layer-Wise Relevance
//! Propagation: An Overview", and as Zennit computes them) on the graph: the target's one-hot output relevance goes
//! back layer by layer. Convolutions and linear layers redistribute it by their rule (BatchNorm folded into the
//! convolution before it, Zennit's `SequentialMergeBatchNorm`); ReLU and BatchNorm pass it on (Zennit's `Pass`);
//! max-pooling sends it to each window's maximum and pooling by the mean spreads it evenly (their gradients).

use super::kernels::*;
use super::{Executor, Forward};
use crate::graph::{len, Composite, LrpRule, NodeId, Op, Shape};
use crate::Result;

/// Zennit's stabiliser of every rule but ε: `z + ε·sign(z)`, with sign(0) = +1.
const STABILIZER: f32 = 1e-6;

fn stabilize(z: f32, eps: f32) -> f32 {
    z + ((z == 0.0) as u8 as f32 + sign(z)) * eps
}

/// torch.sign: 0 at 0.
fn sign(z: f32) -> f32 {
    if z > 0.0 {
        1.0
    } else if z < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// A convolution or linear layer with (folded) parameters, over `n` images of `input`.
struct Affine {
    conv: Option<ConvGeometry>,
    input: Shape,
    out: usize,
    n: usize,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Affine {
    /// The layer with weights `w` and bias `b` applied to `x` (the layer's input layout).
    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        match &self.conv {
            Some(g) if g.is_pointwise() => conv_forward(g, x, w, b),
            Some(g) => {
                let mut cols = scratch(g.rows() * g.positions());
                g.im2col(x, &mut cols);
                conv_forward(g, &cols, w, b)
            }
            None => linear_forward(&flatten(x, self.input, self.n), self.n, w, b, self.out),
        }
    }

    /// `Wᵀ·s` for weights `w`: the gradient of `Σ s·forward(x)` with respect to `x`.
    fn backward(&self, w: &[f32], s: &[f32]) -> Vec<f32> {
        match &self.conv {
            Some(g) => {
                let mut dcols = conv_cols_grad(g, w, s);
                if g.is_pointwise() {
                    dcols
                } else {
                    let mut dx = scratch(len(g.input) * g.n);
                    g.col2im(&mut dcols, &mut dx);
                    dx
                }
            }
            None => {
                let zero = zeros(len(self.input) * self.n);
                let xm = flatten(&zero, self.input, self.n);
                let (_, _, dx) = linear_backward(&xm, self.n, w, s, (false, true));
                unflatten(dx.expect("asked for"), self.input, self.n)
            }
        }
    }

    /// `R_in` for output relevance `r` and input `x` under `rule`.
    fn relevance(&self, rule: &LrpRule, x: &[f32], r: &[f32], bounds: &(Vec<f32>, Vec<f32>)) -> Vec<f32> {
        let w = &self.weight;
        let b = self.bias.as_deref();
        let pos = |v: &[f32]| -> Vec<f32> { v.iter().map(|a| a.max(0.0)).collect() };
        let neg = |v: &[f32]| -> Vec<f32> { v.iter().map(|a| a.min(0.0)).collect() };
        let div = |r: &[f32], z: &[f32], eps: f32| -> Vec<f32> {
            r.iter().zip(z).map(|(r, z)| r / stabilize(*z, eps)).collect()
        };
        let add = |a: Vec<f32>, b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(a, b)| a + b).collect() };
        let times = |a: &[f32], g: Vec<f32>| -> Vec<f32> { a.iter().zip(g).map(|(a, g)| a * g).collect() };
        match *rule {
            LrpRule::Epsilon(eps) => {
                let s = div(r, &self.forward(x, w, b), eps);
                times(x, self.backward(w, &s))
            }
            LrpRule::AlphaBeta { alpha, beta } => {
                let (xp, xn, wp, wn) = (pos(x), neg(x), pos(w), neg(w));
                let (bp, bn) = (b.map(pos), b.map(neg));
                let zp = add(self.forward(&xp, &wp, bp.as_deref()), &self.forward(&xn, &wn, None));
                let sp = div(r, &zp, STABILIZER);
                let plus = add(times(&xp, self.backward(&wp, &sp)), &times(&xn, self.backward(&wn, &sp)));
                if beta == 0.0 && alpha == 1.0 {
                    return plus;
                }
                let zn = add(self.forward(&xp, &wn, bn.as_deref()), &self.forward(&xn, &wp, None));
                let sn = div(r, &zn, STABILIZER);
                let minus = add(times(&xp, self.backward(&wn, &sn)), &times(&xn, self.backward(&wp, &sn)));
                plus.iter().zip(&minus).map(|(p, m)| alpha * p - beta * m).collect()
            }
            LrpRule::Gamma(gamma) => {
                let (xp, xn) = (pos(x), neg(x));
                let gp = |v: &[f32]| -> Vec<f32> { v.iter().map(|a| a + gamma * a.max(0.0)).collect() };
                let gn = |v: &[f32]| -> Vec<f32> { v.iter().map(|a| a + gamma * a.min(0.0)).collect() };
                let (wgp, wgn, bgp, bgn) = (gp(w), gn(w), b.map(gp), b.map(gn));
                let z = self.forward(x, w, b);
                let z01 = add(self.forward(&xp, &wgp, bgp.as_deref()), &self.forward(&xn, &wgn, None));
                let z23 = add(self.forward(&xp, &wgn, bgn.as_deref()), &self.forward(&xn, &wgp, None));
                let mask = |up: bool| -> Vec<f32> {
                    r.iter().zip(&z).map(|(r, z)| ((if up { *z > 0.0 } else { *z < 0.0 }) as u8 as f32) * r).collect()
                };
                let s01 = div(&mask(true), &z01, STABILIZER);
                let s23 = div(&mask(false), &z23, STABILIZER);
                let a = add(times(&xp, self.backward(&wgp, &s01)), &times(&xn, self.backward(&wgn, &s01)));
                let c = add(times(&xp, self.backward(&wgn, &s23)), &times(&xn, self.backward(&wgp, &s23)));
                add(a, &c)
            }
            LrpRule::ZBox => {
                let (low, high) = self.bounds(bounds);
                let (wp, wn) = (pos(w), neg(w));
                let (bp, bn) = (b.map(pos), b.map(neg));
                let z = self.forward(x, w, b);
                let zl = self.forward(&low, &wp, bp.as_deref());
                let zh = self.forward(&high, &wn, bn.as_deref());
                let d: Vec<f32> = z.iter().zip(zl.iter().zip(&zh)).map(|(z, (l, h))| z - (0.0 + l + h)).collect();
                let s = div(r, &d, STABILIZER);
                let (gx, gl, gh) = (self.backward(w, &s), self.backward(&wp, &s), self.backward(&wn, &s));
                (0..x.len()).map(|p| x[p] * gx[p] - (0.0 + low[p] * gl[p] + high[p] * gh[p])).collect()
            }
            LrpRule::Flat => {
                let ones_w = vec![1.0; w.len()];
                let z = self.forward(&vec![1.0; x.len()], &ones_w, None);
                self.backward(&ones_w, &div(r, &z, STABILIZER))
            }
        }
    }

    /// The lowest and highest input values per channel, laid out as the input (`c × n × h·w`).
    fn bounds(&self, (low, high): &(Vec<f32>, Vec<f32>)) -> (Vec<f32>, Vec<f32>) {
        let (c, h, w) = self.input;
        let per = self.n * h * w;
        let spread = |v: &[f32]| -> Vec<f32> { (0..c * per).map(|p| v[(p / per).min(v.len() - 1)]).collect() };
        (spread(low), spread(high))
    }
}

impl Executor<'_> {
    /// Why the graph has no LRP rule somewhere, if it has not.
    pub fn lrp_unsupported(&self) -> Option<String> {
        self.graph.nodes.iter().find_map(|node| match node.op {
            Op::Input | Op::Conv { .. } | Op::BatchNorm { .. } | Op::Linear { .. } | Op::Relu => None,
            Op::MaxPool2 { .. } | Op::GlobalAvgPool => None,
            ref other => Some(format!("LRP has no rule for the model's {other:?} layers (attention products, …)")),
        })
    }

    /// The relevance of each input value for `n` images (`x` image-major) and their targets under `composite`;
    /// `bounds`: the lowest and highest input value per channel (z^B). Image-major.
    pub fn lrp(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        composite: &Composite,
        bounds: &(Vec<f32>, Vec<f32>),
    ) -> Result<Vec<f32>> {
        if let Some(why) = self.lrp_unsupported() {
            crate::invalid!("{why}");
        }
        let nodes = &self.graph.nodes;
        let (classes, out) = (self.graph.classes(), self.graph.output);
        let fwd: Forward = self.forward(super::channel_major(self.graph, x, n)?, n, false, &[out], true)?;
        // BatchNorm folded into the convolution or linear layer that feeds it alone.
        let mut consumers = vec![0usize; nodes.len()];
        for node in nodes {
            for &j in &node.inputs {
                consumers[j] += 1;
            }
        }
        let mut folded: Vec<Option<NodeId>> = vec![None; nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            if let Op::BatchNorm { .. } = node.op {
                let j = node.inputs[0];
                if matches!(nodes[j].op, Op::Conv { .. } | Op::Linear { .. }) && consumers[j] == 1 {
                    folded[j] = Some(i);
                }
            }
        }
        let first = nodes.iter().position(|n| matches!(n.op, Op::Conv { .. } | Op::Linear { .. }));
        let mut rel: Vec<Option<Vec<f32>>> = (0..nodes.len()).map(|_| None).collect();
        let mut seed = zeros(classes * n);
        for (ni, &t) in targets.iter().enumerate() {
            seed[t as usize * n + ni] = 1.0;
        }
        rel[out] = Some(seed);
        for i in (1..nodes.len()).rev() {
            let Some(r) = rel[i].take() else { continue };
            let node = &nodes[i];
            let j = node.inputs[0];
            let x = &fwd.values[j];
            let down = match &node.op {
                Op::Relu | Op::BatchNorm { .. } => r,
                Op::MaxPool2 { .. } => {
                    let super::Saved::Index(arg) = &fwd.saved[i] else { unreachable!("pooling saves its arg-max") };
                    let (_, hi, wi) = nodes[j].shape;
                    scatter(arg, &r, node.shape.1 * node.shape.2, hi * wi)
                }
                Op::GlobalAvgPool => {
                    let m = nodes[j].shape.1 * nodes[j].shape.2;
                    r.iter().flat_map(|&v| std::iter::repeat_n(v / m as f32, m)).collect()
                }
                Op::Conv { .. } | Op::Linear { .. } => {
                    let layer = self.affine(i, folded[i], n)?;
                    let rule = if Some(i) == first {
                        &composite.first
                    } else if matches!(node.op, Op::Conv { .. }) {
                        &composite.conv
                    } else {
                        &composite.linear
                    };
                    layer.relevance(rule, x, &r, bounds)
                }
                _ => unreachable!("checked by lrp_unsupported"),
            };
            match &mut rel[j] {
                Some(acc) => add_into(acc, &down),
                slot => *slot = Some(down),
            }
        }
        let r0 = rel[0].take().unwrap_or_else(|| zeros(x.len()));
        Ok(super::image_major(&r0, nodes[0].shape, n))
    }

    /// Node `i` (a convolution or linear layer) with the BatchNorm node `bn` folded in, as Zennit's
    /// `merge_batch_norm`: `W·γ/√(var + ε)`, `(b − mean)·γ/√(var + ε) + β`.
    fn affine(&self, i: NodeId, bn: Option<NodeId>, n: usize) -> Result<Affine> {
        let node = &self.graph.nodes[i];
        let input = self.graph.nodes[node.inputs[0]].shape;
        let out = node.shape.0;
        let (conv, weight, bias) = match node.op {
            Op::Conv { weight, bias, k, stride, pad } => {
                (Some(ConvGeometry { n, input, c_out: out, k, stride, pad }), weight, bias)
            }
            Op::Linear { weight, bias } => (None, weight, bias),
            _ => crate::invalid!("node {i} is not a convolution or linear layer"),
        };
        let mut w = self.p(weight).to_vec();
        let mut b = bias.map(|b| self.p(b).to_vec());
        if let Some(Op::BatchNorm { gamma, beta, mean, var, eps, .. }) = bn.map(|k| &self.graph.nodes[k].op) {
            let (gamma, beta, mean, var) = (self.p(*gamma), self.p(*beta), self.p(*mean), self.p(*var));
            let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + eps).sqrt()).collect();
            let per = w.len() / out;
            for (o, row) in w.chunks_mut(per).enumerate() {
                row.iter_mut().for_each(|v| *v *= scale[o]);
            }
            let b0 = b.take().unwrap_or_else(|| vec![0.0; out]);
            b = Some((0..out).map(|o| (b0[o] - mean[o]) * scale[o] + beta[o]).collect());
        }
        Ok(Affine { conv, input, out, n, weight: w, bias: b })
    }
}
