//! One training step of the SimpleCNN family (SimpleCNN and its CAM head) on `f32` buffers: forward pass with
//! batch statistics, mean cross-entropy, and the gradient of every trainable parameter — what candle's autograd
//! computes for the same model, without its graph.
//!
//! Each block is convolution (im2col + GEMM, Chellapilla et al. 2006) → batch normalisation with the batch's
//! statistics (Ioffe & Szegedy 2015) → ReLU → 2×2 max-pool. The activations stay channel-major over the batch
//! (`C×N×H×W`), so a convolution's output is one GEMM with no transpose and each channel's statistics are one
//! contiguous run. BatchNorm, ReLU and pooling run as one pass per channel forward and one backward (the ReLU's
//! mask is recomputed from the convolution output instead of stored), and the first convolution's input gradient,
//! which nobody needs, is never computed. The CAM head is global average pooling → linear (Zhou et al. 2016).
//!
//! The network is read from the model's graph (`lower.rs`), its parameters in place; the tests check this step
//! against candle's autograd on the same model.

use crate::ops::{
    affine_relu_pool, col2im_same, grain, im2col_same, sgemm_long, sgemm_wide, shifted_exps, transpose_planes,
    transpose_planes_into,
};
use crate::{Error, Result};
use rayon::prelude::*;
use std::borrow::Cow;

/// The values of a parameter: borrowed from the model's own tensor (no copy per step), or owned.
pub(crate) type Values<'a> = Cow<'a, [f32]>;

/// One block's parameters: a square convolution (`weight`: `c_out × c_in·k·k`) and its BatchNorm.
pub(crate) struct Block<'a> {
    pub weight: Values<'a>,
    pub bias: Values<'a>,
    pub gamma: Values<'a>,
    pub beta: Values<'a>,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub pad: usize,
    pub eps: f32,
}

/// The classifier after the blocks.
pub(crate) enum Head<'a> {
    /// flatten → linear (`w1`: hidden × inputs) → ReLU → linear (`w2`: classes × hidden).
    Mlp { w1: Values<'a>, b1: Values<'a>, w2: Values<'a>, b2: Values<'a> },
    /// global average pooling → linear (`w`: classes × channels).
    Cam { w: Values<'a>, b: Values<'a> },
}

pub(crate) struct Net<'a> {
    pub blocks: Vec<Block<'a>>,
    pub head: Head<'a>,
    /// `(channels, height, width)` of one input image.
    pub input: (usize, usize, usize),
    pub classes: usize,
}

/// A block's gradients and the batch statistics its BatchNorm used (for the running-statistics update).
pub(crate) struct BlockGrads {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub batch_mean: Vec<f32>,
    /// Biased (divided by the count).
    pub batch_var: Vec<f32>,
    /// Values per channel the statistics were taken over (N·H·W).
    pub count: usize,
}

/// The head's gradients, in the order of its parameters (`w1, b1, w2, b2` or `w, b`).
pub(crate) struct Step {
    /// `n × classes`, row-major.
    pub logits: Vec<f32>,
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    pub blocks: Vec<BlockGrads>,
    pub head: Vec<Vec<f32>>,
}

/// The buffers of one step, kept between steps: a step allocates (and the kernel zero-fills and maps) ~140 MB for
/// a batch of 128 MNIST images, which cost as much as the arithmetic when done afresh every step.
#[derive(Default)]
pub(crate) struct Workspace {
    /// The batch, channel-major.
    input: Vec<f32>,
    blocks: Vec<BlockState>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workspace({} blocks)", self.blocks.len())
    }
}

/// One block's buffers: what its backward pass needs from its forward pass, and its gradients.
#[derive(Default)]
struct BlockState {
    /// im2col of the block's input (`c_in·k·k × N·H·W`).
    cols: Vec<f32>,
    /// Convolution output, bias included (`c_out × N·H·W`).
    z: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    /// The pooled output (`c_out × N × H/2 × W/2`) and the position (0–3, scan order) of each window's first maximum.
    pooled: Vec<f32>,
    argmax: Vec<u8>,
    /// Gradients of the convolution output, of the columns and of the block's input.
    dz: Vec<f32>,
    dcols: Vec<f32>,
    dinput: Vec<f32>,
    /// Input height and width (also the convolution's output size: "same" padding).
    h: usize,
    w: usize,
}

/// `v` as `len` elements whose values the caller overwrites (kept from earlier use, not zeroed).
fn reuse(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    &mut v[..len]
}

impl Net<'_> {
    fn check(&self, x: &[f32], labels: &[u32], n: usize) -> Result<()> {
        let (c, h, w) = self.input;
        if n == 0 || x.len() != n * c * h * w || labels.len() != n {
            crate::invalid!(
                "a training batch of {n} images needs {} values and {n} labels (got {} and {})",
                n * c * h * w,
                x.len(),
                labels.len()
            );
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= self.classes) {
            crate::invalid!("label {l} is outside 0..{}", self.classes);
        }
        let mut c_in = c;
        for (i, b) in self.blocks.iter().enumerate() {
            if b.c_in != c_in
                || b.weight.len() != b.c_out * b.c_in * b.k * b.k
                || b.bias.len() != b.c_out
                || b.gamma.len() != b.c_out
                || b.beta.len() != b.c_out
                || 2 * b.pad + 1 != b.k
            {
                return Err(Error::InvalidArgument(format!(
                    "training step: block {i} does not fit {c_in} input channels with 'same' padding"
                )));
            }
            c_in = b.c_out;
        }
        Ok(())
    }

    /// Forward and backward pass of `n` images (`x`: `N×C×H×W`) with their `labels`, in the buffers of `ws`.
    pub fn step(&self, x: &[f32], labels: &[u32], n: usize, ws: &mut Workspace) -> Result<Step> {
        self.check(x, labels, n)?;
        let (c, mut h, mut w) = self.input;
        transpose_planes_into(x, n, c, h * w, reuse(&mut ws.input, x.len()));
        ws.blocks.resize_with(self.blocks.len(), BlockState::default);
        for (i, b) in self.blocks.iter().enumerate() {
            if h < 2 || w < 2 {
                crate::invalid!("training step: a {h}×{w} activation cannot be max-pooled");
            }
            let (done, rest) = ws.blocks.split_at_mut(i);
            let input = done.last().map_or(&ws.input, |prev| &prev.pooled);
            block_forward(b, input, n, h, w, &mut rest[0]);
            (h, w) = (h / 2, w / 2);
        }
        let c_last = self.blocks.last().map_or(c, |b| b.c_out);
        let top = ws.blocks.last().map_or(&ws.input, |st| &st.pooled);
        let (logits, loss, head, top_grad) = self.head_step(top, labels, n, c_last, h * w)?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate().rev() {
            let (below, from) = ws.blocks.split_at_mut(i + 1);
            let grad = from.first().map_or(&top_grad, |above| &above.dinput);
            blocks.push(block_backward(b, &mut below[i], grad, n, i > 0));
        }
        blocks.reverse();
        Ok(Step { logits, loss, blocks, head })
    }

    /// The head on the last block's output `a` (`c × N × s`): logits, mean loss, the head's gradients and the
    /// gradient of the loss with respect to `a`.
    #[allow(clippy::type_complexity)]
    fn head_step(
        &self,
        a: &[f32],
        labels: &[u32],
        n: usize,
        c: usize,
        s: usize,
    ) -> Result<(Vec<f32>, f32, Vec<Vec<f32>>, Vec<f32>)> {
        let k = self.classes;
        match &self.head {
            Head::Mlp { w1, b1, w2, b2 } => {
                let inp = c * s;
                let hidden = b1.len();
                if w1.len() != hidden * inp || w2.len() != k * hidden || b2.len() != k {
                    crate::invalid!("training step: the classifier does not take {inp} inputs to {k} classes");
                }
                // x (N × c·s): the flattening of N×C×H×W.
                let x = transpose_planes(a, c, n, s);
                let h1 = linear_forward(&x, w1, b1, n);
                let r: Vec<f32> = h1.iter().map(|v| v.max(0.0)).collect();
                let logits = linear_forward(&r, w2, b2, n);
                let (loss, dl) = cross_entropy(&logits, labels, k);
                let (dw2, db2, mut dh) = linear_backward(&r, w2, &dl, n);
                dh.iter_mut().zip(&h1).for_each(|(g, &v)| {
                    if v <= 0.0 {
                        *g = 0.0
                    }
                });
                let (dw1, db1, dx) = linear_backward(&x, w1, &dh, n);
                Ok((logits, loss, vec![dw1, db1, dw2, db2], transpose_planes(&dx, n, c, s)))
            }
            Head::Cam { w, b } => {
                if w.len() != k * c || b.len() != k {
                    crate::invalid!("training step: the CAM head does not take {c} channels to {k} classes");
                }
                let mut pooled = vec![0f32; n * c];
                for ci in 0..c {
                    for ni in 0..n {
                        pooled[ni * c + ci] = a[(ci * n + ni) * s..][..s].iter().sum::<f32>() / s as f32;
                    }
                }
                let logits = linear_forward(&pooled, w, b, n);
                let (loss, dl) = cross_entropy(&logits, labels, k);
                let (dw, db, dp) = linear_backward(&pooled, w, &dl, n);
                let mut da = vec![0f32; a.len()];
                for ci in 0..c {
                    for ni in 0..n {
                        da[(ci * n + ni) * s..][..s].fill(dp[ni * c + ci] / s as f32);
                    }
                }
                Ok((logits, loss, vec![dw, db], da))
            }
        }
    }
}

/// `y = x·Wᵀ + b` for `n` rows `x` (`w`: `out × in`, row-major).
fn linear_forward(x: &[f32], w: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let (out, inp) = (b.len(), w.len() / b.len());
    let mut y = vec![0f32; n * out];
    sgemm_wide(n, out, inp, (x, (inp as isize, 1)), (w, (1, inp as isize)), &mut y);
    y.chunks_mut(out).for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    y
}

/// The gradients `(dW, db, dx)` of [`linear_forward`] from `dy` (`n × out`): `dW = dyᵀ·x`, `db = Σ dy`, `dx = dy·W`.
fn linear_backward(x: &[f32], w: &[f32], dy: &[f32], n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (out, inp) = (dy.len() / n, x.len() / n);
    let mut dw = vec![0f32; out * inp];
    sgemm_wide(out, inp, n, (dy, (1, out as isize)), (x, (inp as isize, 1)), &mut dw);
    let mut dx = vec![0f32; n * inp];
    sgemm_wide(n, inp, out, (dy, (out as isize, 1)), (w, (inp as isize, 1)), &mut dx);
    (dw, column_sums(dy, out), dx)
}

/// Mean cross-entropy of `logits` (`n × k`) and its gradient `(softmax − onehot) / n`.
fn cross_entropy(logits: &[f32], labels: &[u32], k: usize) -> (f32, Vec<f32>) {
    let n = labels.len();
    let mut grad = vec![0f32; n * k];
    let mut loss = 0f64;
    for (i, &y) in labels.iter().enumerate() {
        let z = &logits[i * k..][..k];
        let (e, sum, max) = shifted_exps(z);
        loss += (sum.ln() + max - z[y as usize]) as f64;
        for (j, g) in grad[i * k..][..k].iter_mut().enumerate() {
            *g = (e[j] / sum - if j == y as usize { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    ((loss / n as f64) as f32, grad)
}

/// Sums over the rows of a row-major `rows × cols` matrix.
fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; cols];
    for row in m.chunks(cols) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out
}

/// `(Σ aᵢ, Σ aᵢ·bᵢ)` (`b` empty: `Σ aᵢ` only), in `f32` lanes the compiler vectorises, blocks summed in `f64`.
fn sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    const LANES: usize = 16;
    const BLOCK: usize = 1024;
    let (mut s, mut p) = (0f64, 0f64);
    for (i, block) in a.chunks(BLOCK).enumerate() {
        let (mut acc_s, mut acc_p) = ([0f32; LANES], [0f32; LANES]);
        let mut xs = block.chunks_exact(LANES);
        if b.is_empty() {
            for x in &mut xs {
                let x: &[f32; LANES] = x.try_into().expect("exact chunk");
                (0..LANES).for_each(|l| acc_s[l] += x[l]);
            }
            xs.remainder().iter().for_each(|&x| acc_s[0] += x);
        } else {
            let mut ys = b[i * BLOCK..][..block.len()].chunks_exact(LANES);
            for (x, y) in (&mut xs).zip(&mut ys) {
                let (x, y): (&[f32; LANES], &[f32; LANES]) =
                    (x.try_into().expect("exact chunk"), y.try_into().expect("exact chunk"));
                (0..LANES).for_each(|l| {
                    acc_s[l] += x[l];
                    acc_p[l] += x[l] * y[l];
                });
            }
            for (&x, &y) in xs.remainder().iter().zip(ys.remainder()) {
                acc_s[0] += x;
                acc_p[0] += x * y;
            }
        }
        s += acc_s.iter().sum::<f32>() as f64;
        p += acc_p.iter().sum::<f32>() as f64;
    }
    (s, p)
}

/// Convolution, batch statistics, BatchNorm + ReLU + 2×2 max-pool of `a` (`c_in × N × h × w`), into `st`.
fn block_forward(b: &Block, a: &[f32], n: usize, h: usize, w: usize, st: &mut BlockState) {
    let (kk, m) = (b.c_in * b.k * b.k, n * h * w);
    im2col_same(a, (n, h, w), b.k, b.pad, reuse(&mut st.cols, kk * m), true);
    let z = reuse(&mut st.z, b.c_out * m);
    sgemm_wide(b.c_out, m, kk, (&b.weight, (kk as isize, 1)), (&st.cols, (m as isize, 1)), z);
    let stats: Vec<(f32, f32)> = z
        .par_chunks_mut(m)
        .with_min_len(grain(m))
        .zip(&b.bias[..])
        .map(|(zc, &bias)| {
            zc.iter_mut().for_each(|v| *v += bias);
            let (s, sq) = sums(zc, zc);
            let mean = s / m as f64;
            (mean as f32, (sq / m as f64 - mean * mean).max(0.0) as f32)
        })
        .collect();
    (st.mean, st.var) = stats.into_iter().unzip();
    (st.h, st.w) = (h, w);
    let (ho, wo) = (h / 2, w / 2);
    let per_channel = n * ho * wo;
    let pooled = reuse(&mut st.pooled, b.c_out * per_channel);
    st.argmax.resize(b.c_out * per_channel, 0);
    let (z, mean, var) = (&st.z, &st.mean, &st.var);
    pooled
        .par_chunks_mut(per_channel)
        .zip(st.argmax.par_chunks_mut(per_channel))
        .with_min_len(grain(m))
        .enumerate()
        .for_each(|(ci, (out, arg))| {
            let scale = b.gamma[ci] / (var[ci] + b.eps).sqrt();
            let shift = b.beta[ci] - mean[ci] * scale;
            for ni in 0..n {
                let o = ni * ho * wo;
                let plane = &z[(ci * n + ni) * h * w..][..h * w];
                affine_relu_pool(
                    plane,
                    (h, w),
                    (scale, shift),
                    &mut out[o..][..ho * wo],
                    Some(&mut arg[o..][..ho * wo]),
                );
            }
        });
}

/// Back-propagates `dp` (gradient of the pooled output) through pooling, ReLU, BatchNorm and the convolution:
/// the block's gradients and, when `input_grad`, the gradient of its input in `st.dinput` (`c_in × N × h × w`).
fn block_backward(b: &Block, st: &mut BlockState, dp: &[f32], n: usize, input_grad: bool) -> BlockGrads {
    let (h, w) = (st.h, st.w);
    let (ho, wo) = (h / 2, w / 2);
    let (m, per_channel) = (n * h * w, n * ho * wo);
    let dz = reuse(&mut st.dz, b.c_out * m);
    let (z_all, argmax, mean, var) = (&st.z, &st.argmax, &st.mean, &st.var);
    // Per channel: route through the pooling, mask by the ReLU, then BatchNorm's backward (the paper's formula).
    let channel_sums: Vec<[f32; 3]> = dz
        .par_chunks_mut(m)
        .with_min_len(grain(m))
        .enumerate()
        .map(|(ci, dzc)| {
            dzc.fill(0.0);
            let z = &z_all[ci * m..][..m];
            let inv_std = 1.0 / (var[ci] + b.eps).sqrt();
            let (mu, scale) = (mean[ci], b.gamma[ci] * inv_std);
            let shift = b.beta[ci] - mu * scale;
            let (args, grads) = (&argmax[ci * per_channel..][..per_channel], &dp[ci * per_channel..][..per_channel]);
            for ni in 0..n {
                for oy in 0..ho {
                    let o = (ni * ho + oy) * wo;
                    let top = ni * h * w + 2 * oy * w;
                    for (ox, (&q, &g)) in args[o..o + wo].iter().zip(&grads[o..o + wo]).enumerate() {
                        let at = top + (q as usize >> 1) * w + 2 * ox + (q as usize & 1);
                        if z[at] * scale + shift > 0.0 {
                            dzc[at] = g;
                        }
                    }
                }
            }
            // Σ dy and Σ dy·x̂ = (Σ dy·z − μ·Σ dy)/σ.
            let (dbeta, dyz) = sums(dzc, z);
            let dgamma = (dyz - mu as f64 * dbeta) * inv_std as f64;
            let (mb, mg) = ((dbeta / m as f64) as f32, (dgamma / m as f64) as f32);
            for (g, &zv) in dzc.iter_mut().zip(z) {
                *g = scale * (*g - mb - (zv - mu) * inv_std * mg);
            }
            let dbias = sums(dzc, &[]).0;
            [dgamma as f32, dbeta as f32, dbias as f32]
        })
        .collect();
    let kk = b.c_in * b.k * b.k;
    // dWᵀ (kk × c_out) = cols (kk × M) · dZᵀ: this orientation packs faster (64 × 288 × 25,088: 2.1×).
    let mut dweight_t = vec![0f32; kk * b.c_out];
    sgemm_long(kk, b.c_out, m, (&st.cols, (m as isize, 1)), (&st.dz, (1, m as isize)), &mut dweight_t);
    let mut dweight = vec![0f32; b.c_out * kk];
    for (r, row) in dweight_t.chunks(b.c_out).enumerate() {
        row.iter().enumerate().for_each(|(o, &v)| dweight[o * kk + r] = v);
    }
    if input_grad {
        // dcols = Wᵀ (kk × c_out) · dZ (c_out × M), folded back.
        let dcols = reuse(&mut st.dcols, kk * m);
        sgemm_wide(kk, m, b.c_out, (&b.weight, (1, kk as isize)), (&st.dz, (m as isize, 1)), dcols);
        col2im_same(dcols, (n, h, w), b.k, b.pad, reuse(&mut st.dinput, b.c_in * m), true);
    }
    BlockGrads {
        weight: dweight,
        bias: channel_sums.iter().map(|s| s[2]).collect(),
        gamma: channel_sums.iter().map(|s| s[0]).collect(),
        beta: channel_sums.iter().map(|s| s[1]).collect(),
        batch_mean: st.mean.clone(),
        batch_var: st.var.clone(),
        count: m,
    }
}

#[cfg(test)]
mod tests {
    use crate::data::DatasetKind;
    use crate::models::{autograd_step, Arch, ModelSpec};
    use crate::params::init_model;
    use crate::train::{Optimizer, OptimizerKind};
    use crate::Result;
    use candle_core::{Device, Tensor};
    use candle_nn::VarMap;
    use rand::{Rng, SeedableRng};

    fn batch(kind: DatasetKind, n: usize, seed: u64) -> Result<(Tensor, Tensor)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let len = n * kind.channels() * kind.side() * kind.side();
        let x: Vec<f32> = (0..len).map(|_| rng.random_range(-1.5f32..2.5)).collect();
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..kind.num_classes() as u32)).collect();
        Ok((
            Tensor::from_vec(x, (n, kind.channels(), kind.side(), kind.side()), &Device::Cpu)?,
            Tensor::from_vec(y, n, &Device::Cpu)?,
        ))
    }

    /// `features.{4i}.bias`: a block's convolution bias.
    fn conv_bias(name: &str) -> bool {
        name.strip_prefix("features.")
            .and_then(|r| r.strip_suffix(".bias"))
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i % 4 == 0)
    }

    fn sorted(map: &VarMap) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The buffer step computes what autograd computes on the same model: logits, loss, the gradient of every
    /// parameter (and no gradient for the CAM model's unused classifier), and the running statistics; and three
    /// SGD steps on each land on the same weights. SimpleCNN and CAM, MNIST (7×7 → 3×3: odd pooling) and CIFAR-10,
    /// one image and a batch.
    #[test]
    fn equals_autograd() -> Result<()> {
        for arch in [Arch::SimpleCnn, Arch::Cam] {
            for kind in [DatasetKind::Mnist, DatasetKind::Cifar10] {
                for n in [1, 5] {
                    let spec = ModelSpec { arch, dataset: kind };
                    let (map_a, model_a) = init_model(spec, 7, &Device::Cpu)?;
                    let (map_b, model_b) = init_model(spec, 7, &Device::Cpu)?;
                    let mut opt_a = Optimizer::new(OptimizerKind::Sgd, &map_a, 0.9, 5e-4);
                    let mut opt_b = Optimizer::new(OptimizerKind::Sgd, &map_b, 0.9, 5e-4);
                    for step in 0..3 {
                        let (x, y) = batch(kind, n, 10 * step + n as u64)?;
                        let a = autograd_step(model_a.as_ref(), &x, &y)?;
                        let b = model_b.training_step(&x, &y)?;
                        let what = format!("{arch} {kind:?} n={n} step {step}");
                        assert!(crate::testing::rel_error(&b.logits, &a.logits, 1.0)? < 1e-5, "{what}: logits");
                        assert!(
                            (a.loss - b.loss).abs() < 1e-5 * a.loss.abs().max(1.0),
                            "{what}: loss {} vs {}",
                            b.loss,
                            a.loss
                        );
                        let mut compared = 0;
                        for ((name, pa), (_, pb)) in sorted(&map_a).iter().zip(&sorted(&map_b)) {
                            compared += b.grads.get(pb).is_some() as usize;
                            match (a.grads.get(pa), b.grads.get(pb)) {
                                (Some(ga), Some(gb)) if conv_bias(name) => {
                                    // BatchNorm subtracts the batch mean, so a convolution's bias has no effect and
                                    // its true gradient is 0: both sides are rounding noise, tiny next to the
                                    // weight's gradient.
                                    let weight = name.replace("bias", "weight");
                                    let (_, pw) = sorted(&map_b).into_iter().find(|(k, _)| *k == weight).unwrap();
                                    let scale = b.grads.get(&pw).unwrap().abs()?.max_all()?.to_scalar::<f32>()?;
                                    for g in [ga, gb] {
                                        let m = g.abs()?.max_all()?.to_scalar::<f32>()?;
                                        assert!(
                                            m < 1e-4 * scale,
                                            "{what}: {name}'s gradient {m} is not ≈ 0 (weight's {scale})"
                                        );
                                    }
                                }
                                (Some(ga), Some(gb)) => {
                                    let r = crate::testing::rel_error(gb, ga, 1e-6)?;
                                    assert!(r < 1e-4, "{what}: gradient of {name} differs by {r}");
                                }
                                (None, None) => {}
                                _ => panic!("{what}: {name} has a gradient on one side only"),
                            }
                        }
                        assert_eq!(
                            compared,
                            if arch == Arch::Cam { 14 } else { 16 },
                            "{what}: every trainable parameter"
                        );
                        opt_a.step(&a.grads, 0.05)?;
                        opt_b.step(&b.grads, 0.05)?;
                    }
                    for ((name, pa), (_, pb)) in sorted(&map_a).iter().zip(&sorted(&map_b)) {
                        let r = crate::testing::rel_error(pb, pa, 1e-3)?;
                        assert!(r < 1e-4, "{arch} {kind:?} n={n}: {name} after three steps differs by {r}");
                    }
                }
            }
        }
        Ok(())
    }

    /// The shifted-block im2col and its adjoint equal the general per-image ones (`ops::conv`) on the same images
    /// stored `N×C×H×W`: odd and even sizes, 3×3 and 5×5 kernels.
    #[test]
    fn shifted_im2col_equals_the_general_one() {
        use crate::ops::Geometry;
        for (n, c, h, w, k) in [(2, 3, 7, 5, 3), (3, 2, 4, 4, 3), (1, 1, 6, 9, 5), (2, 2, 1, 1, 3)] {
            let pad = k / 2;
            let m = n * h * w;
            let a: Vec<f32> = (0..c * m).map(|i| ((i * 37 % 101) as f32) - 50.0).collect();
            // The same images, N×C×H×W.
            let mut nchw = vec![0f32; c * m];
            for ci in 0..c {
                for ni in 0..n {
                    nchw[(ni * c + ci) * h * w..][..h * w].copy_from_slice(&a[(ci * n + ni) * h * w..][..h * w]);
                }
            }
            let g = Geometry::stride_one(n, (c, h, w), k, pad);
            let mut want = vec![0f32; g.rows() * g.cols()];
            for (r, row) in want.chunks_mut(g.cols()).enumerate() {
                g.im2col_row(&nchw, r, row);
            }
            let mut got = vec![f32::NAN; c * k * k * m];
            crate::ops::im2col_same(&a, (n, h, w), k, pad, &mut got, n > 1);
            assert_eq!(got, want, "im2col {n}×{c}×{h}×{w}, k = {k}");
            let mut dcols: Vec<f32> = (0..c * k * k * m).map(|i| (i % 13) as f32).collect();
            let mut want_dx = vec![0f32; c * m];
            for (p, plane) in want_dx.chunks_mut(h * w).enumerate() {
                g.col2im_plane(&dcols, p, plane);
            }
            let mut dx = vec![f32::NAN; c * m];
            crate::ops::col2im_same(&mut dcols, (n, h, w), k, pad, &mut dx, n > 1);
            for ci in 0..c {
                for ni in 0..n {
                    assert_eq!(
                        &dx[(ci * n + ni) * h * w..][..h * w],
                        &want_dx[(ni * c + ci) * h * w..][..h * w],
                        "col2im {n}×{c}×{h}×{w}, k = {k}"
                    );
                }
            }
        }
    }

    /// Bad batches are errors, not panics.
    #[test]
    fn rejects_bad_batches() -> Result<()> {
        let spec = ModelSpec { arch: Arch::SimpleCnn, dataset: DatasetKind::Mnist };
        let (_, model) = init_model(spec, 1, &Device::Cpu)?;
        let (x, _) = batch(DatasetKind::Mnist, 2, 1)?;
        assert!(model.training_step(&x, &Tensor::new(&[3u32, 10], &Device::Cpu)?).is_err(), "label out of range");
        assert!(model.training_step(&x, &Tensor::new(&[3u32], &Device::Cpu)?).is_err(), "one label for two images");
        let (cifar, y) = batch(DatasetKind::Cifar10, 2, 1)?;
        assert!(model.training_step(&cifar, &y).is_err(), "CIFAR-10 images into an MNIST model");
        Ok(())
    }
}
