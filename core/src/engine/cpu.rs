//! The CPU engine: forward pass and backward pass of a class score to the input (or to one layer) for
//! the SimpleCNN family, computed directly on `f32` buffers instead of through candle's autograd. Every gradient
//! method rests on it: vanilla gradients (Simonyan et al. 2014), guided backpropagation (Springenberg et al. 2015)
//! and DeconvNet (Zeiler & Fergus 2014) differ only in the ReLU backward rule; Grad-CAM (Selvaraju et al. 2017)
//! stops at a layer.
//!
//! Autograd builds a graph, allocates and zero-fills a gradient for every node and accumulates into it; here the
//! backward pass is a fixed sequence of kernels over buffers that each thread reuses for its share of the images,
//! with convolutions as im2col + GEMM (Chellapilla et al. 2006) and no weight gradients. The layers are read from
//! the model's own parameters ([`Plan`]), so the model is still defined once (`models/`); the tests check this
//! engine against the autograd path for every model, rule and layer.

use super::{Engine, Gradient};
use crate::graph::Score;
use crate::ops::{affine_relu_pool, col2im_same, im2col_same, transpose_planes, Geometry, ReluRule};
use crate::ops::{sgemm, uninit};
use crate::{Error, Result};
use rayon::prelude::*;

/// `(channels, height, width)` of one image's activation.
pub type Shape = (usize, usize, usize);

/// One step of an evaluation-mode network.
#[derive(Clone, Debug)]
pub enum Layer {
    /// Square convolution, stride 1: `weight` is `out × (in·k·k)`, row-major.
    Conv {
        weight: Vec<f32>,
        bias: Vec<f32>,
        c_in: usize,
        c_out: usize,
        k: usize,
        pad: usize,
    },
    /// Per-channel `x·scale + shift`: batch normalisation in evaluation mode.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Relu,
    /// 2×2 max-pooling, stride 2, floor mode; gradients go to the first maximum of each window.
    MaxPool2,
    /// `x·Wᵀ + b` on the flattened input: `weight` is `out × in`.
    Linear {
        weight: Vec<f32>,
        bias: Vec<f32>,
        inp: usize,
        out: usize,
    },
    /// Mean over the spatial positions.
    GlobalAvgPool,
    /// A CBAM attention block (Woo et al. 2018), as the seed defines it (see `models/cbam.rs`).
    Cbam(Box<CbamParams>),
}

/// CBAM's parameters: the channel MLP (`w1`: hidden × c, `w2`: c × hidden) and the spatial branch (a `k×k`
/// convolution from 2 channels to 1 with padding `k/2`, then BatchNorm as `scale`, `shift`).
#[derive(Clone, Debug)]
pub struct CbamParams {
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
    pub hidden: usize,
    pub conv: Vec<f32>,
    pub conv_bias: f32,
    pub k: usize,
    pub scale: f32,
    pub shift: f32,
}

impl CbamParams {
    fn check(&self, c: usize) -> std::result::Result<(), String> {
        let h = self.hidden;
        if self.w1.len() != h * c
            || self.b1.len() != h
            || self.w2.len() != c * h
            || self.b2.len() != c
            || self.conv.len() != 2 * self.k * self.k
            || self.k.is_multiple_of(2)
        {
            return Err(format!("CBAM parameters do not fit {c} channels"));
        }
        Ok(())
    }
}

/// A network as a sequence of layers; `features[k]` is the output of layer `k` (the seed's numbering).
#[derive(Clone, Debug)]
pub struct Plan {
    layers: Vec<Layer>,
    /// `(channels, height, width)` of the input and of each layer's output (flat outputs are `(len, 1, 1)`).
    shapes: Vec<(usize, usize, usize)>,
    /// `features[k]` is the output of layer `taps[k]`.
    taps: Vec<usize>,
    /// Each linear layer's weight transposed (`in × out`; empty for other layers): the forward product reads it
    /// without repacking (the matrix-product kernel takes this operand column by column; repacking the `out × in`
    /// weight cost as much as the product itself for a chunk of 32 images).
    linear_t: Vec<Vec<f32>>,
    /// The weights as the local passes ([`Plan::forward_local`]) read them, by layer: each convolution's as
    /// `in × (k·k·out)` (tap-major columns), the first layer after the convolutions, when it is linear, with its
    /// input rows position-major (`(h·w·c) × out`), other layers empty. Made on the first local pass, once.
    local_weights: std::sync::OnceLock<Vec<Vec<f32>>>,
    /// How many layers from the input are local (see [`Plan::local_layers`]).
    local: usize,
}

/// Images per work unit: large enough for efficient matrix products, small enough to stay in cache.
const CHUNK: usize = 32;

impl Plan {
    /// Checks the layers against the input shape and records every layer's output shape.
    pub fn new(input: (usize, usize, usize), layers: Vec<Layer>, taps: Vec<usize>) -> Result<Self> {
        let bad = |i: usize, what: String| Error::InvalidArgument(format!("plan layer {i}: {what}"));
        let mut shapes = vec![input];
        for (i, layer) in layers.iter().enumerate() {
            let (c, h, w) = *shapes.last().expect("input shape");
            let next = match layer {
                Layer::Conv { weight, bias, c_in, c_out, k, pad } => {
                    if *c_in != c || weight.len() != c_out * c_in * k * k || bias.len() != *c_out || h + 2 * pad < *k {
                        return Err(bad(i, format!("convolution does not fit a {c}×{h}×{w} input")));
                    }
                    (*c_out, h + 2 * pad - k + 1, w + 2 * pad - k + 1)
                }
                Layer::Affine { scale, shift } => {
                    if scale.len() != c || shift.len() != c {
                        return Err(bad(i, format!("affine has {} channels, input {c}", scale.len())));
                    }
                    (c, h, w)
                }
                Layer::Relu => (c, h, w),
                Layer::MaxPool2 => {
                    if h < 2 || w < 2 {
                        return Err(bad(i, format!("max-pooling needs 2×2 inputs, got {h}×{w}")));
                    }
                    (c, h / 2, w / 2)
                }
                Layer::Linear { weight, bias, inp, out } => {
                    if *inp != c * h * w || weight.len() != inp * out || bias.len() != *out {
                        return Err(bad(i, format!("linear layer takes {inp} values, input has {}", c * h * w)));
                    }
                    (*out, 1, 1)
                }
                Layer::GlobalAvgPool => (c, 1, 1),
                Layer::Cbam(p) => {
                    p.check(c).map_err(|e| bad(i, e))?;
                    (c, h, w)
                }
            };
            shapes.push(next);
        }
        if let Some(t) = taps.iter().find(|&&t| t >= layers.len()) {
            return Err(bad(*t, "a tap names a layer that does not exist".into()));
        }
        let linear_t = (layers.iter())
            .map(|l| match l {
                Layer::Linear { weight, inp, out, .. } => transpose_planes(weight, *out, *inp, 1),
                _ => Vec::new(),
            })
            .collect();
        let local = (layers.iter())
            .take_while(|l| matches!(l, Layer::Conv { .. } | Layer::Affine { .. } | Layer::Relu | Layer::MaxPool2))
            .count();
        Ok(Plan { layers, shapes, taps, linear_t, local_weights: std::sync::OnceLock::new(), local })
    }

    /// The weights of the local passes (see the field), made on the first call.
    pub(crate) fn local_weights(&self) -> &[Vec<f32>] {
        self.local_weights.get_or_init(|| {
            let first_whole = self.local_layers();
            (self.layers.iter().enumerate())
                .map(|(i, l)| match l {
                    Layer::Conv { weight, c_in, c_out, k, .. } => {
                        // out × in × k² → k² × out × in → in × (k²·out)
                        let by_tap = transpose_planes(weight, c_out * c_in, k * k, 1);
                        transpose_planes(&by_tap, k * k * c_out, *c_in, 1)
                    }
                    Layer::Linear { out, .. } if i == first_whole => {
                        let (c, h, w) = self.shapes[i];
                        transpose_planes(&self.linear_t[i], c, h * w, *out)
                    }
                    _ => Vec::new(),
                })
                .collect()
        })
    }

    /// How many layers from the input are local (convolution, affine, ReLU, max-pooling: an output position
    /// reads a bounded neighbourhood), before the first that reads the whole map.
    pub(crate) fn local_layers(&self) -> usize {
        self.local
    }

    fn input_len(&self) -> usize {
        let (c, h, w) = self.shapes[0];
        c * h * w
    }

    fn len_after(&self, layer: usize) -> usize {
        let (c, h, w) = self.shapes[layer + 1];
        c * h * w
    }

    /// `(channels, height, width)` of `features[layer]`.
    pub fn layer_shape(&self, layer: usize) -> (usize, usize, usize) {
        self.shapes[self.taps[layer] + 1]
    }

    pub fn classes(&self) -> usize {
        self.len_after(self.layers.len() - 1)
    }

    /// Logits of `n` images (`x`: `n × C×H×W` values, channel-major).
    pub fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_input(x, n)?;
        let classes = self.classes();
        let mut logits = vec![0f32; n * classes];
        let per_image = self.input_len();
        logits.par_chunks_mut(CHUNK * classes).zip(x.par_chunks(CHUNK * per_image)).for_each(|(out, xs)| {
            out.copy_from_slice(&self.infer_chunk(xs, xs.len() / per_image));
        });
        Ok(logits)
    }

    /// The gradient of each image's target score with respect to the input (`layer` None) or to `features[layer]`,
    /// with the ReLU backward `rule`; for a layer, also its activation. Both `n × (layer shape)`.
    pub fn gradient(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        score: Score,
        rule: ReluRule,
        layer: Option<usize>,
    ) -> Result<Gradient> {
        self.check_request(x, n, targets, layer)?;
        let layer = layer.map(|l| self.taps[l]);
        let per_image = self.input_len();
        let out_len = layer.map_or(per_image, |l| self.len_after(l));
        let mut grad = vec![0f32; n * out_len];
        // The tapped activation (filled only when a layer is asked for).
        let mut activation = vec![0f32; n * out_len];
        grad.par_chunks_mut(CHUNK * out_len)
            .zip(activation.par_chunks_mut(CHUNK * out_len))
            .zip(x.par_chunks(CHUNK * per_image))
            .zip(targets.par_chunks(CHUNK))
            .for_each(|(((g, a), xs), ts)| {
                let m = ts.len();
                let acts = self.forward_chunk(xs, m);
                let seed = score_gradient(acts.values.last().expect("logits"), ts, score, self.classes());
                let stop = layer.map_or(0, |l| l + 1);
                g.copy_from_slice(&self.backward_chunk(&acts, seed, m, rule, stop));
                if let Some(l) = layer {
                    a.copy_from_slice(&acts.values[l + 1]);
                }
            });
        Ok(Gradient { grad, activation: layer.map(|_| activation) })
    }

    /// Checks a gradient request: `n` images, one valid target each, an existing layer.
    pub(crate) fn check_request(&self, x: &[f32], n: usize, targets: &[u32], layer: Option<usize>) -> Result<()> {
        self.check_input(x, n)?;
        if targets.len() != n {
            crate::invalid!("{} targets for {n} images", targets.len());
        }
        if let Some(t) = targets.iter().find(|&&t| t as usize >= self.classes()) {
            crate::invalid!("target class {t} is outside 0..{}", self.classes());
        }
        if let Some(l) = layer.filter(|&l| l >= self.taps.len()) {
            crate::invalid!("layer {l} does not exist (the model has features 0..{})", self.taps.len());
        }
        Ok(())
    }

    /// The layers, the input and output shapes (`shapes[0]`: the input; `shapes[k + 1]`: layer k's output) and the
    /// taps (`features[j]` is the output of layer `taps[j]`).
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn parts(&self) -> (&[Layer], &[Shape], &[usize]) {
        (&self.layers, &self.shapes, &self.taps)
    }

    pub(crate) fn check_input(&self, x: &[f32], n: usize) -> Result<()> {
        let (c, h, w) = self.shapes[0];
        if x.len() != n * c * h * w {
            crate::invalid!("{} values are not {n} images of {c}×{h}×{w}", x.len());
        }
        Ok(())
    }

    /// Every layer's output for `n` images (index 0: the input itself).
    /// Every layer's output for one image (`values[0]` the image itself, `values[i + 1]` layer i's output).
    pub(crate) fn activations_of(&self, x: &[f32]) -> Vec<Vec<f32>> {
        self.forward_chunk(x, 1).values
    }

    fn forward_chunk(&self, x: &[f32], n: usize) -> Activations {
        let mut acts = Vec::with_capacity(self.layers.len() + 1);
        let mut argmax = vec![Vec::new(); self.layers.len()];
        let mut cbam: Vec<Option<CbamState>> = (0..self.layers.len()).map(|_| None).collect();
        acts.push(x.to_vec());
        for i in 0..self.layers.len() {
            let (y, saved) = self.layer_forward(i, acts.last().expect("previous activation"), n);
            match saved {
                Saved::Nothing => {}
                Saved::Argmax(a) => argmax[i] = a,
                Saved::Cbam(state) => cbam[i] = Some(state),
            }
            acts.push(y);
        }
        Activations { values: acts, argmax, cbam }
    }

    /// The logits of `n` images, keeping only the current activation: BatchNorm (affine), ReLU and 2×2 pooling in
    /// a row run as one pass per plane, other element-wise layers in place, and pooling without its argmax.
    /// Equal, bit for bit, to the last of [`Plan::forward_chunk`]'s activations.
    fn infer_chunk(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut current = std::borrow::Cow::Borrowed(x);
        let mut i = 0;
        while i < self.layers.len() {
            let (c, h, w) = self.shapes[i];
            let hw = h * w;
            match (&self.layers[i], self.layers.get(i + 1), self.layers.get(i + 2)) {
                (Layer::Affine { scale, shift }, Some(Layer::Relu), Some(Layer::MaxPool2)) => {
                    let (ho, wo) = (h / 2, w / 2);
                    let mut y = uninit(n * c * ho * wo);
                    for (j, (plane, out)) in current.chunks(hw).zip(y.chunks_mut(ho * wo)).enumerate() {
                        affine_relu_pool(plane, (h, w), (scale[j % c], shift[j % c]), out, None);
                    }
                    current = y.into();
                    i += 3;
                    continue;
                }
                (Layer::Affine { scale, shift }, ..) => {
                    for (j, plane) in current.to_mut().chunks_mut(hw).enumerate() {
                        let (s, t) = (scale[j % c], shift[j % c]);
                        plane.iter_mut().for_each(|v| *v = *v * s + t);
                    }
                }
                (Layer::Relu, ..) => current.to_mut().iter_mut().for_each(|v| *v = v.max(0.0)),
                _ => current = self.layer_forward(i, &current, n).0.into(),
            }
            i += 1;
        }
        current.into_owned()
    }

    /// Layer `i`'s output for `n` images.
    pub(crate) fn layer_output(&self, i: usize, input: &[f32], n: usize) -> Vec<f32> {
        self.layer_forward(i, input, n).0
    }

    /// Layer `i`'s output for `n` images, and what its backward pass needs.
    fn layer_forward(&self, i: usize, input: &[f32], n: usize) -> (Vec<f32>, Saved) {
        let (c, h, w) = self.shapes[i];
        let y = match &self.layers[i] {
            Layer::Conv { weight, bias, c_out, k, pad, .. } => {
                conv_forward(input, n, (c, h, w), weight, bias, *c_out, *k, *pad)
            }
            Layer::Affine { scale, shift } => {
                let hw = h * w;
                let mut y = uninit(input.len());
                for (j, (plane, src)) in y.chunks_mut(hw).zip(input.chunks(hw)).enumerate() {
                    let (s, t) = (scale[j % c], shift[j % c]);
                    plane.iter_mut().zip(src).for_each(|(v, &x)| *v = x * s + t);
                }
                y
            }
            Layer::Relu => input.iter().map(|&v| v.max(0.0)).collect(),
            Layer::MaxPool2 => {
                let (y, arg) = pool_forward(input, n * c, h, w);
                return (y, Saved::Argmax(arg));
            }
            Layer::Linear { bias, inp, out, .. } => {
                let mut y: Vec<f32> = (0..n).flat_map(|_| bias.iter().copied()).collect();
                // y (n×out) += x (n×inp) · Wᵀ (inp×out, stored)
                let wt = &self.linear_t[i];
                sgemm(n, *out, *inp, input, (*inp as isize, 1), wt, (*out as isize, 1), &mut y, true, false);
                y
            }
            Layer::GlobalAvgPool => input.chunks(h * w).map(|p| p.iter().sum::<f32>() / (h * w) as f32).collect(),
            Layer::Cbam(p) => {
                let (y, state) = cbam_forward(p, input, n, (c, h, w));
                return (y, Saved::Cbam(state));
            }
        };
        (y, Saved::Nothing)
    }

    /// Back-propagates `grad` (of the last layer's output) down to the input of layer `stop`.
    fn backward_chunk(
        &self,
        acts: &Activations,
        mut grad: Vec<f32>,
        n: usize,
        rule: ReluRule,
        stop: usize,
    ) -> Vec<f32> {
        for i in (stop..self.layers.len()).rev() {
            let (c, h, w) = self.shapes[i];
            let input = &acts.values[i];
            grad = match &self.layers[i] {
                Layer::Conv { weight, c_out, k, pad, .. } => {
                    conv_input_grad(&grad, n, (c, h, w), weight, *c_out, *k, *pad)
                }
                Layer::Affine { scale, .. } => {
                    let hw = h * w;
                    for (j, plane) in grad.chunks_mut(hw).enumerate() {
                        let s = scale[j % c];
                        plane.iter_mut().for_each(|v| *v *= s);
                    }
                    grad
                }
                Layer::Relu => {
                    for (g, &x) in grad.iter_mut().zip(input) {
                        *g = relu_backward(rule, *g, x);
                    }
                    grad
                }
                Layer::MaxPool2 => pool_backward(&acts.argmax[i], &grad, n * c, h, w),
                Layer::Linear { weight, inp, out, .. } => {
                    let mut dx = vec![0f32; n * inp];
                    // dx (n×inp) = g (n×out) · W (out×inp)
                    sgemm(n, *inp, *out, &grad, (*out as isize, 1), weight, (*inp as isize, 1), &mut dx, false, false);
                    dx
                }
                Layer::GlobalAvgPool => {
                    let hw = h * w;
                    grad.iter().flat_map(|&g| std::iter::repeat_n(g / hw as f32, hw)).collect()
                }
                Layer::Cbam(p) => {
                    cbam_backward(p, acts.cbam[i].as_ref().expect("CBAM state"), input, &grad, n, (c, h, w), rule)
                }
            };
        }
        grad
    }
}

impl Engine for Plan {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn classes(&self) -> usize {
        Plan::classes(self)
    }

    fn layer_shape(&self, layer: usize) -> (usize, usize, usize) {
        Plan::layer_shape(self, layer)
    }

    fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        Plan::forward(self, x, n)
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
        Plan::gradient(self, x, n, targets, score, rule, layer)
    }
}

/// What a layer's backward pass needs from its forward pass besides its input.
enum Saved {
    Nothing,
    /// Pooling: the position (0–3 in scan order) of each window's maximum.
    Argmax(Vec<u8>),
    Cbam(CbamState),
}

/// Every layer's output for a chunk of images (index 0: the input), and for max-pooling layers the position of
/// each window's maximum (0–3 in scan order).
struct Activations {
    values: Vec<Vec<f32>>,
    argmax: Vec<Vec<u8>>,
    cbam: Vec<Option<CbamState>>,
}

/// Output planes at least this large are computed one image at a time (the matrix product is wide enough, and the
/// result lands in `N×C×H×W` order without a transpose).
const PER_IMAGE_HW: usize = 128;

/// ∂S/∂logits for each image: one-hot for the logit; for the probability p_t, p_t·(δ_tj − p_j).
fn score_gradient(logits: &[f32], targets: &[u32], score: Score, classes: usize) -> Vec<f32> {
    let mut seed = vec![0f32; targets.len() * classes];
    for (i, &t) in targets.iter().enumerate() {
        let row = &mut seed[i * classes..(i + 1) * classes];
        match score {
            Score::Logit => row[t as usize] = 1.0,
            Score::Prob => {
                let (e, sum, _) = crate::ops::shifted_exps(&logits[i * classes..(i + 1) * classes]);
                let pt = e[t as usize] / sum;
                for (j, r) in row.iter_mut().enumerate() {
                    *r = pt * (if j == t as usize { 1.0 } else { 0.0 } - e[j] / sum);
                }
            }
        }
    }
    seed
}

/// `(C·k·k) × (n·Ho·Wo)` columns of `n` images (the autograd convolution's unfolding, run on this thread).
fn im2col(x: &[f32], n: usize, shape: (usize, usize, usize), k: usize, pad: usize) -> Vec<f32> {
    let g = Geometry::stride_one(n, shape, k, pad);
    let mut out = vec![0f32; g.rows() * g.cols()];
    for (r, row) in out.chunks_mut(g.cols()).enumerate() {
        g.im2col_row(x, r, row);
    }
    out
}

/// The adjoint of [`im2col`]: columns summed back into `n` images.
fn col2im(cols: &[f32], n: usize, shape: (usize, usize, usize), k: usize, pad: usize) -> Vec<f32> {
    let mut x = vec![0f32; n * shape.0 * shape.1 * shape.2];
    col2im_into(cols, n, shape, k, pad, &mut x);
    x
}

/// [`col2im`] into `x`, which must be zero.
fn col2im_into(cols: &[f32], n: usize, shape: (usize, usize, usize), k: usize, pad: usize, x: &mut [f32]) {
    let g = Geometry::stride_one(n, shape, k, pad);
    for (p, plane) in x.chunks_mut(shape.1 * shape.2).enumerate() {
        g.col2im_plane(cols, p, plane);
    }
}

/// im2col of `n` images (`x`: `N×C×H×W`) as `C·k·k × N·Ho·Wo` columns, on this thread. "Same" padding (every
/// convolution of the models here) copies whole shifted planes ([`im2col_same`], on the channel-major order; for
/// one image that is the image itself); other paddings go row by row.
fn unfold(x: &[f32], n: usize, shape: (usize, usize, usize), k: usize, pad: usize) -> Vec<f32> {
    let (c, h, w) = shape;
    if 2 * pad + 1 != k {
        return im2col(x, n, shape, k, pad);
    }
    let mut cols = uninit(c * k * k * n * h * w);
    if n == 1 {
        im2col_same(x, (1, h, w), k, pad, &mut cols, false);
    } else {
        im2col_same(&transpose_planes(x, n, c, h * w), (n, h, w), k, pad, &mut cols, false);
    }
    cols
}

/// The adjoint of [`unfold`]: `cols` (scratch, overwritten) summed back into `n` images `N×C×H×W`.
fn fold(cols: &mut [f32], n: usize, shape: (usize, usize, usize), k: usize, pad: usize) -> Vec<f32> {
    let (c, h, w) = shape;
    if 2 * pad + 1 != k {
        return col2im(cols, n, shape, k, pad);
    }
    let mut dx = uninit(n * c * h * w);
    col2im_same(cols, (n, h, w), k, pad, &mut dx, false);
    if n == 1 {
        dx
    } else {
        transpose_planes(&dx, c, n, h * w)
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_forward(
    x: &[f32],
    n: usize,
    shape: (usize, usize, usize),
    weight: &[f32],
    bias: &[f32],
    c_out: usize,
    k: usize,
    pad: usize,
) -> Vec<f32> {
    let (c, h, w) = shape;
    let hw = (h + 2 * pad - k + 1) * (w + 2 * pad - k + 1);
    let kk = c * k * k;
    let mut y = uninit(n * c_out * hw);
    if hw >= PER_IMAGE_HW {
        // Per image: y_i (c_out × hw) = W (c_out × kk) · cols_i (kk × hw), already in N×C×H×W order.
        for (xi, yi) in x.chunks(c * h * w).zip(y.chunks_mut(c_out * hw)) {
            let cols = unfold(xi, 1, shape, k, pad);
            sgemm(c_out, hw, kk, weight, (kk as isize, 1), &cols, (hw as isize, 1), yi, false, false);
        }
    } else {
        // Batched: out (c_out × n·hw) = W · cols (kk × n·hw), then to N×C×H×W.
        let cols = unfold(x, n, shape, k, pad);
        let mut out = uninit(c_out * n * hw);
        sgemm(c_out, n * hw, kk, weight, (kk as isize, 1), &cols, ((n * hw) as isize, 1), &mut out, false, false);
        y = transpose_planes(&out, c_out, n, hw);
    }
    for (j, plane) in y.chunks_mut(hw).enumerate() {
        let b = bias[j % c_out];
        plane.iter_mut().for_each(|v| *v += b);
    }
    y
}

fn conv_input_grad(
    grad: &[f32],
    n: usize,
    shape: (usize, usize, usize),
    weight: &[f32],
    c_out: usize,
    k: usize,
    pad: usize,
) -> Vec<f32> {
    let (c, h, w) = shape;
    let hw = (h + 2 * pad - k + 1) * (w + 2 * pad - k + 1);
    let kk = c * k * k;
    if hw >= PER_IMAGE_HW {
        // Per image: dcols_i (kk × hw) = Wᵀ (kk × c_out) · g_i (c_out × hw), folded back at once.
        let mut dx = Vec::with_capacity(n * c * h * w);
        let mut dcols = uninit(kk * hw);
        for gi in grad.chunks(c_out * hw) {
            sgemm(kk, hw, c_out, weight, (1, kk as isize), gi, (hw as isize, 1), &mut dcols, false, false);
            dx.extend(fold(&mut dcols, 1, shape, k, pad));
        }
        return dx;
    }
    // Batched: g (c_out × n·hw) from the N×C×H×W gradient, dcols (kk × n·hw) = Wᵀ · g.
    let g = transpose_planes(grad, n, c_out, hw);
    let mut dcols = uninit(kk * n * hw);
    sgemm(kk, n * hw, c_out, weight, (1, kk as isize), &g, ((n * hw) as isize, 1), &mut dcols, false, false);
    fold(&mut dcols, n, shape, k, pad)
}

/// The ReLU backward `rule` for gradient `g` at pre-activation `x` (the graph executor's too).
pub(super) fn relu_backward(rule: ReluRule, g: f32, x: f32) -> f32 {
    match rule {
        ReluRule::Standard => {
            if x > 0.0 {
                g
            } else {
                0.0
            }
        }
        ReluRule::Guided => {
            if x > 0.0 && g > 0.0 {
                g
            } else {
                0.0
            }
        }
        ReluRule::Deconv => g.max(0.0),
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// What CBAM's backward pass needs from its forward pass (per image: `c` channels, `hw` positions).
struct CbamState {
    /// Position of each channel's spatial maximum (`n×c`).
    channel_argmax: Vec<usize>,
    /// MLP pre-activations for the average and the max descriptor (`n×hidden` each).
    z_avg: Vec<f32>,
    z_max: Vec<f32>,
    /// Channel gate (`n×c`) and the gated input `x1` (`n×c×hw`).
    gate: Vec<f32>,
    x1: Vec<f32>,
    /// Channel of each position's maximum over channels (`n×hw`).
    position_argmax: Vec<usize>,
    /// Spatial pre-activation (after BatchNorm, before the ReLU) and gate (`n×hw` each).
    t: Vec<f32>,
    spatial_gate: Vec<f32>,
}

/// `v` (`c`) through `w` (`rows × c`) + `b`.
fn affine_rows(w: &[f32], b: &[f32], v: &[f32]) -> Vec<f32> {
    b.iter()
        .enumerate()
        .map(|(r, &bias)| bias + w[r * v.len()..][..v.len()].iter().zip(v).map(|(a, x)| a * x).sum::<f32>())
        .collect()
}

/// `g` (`rows`) back through `w` (`rows × cols`): `wᵀ·g`.
fn affine_rows_t(w: &[f32], g: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; cols];
    for (r, &gv) in g.iter().enumerate() {
        out.iter_mut().zip(&w[r * cols..][..cols]).for_each(|(o, a)| *o += a * gv);
    }
    out
}

fn cbam_forward(p: &CbamParams, x: &[f32], n: usize, (c, h, w): (usize, usize, usize)) -> (Vec<f32>, CbamState) {
    let hw = h * w;
    let hid = p.hidden;
    let mut st = CbamState {
        channel_argmax: vec![0; n * c],
        z_avg: vec![0.0; n * hid],
        z_max: vec![0.0; n * hid],
        gate: vec![0.0; n * c],
        x1: vec![0.0; n * c * hw],
        position_argmax: vec![0; n * hw],
        t: vec![0.0; n * hw],
        spatial_gate: vec![0.0; n * hw],
    };
    let mut pooled = vec![0f32; n * 2 * hw];
    for i in 0..n {
        let xi = &x[i * c * hw..][..c * hw];
        let mut avg = vec![0f32; c];
        let mut max = vec![0f32; c];
        for ch in 0..c {
            let plane = &xi[ch * hw..][..hw];
            avg[ch] = plane.iter().sum::<f32>() / hw as f32;
            let mut best = 0;
            for (j, &v) in plane.iter().enumerate() {
                if v > plane[best] {
                    best = j;
                }
            }
            max[ch] = plane[best];
            st.channel_argmax[i * c + ch] = best;
        }
        let za = affine_rows(&p.w1, &p.b1, &avg);
        let zm = affine_rows(&p.w1, &p.b1, &max);
        let relu = |z: &[f32]| z.iter().map(|v| v.max(0.0)).collect::<Vec<f32>>();
        let oa = affine_rows(&p.w2, &p.b2, &relu(&za));
        let om = affine_rows(&p.w2, &p.b2, &relu(&zm));
        st.z_avg[i * hid..][..hid].copy_from_slice(&za);
        st.z_max[i * hid..][..hid].copy_from_slice(&zm);
        for ch in 0..c {
            let g = sigmoid(oa[ch] + om[ch]);
            st.gate[i * c + ch] = g;
            let (src, dst) = (&xi[ch * hw..][..hw], &mut st.x1[(i * c + ch) * hw..][..hw]);
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v * g);
        }
        let x1 = &st.x1[i * c * hw..][..c * hw];
        for q in 0..hw {
            let (mut best, mut sum) = (0, 0f32);
            for ch in 0..c {
                let v = x1[ch * hw + q];
                if v > x1[best * hw + q] {
                    best = ch;
                }
                sum += v;
            }
            st.position_argmax[i * hw + q] = best;
            pooled[i * 2 * hw + q] = x1[best * hw + q];
            pooled[i * 2 * hw + hw + q] = sum / c as f32;
        }
    }
    let s = conv_forward(&pooled, n, (2, h, w), &p.conv, &[p.conv_bias], 1, p.k, p.k / 2);
    for (j, &sv) in s.iter().enumerate() {
        let t = sv * p.scale + p.shift;
        st.t[j] = t;
        st.spatial_gate[j] = sigmoid(t.max(0.0));
    }
    let mut y = st.x1.clone();
    for i in 0..n {
        let g = &st.spatial_gate[i * hw..][..hw];
        for plane in y[i * c * hw..][..c * hw].chunks_mut(hw) {
            plane.iter_mut().zip(g).for_each(|(v, &gv)| *v *= gv);
        }
    }
    (y, st)
}

#[allow(clippy::too_many_arguments)]
fn cbam_backward(
    p: &CbamParams,
    st: &CbamState,
    x: &[f32],
    dy: &[f32],
    n: usize,
    (c, h, w): (usize, usize, usize),
    rule: ReluRule,
) -> Vec<f32> {
    let hw = h * w;
    let hid = p.hidden;
    // y = x1 · g (spatial): the gradient of x1 directly, and of the spatial pre-activation through sigmoid ∘ ReLU.
    let mut dx1 = vec![0f32; n * c * hw];
    let mut dt = vec![0f32; n * hw];
    for i in 0..n {
        for q in 0..hw {
            let g = st.spatial_gate[i * hw + q];
            let mut dg = 0f32;
            for ch in 0..c {
                let j = (i * c + ch) * hw + q;
                dx1[j] = dy[j] * g;
                dg += dy[j] * st.x1[j];
            }
            let t = st.t[i * hw + q];
            dt[i * hw + q] = relu_backward(rule, dg * g * (1.0 - g), t) * p.scale;
        }
    }
    // Through the spatial convolution to the pooled maps, then to x1 (max: its first channel; mean: all channels).
    let dpooled = conv_input_grad(&dt, n, (2, h, w), &p.conv, 1, p.k, p.k / 2);
    for i in 0..n {
        for q in 0..hw {
            let (dmax, dmean) = (dpooled[i * 2 * hw + q], dpooled[i * 2 * hw + hw + q] / c as f32);
            for ch in 0..c {
                dx1[(i * c + ch) * hw + q] += dmean;
            }
            dx1[(i * c + st.position_argmax[i * hw + q]) * hw + q] += dmax;
        }
    }
    // x1 = x · gate (channel): the gradient of x directly, and of the gate through the sigmoid and the shared MLP
    // back to the average (all positions) and the maximum (its position) of each channel.
    let mut dx = vec![0f32; n * c * hw];
    for i in 0..n {
        let mut dlogit = vec![0f32; c];
        for (ch, dl) in dlogit.iter_mut().enumerate() {
            let gate = st.gate[i * c + ch];
            let base = (i * c + ch) * hw;
            let mut dgate = 0f32;
            for q in 0..hw {
                dx[base + q] = dx1[base + q] * gate;
                dgate += dx1[base + q] * x[base + q];
            }
            *dl = dgate * gate * (1.0 - gate);
        }
        let dr = affine_rows_t(&p.w2, &dlogit, hid);
        for (z, is_max) in [(&st.z_avg, false), (&st.z_max, true)] {
            let dz: Vec<f32> =
                dr.iter().zip(&z[i * hid..][..hid]).map(|(&g, &zv)| relu_backward(rule, g, zv)).collect();
            let dv = affine_rows_t(&p.w1, &dz, c);
            for ch in 0..c {
                let base = (i * c + ch) * hw;
                if is_max {
                    dx[base + st.channel_argmax[i * c + ch]] += dv[ch];
                } else {
                    let share = dv[ch] / hw as f32;
                    dx[base..base + hw].iter_mut().for_each(|v| *v += share);
                }
            }
        }
    }
    dx
}

/// 2×2 max-pooling of `planes` planes, and the position (0–3) of each window's first maximum.
fn pool_forward(x: &[f32], planes: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = uninit(planes * ho * wo);
    let mut arg = vec![0u8; planes * ho * wo];
    for ((p, yp), ap) in x.chunks(h * w).take(planes).zip(y.chunks_mut(ho * wo)).zip(arg.chunks_mut(ho * wo)) {
        for oy in 0..ho {
            let (r0, r1) = (&p[2 * oy * w..][..w], &p[(2 * oy + 1) * w..][..w]);
            let (yr, ar) = (&mut yp[oy * wo..][..wo], &mut ap[oy * wo..][..wo]);
            for ox in 0..wo {
                let window = [r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]];
                let i = crate::ops::window_argmax(window);
                yr[ox] = window[i as usize];
                ar[ox] = i;
            }
        }
    }
    (y, arg)
}

/// Each pooled gradient to its window's maximum; every other input position (including a dropped odd last row or
/// column) gets zero.
fn pool_backward(arg: &[u8], grad: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = uninit(planes * h * w);
    for ((d, g), a) in dx.chunks_mut(h * w).zip(grad.chunks(ho * wo)).zip(arg.chunks(ho * wo)) {
        for oy in 0..ho {
            let (r0, r1) = d[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
            for ox in 0..wo {
                let (gv, best) = (g[oy * wo + ox], a[oy * wo + ox]);
                r0[2 * ox] = if best == 0 { gv } else { 0.0 };
                r0[2 * ox + 1] = if best == 1 { gv } else { 0.0 };
                r1[2 * ox] = if best == 2 { gv } else { 0.0 };
                r1[2 * ox + 1] = if best == 3 { gv } else { 0.0 };
            }
            if w % 2 == 1 {
                r0[w - 1] = 0.0;
                r1[w - 1] = 0.0;
            }
        }
        if h % 2 == 1 {
            d[(h - 1) * w..].fill(0.0);
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{autograd_input_gradient, autograd_layer_gradient, input_gradient, layer_gradient};
    use crate::data::DatasetKind;
    use crate::engine::constant_model;
    use crate::models::{Arch, ModelSpec};
    use crate::nn::Pass;
    use crate::params::init_model;
    use crate::testing::{max_rel_error, random, rel_error};
    use candle_core::{Device, Tensor};

    /// The engine equals autograd: logits, input gradients under every ReLU rule and both scores, and every
    /// layer's activation and gradient, on both data sets, over more images than one work unit (19: a partial
    /// chunk too).
    #[test]
    fn engine_equals_autograd() -> crate::Result<()> {
        for dataset in DatasetKind::ALL {
            for arch in Arch::SMALL {
                let m = constant_model(arch, dataset, 3);
                let plan = m.engine().expect("an engine for constant weights");
                let (c, s) = (dataset.channels(), dataset.side());
                let n = 19;
                let x = (random(&[n, c, s, s], 5)? * 2.0)?;
                let targets: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
                let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
                let logits = plan.forward(&xv, n)?;
                // The inference pass (fused, in place) equals the last activation of the recorded pass exactly.
                let cpu_plan = crate::engine::plan_of(plan).expect("a CPU plan");
                assert_eq!(
                    &cpu_plan.forward(&xv, n)?,
                    cpu_plan.forward_chunk(&xv, n).values.last().expect("logits"),
                    "{arch} {dataset} inference pass"
                );
                assert!(max_rel_error(&logits, &cpu_plan.forward(&xv, n)?, 1.0) < 1e-5, "{arch} {dataset}: plan");
                let want = m.forward(&x, &Pass::EVAL)?;
                assert!(
                    rel_error(&Tensor::from_vec(logits, want.shape(), &Device::Cpu)?, &want, 1.0)? < 1e-5,
                    "{arch} {dataset} logits"
                );
                for rule in [ReluRule::Standard, ReluRule::Guided, ReluRule::Deconv] {
                    for score in [Score::Logit, Score::Prob] {
                        let fast = input_gradient(m.as_ref(), &x, &targets, score, rule)?;
                        let slow = autograd_input_gradient(m.as_ref(), &x, &targets, score, rule)?;
                        let d = rel_error(&fast, &slow, 1.0)?;
                        assert!(d < 1e-4, "{arch} {dataset} {rule:?} {score:?}: {d}");
                    }
                }
                for layer in 0..m.tap_points() {
                    let (fa, fg) = layer_gradient(m.as_ref(), &x, &targets, Score::Logit, ReluRule::Standard, layer)?;
                    let (sa, sg) =
                        autograd_layer_gradient(m.as_ref(), &x, &targets, Score::Logit, ReluRule::Standard, layer)?;
                    assert!(rel_error(&fa, &sa, 1.0)? < 1e-5, "{arch} {dataset} layer {layer} activation");
                    assert!(rel_error(&fg, &sg, 1.0)? < 1e-4, "{arch} {dataset} layer {layer} gradient");
                }
            }
        }
        Ok(())
    }

    /// No engine for weights being trained.
    #[test]
    fn no_engine_while_training() {
        let (_, training) =
            init_model(ModelSpec { arch: Arch::SimpleCnn, dataset: DatasetKind::Mnist }, 1, &Device::Cpu).unwrap();
        assert!(training.engine().is_none());
    }

    /// Hand-derived: a 1-channel 4×4 image through conv (3×3 of ones, pad 1), ReLU, pool, GAP, linear.
    #[test]
    fn tiny_network_by_hand() -> crate::Result<()> {
        let plan = Plan::new(
            (1, 4, 4),
            vec![
                Layer::Conv { weight: vec![1.0; 9], bias: vec![0.0], c_in: 1, c_out: 1, k: 3, pad: 1 },
                Layer::Relu,
                Layer::MaxPool2,
                Layer::GlobalAvgPool,
                Layer::Linear { weight: vec![2.0, -1.0], bias: vec![0.5, 0.0], inp: 1, out: 2 },
            ],
            (0..4).collect(),
        )?;
        // A single 1 at (0,0): the conv output is 1 on the 2×2 top-left block, else 0.
        let mut x = vec![0.0; 16];
        x[0] = 1.0;
        // Pooled: [1, 0; 0, 0] (the top-left window's first maximum is (0,0)); mean 0.25; logits [1.0, −0.25].
        assert_eq!(plan.forward(&x, 1)?, vec![1.0, -0.25]);
        // ∂logit0/∂x: 2 · 1/4 through the pooled (0,0) ← conv output (0,0) ← the 3×3 neighbourhood of (0,0).
        let g = plan.gradient(&x, 1, &[0], Score::Logit, ReluRule::Standard, None)?.grad;
        let mut want = vec![0.0; 16];
        for i in [0, 1, 4, 5] {
            want[i] = 0.5;
        }
        assert_eq!(g, want);
        assert!(plan
            .gradient(&x, 1, &[2], Score::Logit, ReluRule::Standard, None)
            .unwrap_err()
            .to_string()
            .contains("outside 0..2"));
        assert!(plan
            .gradient(&x, 2, &[0, 0], Score::Logit, ReluRule::Standard, None)
            .unwrap_err()
            .to_string()
            .contains("not 2 images"));
        Ok(())
    }
}
