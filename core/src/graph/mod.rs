//! The network description every backend reads: a model is a [`Graph`] of layers over named parameters (the
//! seed's `state_dict` keys), emitted once by its file in `models/`. The CPU executor (`engine::graph`) runs it
//! for evaluation, for attribution (gradients to the input or to a tapped layer under a ReLU backward rule) and for
//! training (batch statistics, every parameter's gradient); candle's autograd, on the models' own candle modules,
//! is the oracle the tests hold it to.
//!
//! Every value is one image's `(channels, height, width)`; flat values (after a linear layer or a global pooling)
//! are `(len, 1, 1)`. Nodes are in topological order: a node's inputs come before it.

mod builder;
mod contract;

pub use builder::{Builder, Conv, Scope};
pub use contract::{Composite, Engine, Gradient, Gradients, LrpRule, Propagation, Score};

/// `(channels, height, width)` of one image's value.
pub type Shape = (usize, usize, usize);

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// Index of a parameter in [`Graph::params`].
pub type ParamId = usize;

/// A named tensor of the model: a trainable parameter or a buffer (BatchNorm's running statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub buffer: bool,
}

impl Param {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer. Parameters are referenced by id, so a layer used twice (RAN's shared soft-mask unit) shares them.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The model's input.
    Input,
    /// Square convolution, zero padding: `weight` is `c_out × c_in × k × k`.
    Conv {
        weight: ParamId,
        bias: Option<ParamId>,
        k: usize,
        stride: usize,
        pad: usize,
    },
    /// Batch normalisation (Ioffe & Szegedy 2015): batch statistics in training, running statistics otherwise.
    BatchNorm {
        gamma: ParamId,
        beta: ParamId,
        mean: ParamId,
        var: ParamId,
        eps: f32,
        momentum: f32,
    },
    /// `x·Wᵀ + b` on the flattened input (channel-major, as PyTorch's `flatten`): `weight` is `out × in`.
    Linear {
        weight: ParamId,
        bias: Option<ParamId>,
    },
    Relu,
    Sigmoid,
    Tanh,
    /// 2×2 max-pooling, stride 2; `ceil` keeps an odd last row or column as a window of its own. Gradients go to the
    /// first maximum of each window (PyTorch's rule).
    MaxPool2 {
        ceil: bool,
    },
    /// Mean over the positions: `(c, h, w) → (c, 1, 1)`.
    GlobalAvgPool,
    /// Maximum over the positions (first maximum).
    GlobalMaxPool,
    /// Maximum over the channels (first maximum): `(c, h, w) → (1, h, w)`.
    ChannelMax,
    /// Mean over the channels.
    ChannelMean,
    /// The inputs stacked along the channels.
    Concat,
    /// Sum of two values of one shape.
    Add,
    /// `a · b`, `b` of `a`'s shape or broadcast: `(c, 1, 1)` per channel or `(1, h, w)` per position.
    Mul,
    /// `(1 + a) · b`: the Residual Attention Network's attention (`a` the soft mask, `b` the trunk).
    Gate,
    /// Bilinear up-sampling with aligned corners to `h × w` (PyTorch's `UpsamplingBilinear2d`).
    Upsample {
        h: usize,
        w: usize,
    },
    /// Softmax over the positions of each channel.
    SpatialSoftmax,
    /// Softmax over the channels of a flat value.
    Softmax,
    /// Attention pooling: `values` `(heads·k, h, w)` weighted by `masks` `(heads, h, w)` and summed over the
    /// positions, `y[hd·k + j] = Σ_p values[hd·k + j, p] · masks[hd, p]` → `(heads·k, 1, 1)`.
    HeadPool {
        heads: usize,
    },
    /// Mixture of flat values: `y[j] = Σ_hd values[hd·k + j] · weights[hd]` → `(k, 1, 1)`.
    HeadMix {
        heads: usize,
    },
    /// Log-softmax within each of `groups` equal parts of a flat value.
    LogSoftmaxGroups {
        groups: usize,
    },
}

/// A node: a layer applied to earlier nodes, and its output shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
}

/// A term added to the training loss.
#[derive(Clone, Debug, PartialEq)]
pub enum Penalty {
    /// WARN's inter-head regularisation (Rodríguez et al. 2018): the masks `node` (`heads × h × w`, each summing to
    /// one) average-pooled 2×2 (floor), their Gram matrix off the diagonal, squared, averaged over images and head
    /// pairs, times `weight`.
    HeadOverlap { node: NodeId, weight: f32 },
}

/// How an attention map is read from a node, per image.
#[derive(Clone, Debug, PartialEq)]
pub enum MapOf {
    /// The mean over the node's channels (RAN's soft masks).
    ChannelMean,
    /// One channel (a WARN attention head).
    Channel(usize),
}

/// A network: parameters, nodes, the output (logits), the tappable layers (`features[k]`), the loss penalties and
/// the model's own attention maps.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub params: Vec<Param>,
    pub nodes: Vec<Node>,
    pub output: NodeId,
    /// `features[k]`: a name and the node.
    pub taps: Vec<(String, NodeId)>,
    pub penalties: Vec<Penalty>,
    pub maps: Vec<(String, NodeId, MapOf)>,
}

impl Graph {
    /// The input's shape.
    pub fn input_shape(&self) -> Shape {
        self.nodes[0].shape
    }

    /// Number of classes (the output's length).
    pub fn classes(&self) -> usize {
        let (c, h, w) = self.nodes[self.output].shape;
        c * h * w
    }

    /// `(channels, height, width)` of `features[tap]`.
    pub fn tap_shape(&self, tap: usize) -> Shape {
        self.nodes[self.taps[tap].1].shape
    }

    /// Checks a request of `n` images `x` (`n × input`) with one target each and, when given, a layer: the layer
    /// exists, the lengths fit, every target is a class; else a clear error.
    pub fn check_request(&self, x: &[f32], n: usize, targets: &[u32], layer: Option<usize>) -> crate::Result<()> {
        if let Some(l) = layer.filter(|&l| l >= self.taps.len()) {
            crate::invalid!("layer {l} does not exist (the model has features 0..{})", self.taps.len());
        }
        let (c, h, w) = self.input_shape();
        if x.len() != n * c * h * w {
            crate::invalid!("{} values are not {n} images of {c}×{h}×{w}", x.len());
        }
        if targets.len() != n {
            crate::invalid!("{} targets for {n} images", targets.len());
        }
        let classes = self.classes();
        if let Some(t) = targets.iter().find(|&&t| t as usize >= classes) {
            crate::invalid!("target class {t} is outside 0..{classes}");
        }
        Ok(())
    }

    /// Floating-point operations of one image's forward pass in its matrix products: 2 × the multiply-adds of every
    /// convolution (as a direct or im2col + GEMM convolution performs them) and linear layer. Element-wise layers,
    /// normalisation and pooling are not counted.
    pub fn forward_flops(&self) -> f64 {
        self.nodes
            .iter()
            .map(|node| {
                let input = node.inputs.first().map(|&j| self.nodes[j].shape);
                let macs = match (&node.op, input) {
                    (Op::Conv { k, .. }, Some(input)) => len(node.shape) * input.0 * k * k,
                    (Op::Linear { .. }, Some(input)) => len(input) * len(node.shape),
                    _ => 0,
                };
                2.0 * macs as f64
            })
            .sum()
    }

    /// Floating-point operations of one image's training step in its matrix products: three forward passes'
    /// worth (forward, input gradient, weight gradient — each the same products, transposed), whatever algorithm a
    /// backend uses. The benchmarks' GFLOP/s for training count this for both sides.
    pub fn training_flops(&self) -> f64 {
        3.0 * self.forward_flops()
    }

    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name)
    }
}

/// Values of a shape.
pub fn len((c, h, w): Shape) -> usize {
    c * h * w
}
