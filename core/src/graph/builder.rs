//! Emitting a [`Graph`]: each method adds one layer, checks its inputs' shapes and registers its parameters under
//! the current name prefix (`at("features").at(0)` → `features.0.weight`), as PyTorch names a `state_dict`.

use super::{len, Graph, MapOf, Node, NodeId, Op, Param, ParamId, Penalty, Shape};
use crate::Result;

/// A graph being emitted.
#[derive(Clone, Debug)]
pub struct Builder {
    graph: Graph,
}

/// A name prefix for parameters (`features.0`).
#[derive(Clone, Debug, Default)]
pub struct Scope(String);

impl Scope {
    pub fn root() -> Self {
        Scope(String::new())
    }

    /// `self.part`.
    pub fn at(&self, part: impl std::fmt::Display) -> Scope {
        if self.0.is_empty() {
            Scope(part.to_string())
        } else {
            Scope(format!("{}.{part}", self.0))
        }
    }

    fn name(&self, leaf: &str) -> String {
        self.at(leaf).0
    }
}

/// Options of a convolution.
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    pub out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub bias: bool,
}

impl Conv {
    /// `k×k`, stride 1, padding `pad`, with a bias.
    pub fn new(out: usize, k: usize, pad: usize) -> Self {
        Conv { out, k, stride: 1, pad, bias: true }
    }

    pub fn stride(self, stride: usize) -> Self {
        Conv { stride, ..self }
    }

    pub fn no_bias(self) -> Self {
        Conv { bias: false, ..self }
    }
}

impl Builder {
    /// A graph whose input is one image of `input`.
    pub fn new(input: Shape) -> Self {
        let input = Node { op: Op::Input, inputs: vec![], shape: input };
        Builder {
            graph: Graph {
                params: vec![],
                nodes: vec![input],
                output: 0,
                taps: vec![],
                penalties: vec![],
                maps: vec![],
            },
        }
    }

    pub fn input(&self) -> NodeId {
        0
    }

    pub fn shape(&self, node: NodeId) -> Shape {
        self.graph.nodes[node].shape
    }

    /// The parameter `scope.leaf`, registered on first use; a second use (shared weights) must agree on the shape.
    fn param(&mut self, scope: &Scope, leaf: &str, shape: &[usize], buffer: bool) -> Result<ParamId> {
        let name = scope.name(leaf);
        if let Some(id) = self.graph.param(&name) {
            if self.graph.params[id].shape != shape {
                crate::invalid!("graph: {name} used with shapes {:?} and {shape:?}", self.graph.params[id].shape);
            }
            return Ok(id);
        }
        self.graph.params.push(Param { name, shape: shape.to_vec(), buffer });
        Ok(self.graph.params.len() - 1)
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>, shape: Shape) -> NodeId {
        self.graph.nodes.push(Node { op, inputs, shape });
        self.graph.nodes.len() - 1
    }

    /// A convolution with parameters `scope.weight` (and `scope.bias`).
    pub fn conv(&mut self, x: NodeId, scope: &Scope, o: Conv) -> Result<NodeId> {
        let (c, h, w) = self.shape(x);
        if o.stride == 0 || h + 2 * o.pad < o.k || w + 2 * o.pad < o.k {
            crate::invalid!("graph: a {}×{} convolution does not fit a {c}×{h}×{w} input", o.k, o.k);
        }
        let weight = self.param(scope, "weight", &[o.out, c, o.k, o.k], false)?;
        let bias = if o.bias { Some(self.param(scope, "bias", &[o.out], false)?) } else { None };
        let out = |s: usize| (s + 2 * o.pad - o.k) / o.stride + 1;
        let op = Op::Conv { weight, bias, k: o.k, stride: o.stride, pad: o.pad };
        Ok(self.push(op, vec![x], (o.out, out(h), out(w))))
    }

    /// Batch normalisation with PyTorch's defaults (eps 1e-5, momentum 0.1) and keys `weight`, `bias`,
    /// `running_mean`, `running_var`.
    pub fn batch_norm(&mut self, x: NodeId, scope: &Scope) -> Result<NodeId> {
        let shape = self.shape(x);
        let c = shape.0;
        let gamma = self.param(scope, "weight", &[c], false)?;
        let beta = self.param(scope, "bias", &[c], false)?;
        let mean = self.param(scope, "running_mean", &[c], true)?;
        let var = self.param(scope, "running_var", &[c], true)?;
        Ok(self.push(Op::BatchNorm { gamma, beta, mean, var, eps: 1e-5, momentum: 0.1 }, vec![x], shape))
    }

    /// A fully connected layer on the flattened input, parameters `scope.weight` (and `scope.bias`).
    pub fn linear(&mut self, x: NodeId, scope: &Scope, out: usize, bias: bool) -> Result<NodeId> {
        let inp = len(self.shape(x));
        let weight = self.param(scope, "weight", &[out, inp], false)?;
        let bias = if bias { Some(self.param(scope, "bias", &[out], false)?) } else { None };
        Ok(self.push(Op::Linear { weight, bias }, vec![x], (out, 1, 1)))
    }

    /// A layer that keeps its input's shape.
    pub fn unary(&mut self, op: Op, x: NodeId) -> NodeId {
        let shape = self.shape(x);
        self.push(op, vec![x], shape)
    }

    pub fn relu(&mut self, x: NodeId) -> NodeId {
        self.unary(Op::Relu, x)
    }

    pub fn sigmoid(&mut self, x: NodeId) -> NodeId {
        self.unary(Op::Sigmoid, x)
    }

    pub fn tanh(&mut self, x: NodeId) -> NodeId {
        self.unary(Op::Tanh, x)
    }

    pub fn max_pool2(&mut self, x: NodeId, ceil: bool) -> Result<NodeId> {
        let (c, h, w) = self.shape(x);
        let (ho, wo) = if ceil { (h.div_ceil(2), w.div_ceil(2)) } else { (h / 2, w / 2) };
        if ho == 0 || wo == 0 {
            crate::invalid!("graph: 2×2 max-pooling of a {h}×{w} input");
        }
        Ok(self.push(Op::MaxPool2 { ceil }, vec![x], (c, ho, wo)))
    }

    pub fn global_avg_pool(&mut self, x: NodeId) -> NodeId {
        let c = self.shape(x).0;
        self.push(Op::GlobalAvgPool, vec![x], (c, 1, 1))
    }

    pub fn global_max_pool(&mut self, x: NodeId) -> NodeId {
        let c = self.shape(x).0;
        self.push(Op::GlobalMaxPool, vec![x], (c, 1, 1))
    }

    pub fn channel_max(&mut self, x: NodeId) -> NodeId {
        let (_, h, w) = self.shape(x);
        self.push(Op::ChannelMax, vec![x], (1, h, w))
    }

    pub fn channel_mean(&mut self, x: NodeId) -> NodeId {
        let (_, h, w) = self.shape(x);
        self.push(Op::ChannelMean, vec![x], (1, h, w))
    }

    pub fn concat(&mut self, xs: &[NodeId]) -> Result<NodeId> {
        let (_, h, w) = self.shape(xs[0]);
        if xs.iter().any(|&x| self.shape(x).1 != h || self.shape(x).2 != w) {
            crate::invalid!("graph: concatenating values of different sizes");
        }
        let c = xs.iter().map(|&x| self.shape(x).0).sum();
        Ok(self.push(Op::Concat, xs.to_vec(), (c, h, w)))
    }

    fn same(&self, a: NodeId, b: NodeId, what: &str) -> Result<Shape> {
        if self.shape(a) != self.shape(b) {
            crate::invalid!("graph: {what} of shapes {:?} and {:?}", self.shape(a), self.shape(b));
        }
        Ok(self.shape(a))
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let shape = self.same(a, b, "sum")?;
        Ok(self.push(Op::Add, vec![a, b], shape))
    }

    /// `a · b`, `b` of `a`'s shape, `(c, 1, 1)` or `(1, h, w)`.
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let ((c, h, w), sb) = (self.shape(a), self.shape(b));
        if sb != (c, h, w) && sb != (c, 1, 1) && sb != (1, h, w) {
            crate::invalid!("graph: a product of shapes {:?} and {sb:?}", (c, h, w));
        }
        Ok(self.push(Op::Mul, vec![a, b], (c, h, w)))
    }

    /// `(1 + mask) · trunk`.
    pub fn gate(&mut self, mask: NodeId, trunk: NodeId) -> Result<NodeId> {
        let shape = self.same(mask, trunk, "gate")?;
        Ok(self.push(Op::Gate, vec![mask, trunk], shape))
    }

    pub fn upsample(&mut self, x: NodeId, (h, w): (usize, usize)) -> Result<NodeId> {
        let (c, hi, wi) = self.shape(x);
        if h == 0 || w == 0 || hi == 0 || wi == 0 {
            crate::invalid!("graph: up-sampling {hi}×{wi} to {h}×{w}");
        }
        Ok(self.push(Op::Upsample { h, w }, vec![x], (c, h, w)))
    }

    pub fn spatial_softmax(&mut self, x: NodeId) -> NodeId {
        self.unary(Op::SpatialSoftmax, x)
    }

    fn flat(&self, x: NodeId, what: &str) -> Result<usize> {
        match self.shape(x) {
            (c, 1, 1) => Ok(c),
            s => crate::invalid!("graph: {what} takes a flat value, got {s:?}"),
        }
    }

    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.flat(x, "softmax")?;
        Ok(self.unary(Op::Softmax, x))
    }

    pub fn head_pool(&mut self, values: NodeId, masks: NodeId) -> Result<NodeId> {
        let ((c, h, w), (heads, mh, mw)) = (self.shape(values), self.shape(masks));
        if (mh, mw) != (h, w) || heads == 0 || !c.is_multiple_of(heads) {
            crate::invalid!("graph: attention pooling of {c}×{h}×{w} values with {heads}×{mh}×{mw} masks");
        }
        Ok(self.push(Op::HeadPool { heads }, vec![values, masks], (c, 1, 1)))
    }

    pub fn head_mix(&mut self, values: NodeId, weights: NodeId) -> Result<NodeId> {
        let (c, heads) = (self.flat(values, "a mixture")?, self.flat(weights, "a mixture")?);
        if heads == 0 || !c.is_multiple_of(heads) {
            crate::invalid!("graph: a mixture of {c} values with {heads} weights");
        }
        Ok(self.push(Op::HeadMix { heads }, vec![values, weights], (c / heads, 1, 1)))
    }

    pub fn log_softmax_groups(&mut self, x: NodeId, groups: usize) -> Result<NodeId> {
        let c = self.flat(x, "log-softmax")?;
        if groups == 0 || !c.is_multiple_of(groups) {
            crate::invalid!("graph: {c} values in {groups} groups");
        }
        Ok(self.unary(Op::LogSoftmaxGroups { groups }, x))
    }

    /// Records `node` as `features[k]` (the next index), called `name`.
    pub fn tap(&mut self, node: NodeId, name: impl Into<String>) -> NodeId {
        self.graph.taps.push((name.into(), node));
        node
    }

    pub fn penalty(&mut self, p: Penalty) {
        self.graph.penalties.push(p);
    }

    pub fn map(&mut self, name: impl Into<String>, node: NodeId, of: MapOf) {
        self.graph.maps.push((name.into(), node, of));
    }

    /// The finished graph, with `output` as its logits.
    pub fn finish(mut self, output: NodeId) -> Graph {
        self.graph.output = output;
        self.graph
    }
}
