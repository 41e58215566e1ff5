//! The graph's layers on `f32` buffers, forward and backward. Every value is channel-major over the batch,
//! `c × n × (h·w)`: a convolution is one matrix product with no transpose (Chellapilla et al. 2006), each
//! channel's batch statistics one contiguous run, and a concatenation along the channels an append.

use crate::graph::Shape;
use crate::ops::{col2im_same, im2col_same, sgemm, sgemm_long, sgemm_wide, Winograd, SOFTMAX_FLOOR};
use rayon::prelude::*;

/// A zero-filled buffer.
pub(super) fn zeros(len: usize) -> Vec<f32> {
    vec![0f32; len]
}

/// A buffer whose every element the caller writes before anything reads it ([`crate::ops::uninit`]).
pub(super) use crate::ops::uninit as scratch;

/// The shape of a convolution over `n` images.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvGeometry {
    pub n: usize,
    pub input: Shape,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeometry {
    pub fn out_hw(&self) -> (usize, usize) {
        let (_, h, w) = self.input;
        let o = |s: usize| (s + 2 * self.pad - self.k) / self.stride + 1;
        (o(h), o(w))
    }

    /// Output positions over the batch: the columns of the unfolded input.
    pub fn positions(&self) -> usize {
        let (ho, wo) = self.out_hw();
        self.n * ho * wo
    }

    /// Rows of the unfolded input: `c_in·k·k`.
    pub fn rows(&self) -> usize {
        self.input.0 * self.k * self.k
    }

    /// A 1×1 convolution, stride 1, no padding: the input is its own unfolded matrix.
    pub fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Stride 1 with "same" padding: the fast shifted-copy unfolding applies.
    fn is_same(&self) -> bool {
        self.stride == 1 && 2 * self.pad + 1 == self.k
    }

    /// The Winograd form of this convolution ([`Winograd::of`]). Training only: the tile transforms round
    /// differently from a direct sum, and in evaluation mode (no batch statistics to renormalise) WARN's layer
    /// gradients on MNIST moved 5.5e-4 from float64 through it, against 1.2e-5 through im2col
    /// (`executor::tests::evaluation_equals_autograd`); the training pass stays within the tolerance of candle's own
    /// float32.
    pub fn winograd(&self) -> Option<Winograd> {
        Winograd::of(self.n, self.input, self.c_out, self.k, self.stride, self.pad)
    }

    /// The input rows `iy` (for output rows `0..ho`) that kernel row `ky` reads: `oy·stride + ky − pad`.
    fn source(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        (o * self.stride + kk).checked_sub(self.pad).filter(|&i| i < size)
    }

    /// Unfolds `x` (`c_in × n × h·w`) into `cols` (`c_in·k·k × n·ho·wo`).
    pub fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        let (c, h, w) = self.input;
        if self.is_same() {
            im2col_same(x, (self.n, h, w), self.k, self.pad, cols, true);
            return;
        }
        let (ho, wo) = self.out_hw();
        let (k, n) = (self.k, self.n);
        let _ = c;
        cols.par_chunks_mut(self.positions()).enumerate().for_each(|(r, row)| {
            let (ci, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            for ni in 0..n {
                let plane = &x[(ci * n + ni) * h * w..][..h * w];
                for oy in 0..ho {
                    let dst = &mut row[(ni * ho + oy) * wo..][..wo];
                    match self.source(oy, ky, h) {
                        None => dst.fill(0.0),
                        Some(iy) => {
                            for (ox, d) in dst.iter_mut().enumerate() {
                                *d = self.source(ox, kx, w).map_or(0.0, |ix| plane[iy * w + ix]);
                            }
                        }
                    }
                }
            }
        });
    }

    /// The adjoint of [`ConvGeometry::im2col`]: `dcols` summed into `dx` (overwritten). `dcols` is scratch.
    pub fn col2im(&self, dcols: &mut [f32], dx: &mut [f32]) {
        let (_, h, w) = self.input;
        if self.is_same() {
            col2im_same(dcols, (self.n, h, w), self.k, self.pad, dx, true);
            return;
        }
        let (ho, wo) = self.out_hw();
        let (k, n, p) = (self.k, self.n, self.positions());
        dx.par_chunks_mut(n * h * w).zip(dcols.par_chunks(k * k * p)).for_each(|(channel, rows)| {
            channel.fill(0.0);
            for (t, row) in rows.chunks(p).enumerate() {
                let (ky, kx) = (t / k, t % k);
                for ni in 0..n {
                    let plane = &mut channel[ni * h * w..][..h * w];
                    for oy in 0..ho {
                        let Some(iy) = self.source(oy, ky, h) else { continue };
                        let src = &row[(ni * ho + oy) * wo..][..wo];
                        for (ox, &v) in src.iter().enumerate() {
                            if let Some(ix) = self.source(ox, kx, w) {
                                plane[iy * w + ix] += v;
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Output positions (images × pixels) below which a convolution's input gradient, with constant weights, runs as
/// the forward pass of the flipped convolution ([`ConvGeometry::transposed`]). Few positions make the product as
/// long as the weight and a few columns wide: the weight is read once, from memory, and read as `Wᵀ` (strided) it
/// took twice as long as read row by row. Measured on cold weights (2 threads, Intel Xeon), `Wᵀ · dy` against the
/// flipped convolution's product: RAN's 3×3, 512 → 512 over 16 positions 2.09 against 0.90 ms, 1×1 512 → 2048
/// 0.83 against 0.38; WARN's 3×3, 256 → 256 over 49 positions 0.83 against 0.41; 128 → 128 over 196 0.40 against
/// 0.35, over 256 even (0.39), over 784 and more `Wᵀ · dy` wins (0.33 against 0.35).
pub(super) const FLIP_BELOW: usize = 256;

impl ConvGeometry {
    /// The convolution whose forward pass is this one's input gradient where that is a convolution of the same kind
    /// (stride 1, "same" padding, a 1×1 included): `c_out` channels in, `c_in` out, through [`flipped_weight`].
    pub fn transposed(&self) -> Option<ConvGeometry> {
        let (c_in, h, w) = self.input;
        self.is_same().then_some(ConvGeometry { input: (self.c_out, h, w), c_out: c_in, ..*self })
    }

    /// `y = W ∗ x + b` by unfolding (a 1×1 needs none) and one product.
    pub fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        if self.is_pointwise() {
            return conv_forward(self, x, weight, bias);
        }
        let mut cols = scratch(self.rows() * self.positions());
        self.im2col(x, &mut cols);
        conv_forward(self, &cols, weight, bias)
    }
}

/// A `c_out × c_in × k × k` weight as the `c_in × c_out × k × k` weight of its transposed convolution:
/// `W̃[ci][co][ky][kx] = W[co][ci][k−1−ky][k−1−kx]` (each filter turned half a turn). With stride 1 and "same" padding,
/// `dx = W̃ ∗ dy`.
pub(super) fn flipped_weight(w: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let kk = k * k;
    let mut f = scratch(w.len());
    f.par_chunks_mut(c_out * kk).enumerate().for_each(|(ci, row)| {
        for (co, dst) in row.chunks_mut(kk).enumerate() {
            let src = &w[(co * c_in + ci) * kk..][..kk];
            dst.iter_mut().zip(src.iter().rev()).for_each(|(d, &s)| *d = s);
        }
    });
    f
}

/// `y (c_out × P) = W · cols + b`.
pub(super) fn conv_forward(g: &ConvGeometry, cols: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let p = g.positions();
    let mut y = scratch(g.c_out * p);
    let rows = g.rows();
    sgemm_wide(g.c_out, p, rows, (weight, (rows as isize, 1)), (cols, (p as isize, 1)), &mut y);
    if let Some(b) = bias {
        y.par_chunks_mut(p).zip(b).for_each(|(row, &b)| row.iter_mut().for_each(|v| *v += b));
    }
    y
}

/// The weight gradient `dy · colsᵀ` and the bias gradient (row sums of `dy`).
pub(super) fn conv_param_grads(g: &ConvGeometry, cols: &[f32], dy: &[f32], bias: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let (p, rows) = (g.positions(), g.rows());
    let mut dw = scratch(g.c_out * rows);
    sgemm_long(g.c_out, rows, p, (dy, (p as isize, 1)), (cols, (1, p as isize)), &mut dw);
    (dw, bias.then(|| channel_sums(dy, g.c_out)))
}

/// The sum of each of `c` channels of `x` (`c × m`), in `f64`: a bias's gradient.
pub(super) fn channel_sums(x: &[f32], c: usize) -> Vec<f32> {
    x.par_chunks(x.len() / c.max(1)).map(|row| lane_sums(row, row, |v, _| v as f64) as f32).collect()
}

/// The unfolded input's gradient `Wᵀ · dy` (`c_in·k·k × P`).
pub(super) fn conv_cols_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (p, rows) = (g.positions(), g.rows());
    let mut dcols = scratch(rows * p);
    sgemm_wide(rows, p, g.c_out, (weight, (1, rows as isize)), (dy, (p as isize, 1)), &mut dcols);
    dcols
}

/// Batch statistics of each channel of `x` (`c × m`): mean and biased variance, summed in `f64`.
pub(super) fn batch_stats(x: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let m = x.len() / c;
    x.par_chunks(m)
        .map(|ch| {
            let mean = lane_sums(ch, ch, |v, _| v as f64) / m as f64;
            let var = lane_sums(ch, ch, |v, _| (v as f64 - mean).powi(2)) / m as f64;
            (mean as f32, var as f32)
        })
        .unzip()
}

/// Independent partial sums per [`lane_sums`] call: enough to hide the latency of a float64 add.
const LANES: usize = 8;

/// `Σ f(a_i, b_i)` in float64, over `LANES` interleaved partial sums added in a fixed order: a single running sum
/// waits on every add (4 cycles each), these chains run side by side and vectorise (BatchNorm's statistics and
/// backward sums). One sum a call: LLVM vectorises two side by side in one loop as pairs of scalars (measured:
/// twice the time of two calls, each one's operands still in cache for the second).
pub(super) fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += f(xa[l], xb[l]);
        }
    }
    acc.iter().sum::<f64>() + ra.iter().zip(rb).map(|(&va, &vb)| f(va, vb)).sum::<f64>()
}

/// Independent partial sums of the float32 reductions: one AVX-512 register, two AVX ones.
const F32_LANES: usize = 16;

/// `Σ a_i·b_i` in float32 over [`F32_LANES`] interleaved partial sums added in a fixed order (a single running sum
/// waits on every add; these chains vectorise): a gate's gradient, a plane's sum.
pub(super) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; F32_LANES];
    let (ca, cb) = (a.chunks_exact(F32_LANES), b.chunks_exact(F32_LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..F32_LANES {
            acc[l] += xa[l] * xb[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ f(a_i)` in float32, in lanes as [`lane_dot`] adds.
#[inline(always)]
fn lane_total(a: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; F32_LANES];
    let chunks = a.chunks_exact(F32_LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for xa in chunks {
        for l in 0..F32_LANES {
            acc[l] += f(xa[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a_i` in float32, as [`lane_dot`] adds.
pub(super) fn lane_sum(a: &[f32]) -> f32 {
    lane_total(a, |v| v)
}

/// The mean of each plane of `m` values (global average pooling).
pub(super) fn plane_means(x: &[f32], m: usize) -> Vec<f32> {
    x.par_chunks(m).map(|p| lane_sum(p) / m as f32).collect()
}

/// `y = x·scale[c] + shift[c]` over `c × m`.
pub(super) fn channel_affine(x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let m = x.len() / scale.len();
    let mut y = scratch(x.len());
    y.par_chunks_mut(m).zip(x.par_chunks(m)).enumerate().for_each(|(c, (out, src))| {
        let (s, t) = (scale[c], shift[c]);
        out.iter_mut().zip(src).for_each(|(o, &v)| *o = v * s + t);
    });
    y
}

/// Training-mode BatchNorm backward in place: `dy` becomes the input gradient; returns `(dγ, dβ)`. A channel's two
/// sums in float64, then each value `k·(dy − Σdy/m − x̂·Σ(dy·x̂)/m)` as one affine map of `(dy, x)` in float64, rounded
/// once: the input gradient of a channel sums to zero (the shift cancels), and a layer before the BatchNorm sees
/// its bias gradient as the sum of these values' rounding errors. The channel (`dy` and `x`, a few hundred KiB at
/// most here) is still in the core's cache for the second pass.
pub(super) fn batch_norm_backward(
    x: &[f32],
    dy: &mut [f32],
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let c = mean.len();
    let m = x.len() / c;
    dy.par_chunks_mut(m)
        .zip(x.par_chunks(m))
        .enumerate()
        .map(|(ch, (gs, xs))| {
            let (mu, is) = (mean[ch], invstd[ch]);
            let (mu, is) = (mu as f64, is as f64);
            // Σ dy·x̂ = is·(Σ dy·x − μ·Σ dy), the products exact in float64.
            let sdy = lane_sums(gs, gs, |g, _| g as f64);
            let sdyx = is * (lane_sums(xs, gs, |v, g| v as f64 * g as f64) - mu * sdy);
            let (a, b) = (sdy / m as f64, sdyx / m as f64);
            // k·(g − a − (x − μ)·is·b) = k·g + s·x + t.
            let k = gamma[ch] as f64 * is;
            let (s, t) = (-k * is * b, k * (is * b * mu - a));
            for (g, &v) in gs.iter_mut().zip(xs) {
                *g = (k * *g as f64 + (s * v as f64 + t)) as f32;
            }
            (sdyx as f32, sdy as f32)
        })
        .unzip()
}

/// `x (c × n × hw)` as the matrix `(c·hw) × n` of flattened images (PyTorch's flatten order).
pub(super) fn flatten(x: &[f32], (c, h, w): Shape, n: usize) -> std::borrow::Cow<'_, [f32]> {
    let hw = h * w;
    if hw == 1 {
        return x.into();
    }
    let mut out = scratch(x.len());
    out.par_chunks_mut(hw * n).zip(x.par_chunks(n * hw)).for_each(|(dst, src)| {
        for ni in 0..n {
            for p in 0..hw {
                dst[p * n + ni] = src[ni * hw + p];
            }
        }
    });
    let _ = c;
    out.into()
}

/// The adjoint of [`flatten`].
pub(super) fn unflatten(x: Vec<f32>, (_, h, w): Shape, n: usize) -> Vec<f32> {
    let hw = h * w;
    if hw == 1 {
        return x;
    }
    let mut out = scratch(x.len());
    out.par_chunks_mut(n * hw).zip(x.par_chunks(hw * n)).for_each(|(dst, src)| {
        for ni in 0..n {
            for p in 0..hw {
                dst[ni * hw + p] = src[p * n + ni];
            }
        }
    });
    out
}

/// A gradient, when it was asked for.
pub(super) type Grad = Option<Vec<f32>>;

/// `y (out × n) = W · X + b` for `X` (`inp × n`).
pub(super) fn linear_forward(xm: &[f32], n: usize, weight: &[f32], bias: Option<&[f32]>, out: usize) -> Vec<f32> {
    let inp = xm.len() / n;
    let mut y = zeros(out * n);
    if let Some(b) = bias {
        y.chunks_mut(n).zip(b).for_each(|(row, &b)| row.fill(b));
    }
    sgemm(out, n, inp, weight, (inp as isize, 1), xm, (n as isize, 1), &mut y, bias.is_some(), true);
    y
}

/// The linear layer's `dW = dy · Xᵀ`, `db` and `dX = Wᵀ · dy`.
pub(super) fn linear_backward(
    xm: &[f32],
    n: usize,
    weight: &[f32],
    dy: &[f32],
    want: (bool, bool),
) -> (Grad, Grad, Grad) {
    let inp = xm.len() / n;
    let out = dy.len() / n;
    let (dw, db) = if want.0 {
        // The product (over n ≥ 1 images: the lengths above divide by it) overwrites every entry: no zero-filling
        // pass over CBAM's 8 MB classifier gradient.
        let mut dw = scratch(out * inp);
        sgemm(out, inp, n, dy, (n as isize, 1), xm, (1, n as isize), &mut dw, false, true);
        let db = dy.chunks(n).map(|r| r.iter().map(|&v| v as f64).sum::<f64>() as f32).collect();
        (Some(dw), Some(db))
    } else {
        (None, None)
    };
    let dx = want.1.then(|| {
        let mut dx = zeros(inp * n);
        sgemm(inp, n, out, weight, (1, inp as isize), dy, (n as isize, 1), &mut dx, false, true);
        dx
    });
    (dw, db, dx)
}

/// Whether `v`, met after `best`, replaces it as the first maximum (a NaN counts as the maximum, PyTorch's rule).
/// Even written without short-circuits, LLVM compiles a loop of these to a branch per value (seen in perf annotate),
/// so the maxima use it only where [`finite`] finds a NaN or an infinity.
#[inline]
fn takes(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// Whether every value is finite: `Σ 0·x` is 0 unless a NaN or an infinity is there (lanes that vectorise). The
/// maxima take a plain `>` (a vector compare and blend) on finite values, and [`takes`] (NaN's rule, which the
/// compiler leaves as a branch per value) otherwise.
fn finite(x: &[f32]) -> bool {
    lane_total(x, |v| 0.0 * v) == 0.0
}

/// [`takes`] where the caller knows both values are finite (`EXACT` false) or not.
#[inline(always)]
fn beats<const EXACT: bool>(v: f32, best: f32) -> bool {
    if EXACT {
        takes(v, best)
    } else {
        v > best
    }
}

/// Position of the first maximum of `values` (a NaN counts as the maximum, PyTorch's rule).
#[inline]
fn first_max(values: impl Iterator<Item = (usize, f32)>) -> (usize, f32) {
    let mut best = (usize::MAX, f32::NEG_INFINITY);
    for (i, v) in values {
        if best.0 == usize::MAX || takes(v, best.1) {
            best = (i, v);
        }
    }
    best
}

/// 2×2 max-pooling, stride 2, of `planes` planes `h × w` to `ho × wo` (ceil mode when `ho = ⌈h/2⌉`): the values and
/// the index in its plane of each window's first maximum.
pub(super) fn max_pool(x: &[f32], (h, w): (usize, usize), (ho, wo): (usize, usize)) -> (Vec<f32>, Vec<u32>) {
    let planes = x.len() / (h * w);
    let mut y = scratch(planes * ho * wo);
    let mut arg = vec![0u32; planes * ho * wo];
    y.par_chunks_mut(ho * wo).zip(arg.par_chunks_mut(ho * wo)).zip(x.par_chunks(h * w)).for_each(|((yp, ap), p)| {
        // Whole windows: the four cells in order as selects, without bounds checks.
        if finite(p) {
            whole_windows::<false>(p, (h, w), (ho, wo), yp, ap);
        } else {
            whole_windows::<true>(p, (h, w), (ho, wo), yp, ap);
        }
        // Windows cut by the edge (ceil mode).
        for oy in 0..ho {
            for ox in 0..wo {
                if 2 * oy + 1 < h && 2 * ox + 1 < w {
                    continue;
                }
                let cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .into_iter()
                    .map(|(dy, dx)| (2 * oy + dy, 2 * ox + dx))
                    .filter(|&(iy, ix)| iy < h && ix < w)
                    .map(|(iy, ix)| (iy * w + ix, p[iy * w + ix]));
                let (i, v) = first_max(cells);
                yp[oy * wo + ox] = v;
                ap[oy * wo + ox] = i as u32;
            }
        }
    });
    (y, arg)
}

/// The windows of [`max_pool`] that lie inside the plane `p`.
#[inline(always)]
fn whole_windows<const EXACT: bool>(
    p: &[f32],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    yp: &mut [f32],
    ap: &mut [u32],
) {
    let whole = (w / 2).min(wo);
    for oy in 0..(h / 2).min(ho) {
        let (r0, r1) = (&p[2 * oy * w..][..2 * whole], &p[(2 * oy + 1) * w..][..2 * whole]);
        let (ys, args) = (&mut yp[oy * wo..][..whole], &mut ap[oy * wo..][..whole]);
        let cells = r0.chunks_exact(2).zip(r1.chunks_exact(2));
        let first = (2 * oy * w) as u32;
        for (ox, ((y, a), (top, bottom))) in ys.iter_mut().zip(args.iter_mut()).zip(cells).enumerate() {
            let (mut best, mut at) = (top[0], 0u32);
            for (i, v) in [(1, top[1]), (w as u32, bottom[0]), (w as u32 + 1, bottom[1])] {
                let take = beats::<EXACT>(v, best);
                best = if take { v } else { best };
                at = if take { i } else { at };
            }
            *y = best;
            *a = first + 2 * ox as u32 + at;
        }
    }
}

/// Each gradient to the recorded position in its plane (`plane_len` values per plane).
pub(super) fn scatter(arg: &[u32], dy: &[f32], per_plane_out: usize, plane_len: usize) -> Vec<f32> {
    let mut dx = zeros(dy.len() / per_plane_out * plane_len);
    scatter_into(arg, dy, per_plane_out, &mut dx);
    dx
}

/// [`scatter`] added into `dx` (planes of `dx.len() / planes` values).
pub(super) fn scatter_into(arg: &[u32], dy: &[f32], per_plane_out: usize, dx: &mut [f32]) {
    let planes = dy.len() / per_plane_out;
    let plane_len = dx.len() / planes.max(1);
    dx.par_chunks_mut(plane_len).zip(dy.par_chunks(per_plane_out).zip(arg.par_chunks(per_plane_out))).for_each(
        |(d, (g, a))| {
            for (&gv, &i) in g.iter().zip(a) {
                d[i as usize] += gv;
            }
        },
    );
}

/// The global maximum of each plane and its index.
pub(super) fn plane_max(x: &[f32], hw: usize) -> (Vec<f32>, Vec<u32>) {
    x.par_chunks(hw)
        .map(|p| {
            // One pass for the largest number and whether a NaN (which counts as the maximum) is there, in
            // independent lanes (no chain of dependent comparisons); then the first position holding it, a block at
            // a time.
            let mut top = [f32::NEG_INFINITY; F32_LANES];
            let mut nan = [false; F32_LANES];
            let chunks = p.chunks_exact(F32_LANES);
            let rest = chunks.remainder();
            for c in chunks {
                for l in 0..F32_LANES {
                    nan[l] |= c[l].is_nan();
                    top[l] = if c[l] > top[l] { c[l] } else { top[l] };
                }
            }
            let mut any_nan = nan.iter().fold(false, |a, &b| a | b);
            let mut best = top.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            for &v in rest {
                any_nan |= v.is_nan();
                best = if v > best { v } else { best };
            }
            let hit = |v: f32| if any_nan { v.is_nan() } else { v == best };
            let block = p.chunks(F32_LANES).position(|c| c.iter().fold(false, |a, &v| a | hit(v))).unwrap_or(0);
            let i = block * F32_LANES + p[block * F32_LANES..].iter().position(|&v| hit(v)).unwrap_or(0);
            (p[i], i as u32)
        })
        .unzip()
}

/// Softmax of each run of `len` values (a plane, or a flat value's channels when `stride` > 1: element `j` of run
/// `r` at `r_base + j·stride`). A value more than [`SOFTMAX_FLOOR`] below its run's largest gets exactly 0.
pub(super) fn softmax_rows(x: &[f32], len: usize) -> Vec<f32> {
    let mut y = scratch(x.len());
    y.par_chunks_mut(len).zip(x.par_chunks(len)).for_each(|(out, row)| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (o, &v) in out.iter_mut().zip(row) {
            *o = if v - max < -SOFTMAX_FLOOR { 0.0 } else { (v - max).exp() };
            sum += *o;
        }
        out.iter_mut().for_each(|o| *o /= sum);
    });
    y
}

/// Softmax backward on runs of `len`: `dx = y ⊙ (g − Σ g·y)`.
pub(super) fn softmax_rows_backward(y: &[f32], g: &[f32], len: usize) -> Vec<f32> {
    let mut dx = scratch(y.len());
    dx.par_chunks_mut(len).zip(y.par_chunks(len).zip(g.par_chunks(len))).for_each(|(d, (yr, gr))| {
        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
        d.iter_mut().zip(yr.iter().zip(gr)).for_each(|(o, (&yv, &gv))| *o = yv * (gv - dot));
    });
    dx
}

/// `rows × cols` → `cols × rows` (`c × n` and back).
pub(super) fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    crate::ops::transpose_planes(x, rows, cols, 1)
}

/// Bilinear up-sampling with aligned corners of `planes` planes `hi × wi` to `ho × wo`: `Y = A_h · X · A_wᵀ`, and
/// (with `adjoint`) its transpose `dX = A_hᵀ · dY · A_w` mapping `ho × wo` planes back to `hi × wi`.
pub(super) fn upsample(x: &[f32], (hi, wi): (usize, usize), (ho, wo): (usize, usize), adjoint: bool) -> Vec<f32> {
    let a_h = crate::ops::interpolation_matrix(ho, hi);
    let a_w = crate::ops::interpolation_matrix(wo, wi);
    let (src_len, dst_len) = if adjoint { (ho * wo, hi * wi) } else { (hi * wi, ho * wo) };
    let planes = x.len() / src_len;
    let mut y = zeros(planes * dst_len);
    y.par_chunks_mut(dst_len).zip(x.par_chunks(src_len)).for_each(|(out, p)| {
        if !adjoint {
            // rows (hi × wo) = X · A_wᵀ; Y = A_h · rows.
            let mut rows = vec![0f32; hi * wo];
            for r in 0..hi {
                for o in 0..wo {
                    rows[r * wo + o] = (0..wi).map(|i| p[r * wi + i] * a_w[o * wi + i]).sum();
                }
            }
            for o in 0..ho {
                for i in 0..hi {
                    let a = a_h[o * hi + i];
                    if a != 0.0 {
                        for c in 0..wo {
                            out[o * wo + c] += a * rows[i * wo + c];
                        }
                    }
                }
            }
        } else {
            // rows (hi × wo) = A_hᵀ · dY; dX = rows · A_w.
            let mut rows = vec![0f32; hi * wo];
            for o in 0..ho {
                for i in 0..hi {
                    let a = a_h[o * hi + i];
                    if a != 0.0 {
                        for c in 0..wo {
                            rows[i * wo + c] += a * p[o * wo + c];
                        }
                    }
                }
            }
            for r in 0..hi {
                for i in 0..wi {
                    out[r * wi + i] = (0..wo).map(|o| rows[r * wo + o] * a_w[o * wi + i]).sum();
                }
            }
        }
    });
    y
}

/// Values per rayon task of the element-wise layers.
const GRAIN: usize = 1 << 14;

/// `f` of every value, on the rayon pool.
pub(super) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = scratch(x.len());
    y.par_chunks_mut(GRAIN)
        .zip(x.par_chunks(GRAIN))
        .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &v)| *o = f(v)));
    y
}

/// `f` of every pair of values, on the rayon pool.
pub(super) fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = scratch(a.len());
    y.par_chunks_mut(GRAIN)
        .zip(a.par_chunks(GRAIN).zip(b.par_chunks(GRAIN)))
        .for_each(|(o, (a, b))| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| *o = f(a, b)));
    y
}

/// `a = f(a, b)` of every pair of values, in place, on the rayon pool.
pub(super) fn zip_map_into(a: &mut [f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    a.par_chunks_mut(GRAIN)
        .zip(b.par_chunks(GRAIN))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b)));
}

/// `acc += g`, on the rayon pool.
pub(super) fn add_into(acc: &mut [f32], g: &[f32]) {
    acc.par_chunks_mut(GRAIN)
        .zip(g.par_chunks(GRAIN))
        .for_each(|(a, g)| a.iter_mut().zip(g).for_each(|(a, b)| *a += b));
}

/// Output positions `o` in `0..len` whose tap `kk` reads inside `0..size` (`o·stride + kk − pad`): a range.
fn valid(len: usize, kk: usize, size: usize, stride: usize, pad: usize) -> std::ops::Range<usize> {
    let lo = pad.saturating_sub(kk).div_ceil(stride);
    let hi = if size + pad > kk { (size + pad - kk - 1) / stride + 1 } else { 0 };
    lo.min(len)..hi.min(len).max(lo.min(len))
}

/// Images per task of the direct convolution's weight gradient: a fixed split, so the sum's order (and the
/// result) does not depend on the thread count.
const DIRECT_IMAGES: usize = 8;

impl ConvGeometry {
    /// Few channels in and out: the direct sum beats unfolding (the unfolded input would be `k²` times the input,
    /// for a matrix product a row or two tall — CBAM's 7×7 spatial gate, 2 → 1 channel). With more input channels
    /// (WARN's 4 attention heads over 64–256 channels) the matrix product wins.
    pub fn is_narrow(&self) -> bool {
        self.c_out * self.input.0 <= 8 && !self.is_pointwise()
    }

    /// Calls `f(ky, kx, oys, oxs)` for each tap with the output rows and columns that read inside the input.
    fn taps(&self, mut f: impl FnMut(usize, usize, std::ops::Range<usize>, std::ops::Range<usize>)) {
        let (_, h, w) = self.input;
        let (ho, wo) = self.out_hw();
        for ky in 0..self.k {
            let oys = valid(ho, ky, h, self.stride, self.pad);
            for kx in 0..self.k {
                let oxs = valid(wo, kx, w, self.stride, self.pad);
                if !oys.is_empty() && !oxs.is_empty() {
                    f(ky, kx, oys.clone(), oxs);
                }
            }
        }
    }

    /// The direct convolution `y = W ∗ x + b` (`c_out × n × ho·wo`).
    pub fn direct_forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (c_in, h, w) = self.input;
        let (ho, wo) = self.out_hw();
        let (n, k, s, pad) = (self.n, self.k, self.stride, self.pad);
        let mut y = scratch(self.c_out * n * ho * wo);
        y.par_chunks_mut(ho * wo).enumerate().for_each(|(r, out)| {
            let (co, ni) = (r / n, r % n);
            out.fill(bias.map_or(0.0, |b| b[co]));
            for ci in 0..c_in {
                let plane = &x[(ci * n + ni) * h * w..][..h * w];
                self.taps(|ky, kx, oys, oxs| {
                    let wv = weight[((co * c_in + ci) * k + ky) * k + kx];
                    for oy in oys {
                        let src = &plane[(oy * s + ky - pad) * w..][..w];
                        let dst = &mut out[oy * wo..][..wo];
                        if s == 1 {
                            let src = &src[oxs.start + kx - pad..oxs.end + kx - pad];
                            dst[oxs.clone()].iter_mut().zip(src).for_each(|(d, &v)| *d += wv * v);
                        } else {
                            for ox in oxs.clone() {
                                dst[ox] += wv * src[ox * s + kx - pad];
                            }
                        }
                    }
                });
            }
        });
        y
    }

    /// The direct convolution's input gradient `Wᵀ ⋆ dy` (`c_in × n × h·w`).
    pub fn direct_input_grad(&self, weight: &[f32], dy: &[f32]) -> Vec<f32> {
        let (c_in, h, w) = self.input;
        let (ho, wo) = self.out_hw();
        let (n, k, s, pad) = (self.n, self.k, self.stride, self.pad);
        let mut dx = zeros(c_in * n * h * w);
        dx.par_chunks_mut(h * w).enumerate().for_each(|(r, plane)| {
            let (ci, ni) = (r / n, r % n);
            for co in 0..self.c_out {
                let g = &dy[(co * n + ni) * ho * wo..][..ho * wo];
                self.taps(|ky, kx, oys, oxs| {
                    let wv = weight[((co * c_in + ci) * k + ky) * k + kx];
                    for oy in oys {
                        let dst = &mut plane[(oy * s + ky - pad) * w..][..w];
                        let src = &g[oy * wo..][..wo];
                        if s == 1 {
                            let dst = &mut dst[oxs.start + kx - pad..oxs.end + kx - pad];
                            dst.iter_mut().zip(&src[oxs.clone()]).for_each(|(d, &v)| *d += wv * v);
                        } else {
                            for ox in oxs.clone() {
                                dst[ox * s + kx - pad] += wv * src[ox];
                            }
                        }
                    }
                });
            }
        });
        dx
    }

    /// The direct convolution's weight gradient `Σ dy ⋆ x` (`c_out × c_in·k·k`).
    pub fn direct_weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (c_in, h, w) = self.input;
        let (ho, wo) = self.out_hw();
        let (n, k, s, pad) = (self.n, self.k, self.stride, self.pad);
        let rows = self.rows();
        let starts: Vec<usize> = (0..n).step_by(DIRECT_IMAGES).collect();
        let partial: Vec<Vec<f32>> = starts
            .par_iter()
            .map(|&start| {
                let mut dw = zeros(self.c_out * rows);
                // A tap's products summed per output column over its rows first (vector adds), then across.
                let mut column = zeros(wo);
                for ni in start..(start + DIRECT_IMAGES).min(n) {
                    for co in 0..self.c_out {
                        let g = &dy[(co * n + ni) * ho * wo..][..ho * wo];
                        for ci in 0..c_in {
                            let plane = &x[(ci * n + ni) * h * w..][..h * w];
                            self.taps(|ky, kx, oys, oxs| {
                                let acc = &mut column[oxs.clone()];
                                acc.fill(0.0);
                                for oy in oys {
                                    let src = &plane[(oy * s + ky - pad) * w..][..w];
                                    let gr = &g[oy * wo..][..wo];
                                    if s == 1 {
                                        let src = &src[oxs.start + kx - pad..oxs.end + kx - pad];
                                        acc.iter_mut()
                                            .zip(gr[oxs.clone()].iter().zip(src))
                                            .for_each(|(a, (x, y))| *a += x * y);
                                    } else {
                                        for (a, ox) in acc.iter_mut().zip(oxs.clone()) {
                                            *a += gr[ox] * src[ox * s + kx - pad];
                                        }
                                    }
                                }
                                dw[co * rows + (ci * k + ky) * k + kx] += lane_sum(acc);
                            });
                        }
                    }
                }
                dw
            })
            .collect();
        let mut dw = zeros(self.c_out * rows);
        for p in &partial {
            add_into(&mut dw, p);
        }
        dw
    }
}

/// How the second operand of a product meets the first (`c × n × hw`, channel-major).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Broadcast {
    /// The same shape.
    Same,
    /// One value per channel and image (`c × 1 × 1`).
    Channel,
    /// One plane per image (`1 × h × w`).
    Spatial,
}

impl Broadcast {
    pub fn of(a: Shape, b: Shape) -> Broadcast {
        if a == b {
            Broadcast::Same
        } else if b.0 == a.0 {
            // (c, 1, 1); a (1, 1, 1) operand of a (c, 1, 1) value with c > 1 is one value per image: spatial.
            Broadcast::Channel
        } else {
            Broadcast::Spatial
        }
    }

    /// `a ⊙ b` (also the product's gradient to `a`, with `a` the output's gradient).
    pub fn mul(self, a: &[f32], b: &[f32], n: usize, hw: usize) -> Vec<f32> {
        let mut y = scratch(a.len());
        y.par_chunks_mut(hw).zip(a.par_chunks(hw)).enumerate().for_each(|(r, (o, a))| match self {
            Broadcast::Same => o.iter_mut().zip(a.iter().zip(&b[r * hw..][..hw])).for_each(|(o, (x, y))| *o = x * y),
            Broadcast::Channel => o.iter_mut().zip(a).for_each(|(o, x)| *o = x * b[r]),
            Broadcast::Spatial => {
                o.iter_mut().zip(a.iter().zip(&b[(r % n) * hw..][..hw])).for_each(|(o, (x, y))| *o = x * y)
            }
        });
        y
    }

    /// `acc += a ⊙ b`: [`Broadcast::mul`] added into a gradient in place.
    pub fn mul_into(self, a: &[f32], b: &[f32], n: usize, hw: usize, acc: &mut [f32]) {
        acc.par_chunks_mut(hw).zip(a.par_chunks(hw)).enumerate().for_each(|(r, (o, a))| match self {
            Broadcast::Same => o.iter_mut().zip(a.iter().zip(&b[r * hw..][..hw])).for_each(|(o, (x, y))| *o += x * y),
            Broadcast::Channel => o.iter_mut().zip(a).for_each(|(o, x)| *o += x * b[r]),
            Broadcast::Spatial => {
                o.iter_mut().zip(a.iter().zip(&b[(r % n) * hw..][..hw])).for_each(|(o, (x, y))| *o += x * y)
            }
        });
    }

    /// Both of the product's gradients in one pass over `g`, which becomes the gradient to `a` (`g ⊙ b`, in place);
    /// returns the gradient to `b` ([`Broadcast::reduce`]'s, the same sums in the same order).
    pub fn backward_in_place(self, g: &mut [f32], a: &[f32], b: &[f32], n: usize, hw: usize) -> Vec<f32> {
        match self {
            Broadcast::Same => {
                let mut db = scratch(g.len());
                db.par_chunks_mut(GRAIN).zip(g.par_chunks_mut(GRAIN)).enumerate().for_each(|(k, (d, g))| {
                    let at = k * GRAIN;
                    let (a, b) = (&a[at..][..g.len()], &b[at..][..g.len()]);
                    for (((d, g), &a), &b) in d.iter_mut().zip(g.iter_mut()).zip(a).zip(b) {
                        *d = *g * a;
                        *g *= b;
                    }
                });
                db
            }
            Broadcast::Channel => g
                .par_chunks_mut(hw)
                .zip(a.par_chunks(hw))
                .enumerate()
                .map(|(r, (g, a))| {
                    let d = lane_dot(g, a);
                    g.iter_mut().for_each(|v| *v *= b[r]);
                    d
                })
                .collect(),
            Broadcast::Spatial => {
                // Each image's rows (one a channel, `c·n` rows in channel-major order) on one task.
                let mut rows: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::new()).collect();
                for (r, row) in g.chunks_mut(hw).enumerate() {
                    rows[r % n].push(row);
                }
                let mut db = zeros(n * hw);
                db.par_chunks_mut(hw).zip(rows.into_par_iter()).enumerate().for_each(|(ni, (d, image))| {
                    let bp = &b[ni * hw..][..hw];
                    for (ch, g) in image.into_iter().enumerate() {
                        let ap = &a[(ch * n + ni) * hw..][..hw];
                        for (((d, g), &a), &b) in d.iter_mut().zip(g.iter_mut()).zip(ap).zip(bp) {
                            *d += *g * a;
                            *g *= b;
                        }
                    }
                });
                db
            }
        }
    }

    /// The product's gradient to `b`: `g ⊙ a` summed over what `b` was broadcast along (in channel order).
    pub fn reduce(self, g: &[f32], a: &[f32], n: usize, hw: usize) -> Vec<f32> {
        match self {
            Broadcast::Same => Broadcast::Same.mul(g, a, n, hw),
            Broadcast::Channel => g.par_chunks(hw).zip(a.par_chunks(hw)).map(|(g, a)| lane_dot(g, a)).collect(),
            Broadcast::Spatial => {
                let c = g.len() / (n * hw);
                let mut db = zeros(n * hw);
                db.par_chunks_mut(hw).enumerate().for_each(|(ni, d)| {
                    for ch in 0..c {
                        let at = (ch * n + ni) * hw;
                        d.iter_mut().zip(g[at..][..hw].iter().zip(&a[at..][..hw])).for_each(|(d, (x, y))| *d += x * y);
                    }
                });
                db
            }
        }
    }
}

/// Positions per block of [`channel_max`]: its running maxima and their channels stay in L1.
const MAX_BLOCK: usize = 512;

/// The maximum over channels at each position of `x` (`c × m`), and the channel of its first maximum.
pub(super) fn channel_max(x: &[f32], c: usize) -> (Vec<f32>, Vec<u32>) {
    let m = x.len() / c;
    let mut y = scratch(m);
    let mut arg = vec![0u32; m];
    y.par_chunks_mut(MAX_BLOCK).zip(arg.par_chunks_mut(MAX_BLOCK)).enumerate().for_each(|(t, (y, arg))| {
        // The running maxima move between two buffers, each channel read from one and written whole to the
        // other: a store that may keep the old value would become a conditional store (a branch per value).
        let at = t * MAX_BLOCK;
        let l = y.len();
        let mut buffers = ([0f32; MAX_BLOCK], [0f32; MAX_BLOCK], [0u32; MAX_BLOCK], [0u32; MAX_BLOCK]);
        let (mut best, mut next) = (&mut buffers.0, &mut buffers.1);
        let (mut which, mut next_which) = (&mut buffers.2, &mut buffers.3);
        best[..l].copy_from_slice(&x[at..][..l]);
        let exact = !(0..c).all(|ch| finite(&x[ch * m + at..][..l]));
        for ch in 1..c {
            let row = &x[ch * m + at..][..l];
            let old = best[..l].iter().zip(&which[..l]);
            let new = next[..l].iter_mut().zip(&mut next_which[..l]);
            if exact {
                max_step::<true>(row, old, new, ch as u32);
            } else {
                max_step::<false>(row, old, new, ch as u32);
            }
            std::mem::swap(&mut best, &mut next);
            std::mem::swap(&mut which, &mut next_which);
        }
        y.copy_from_slice(&best[..l]);
        arg.copy_from_slice(&which[..l]);
    });
    (y, arg)
}

/// One channel's step of [`channel_max`]: `row` against the running maxima `old`, into `new`.
#[inline(always)]
fn max_step<'a, const EXACT: bool>(
    row: &[f32],
    old: impl Iterator<Item = (&'a f32, &'a u32)>,
    new: impl Iterator<Item = (&'a mut f32, &'a mut u32)>,
    ch: u32,
) {
    for ((&v, (&b, &a)), (nb, na)) in row.iter().zip(old).zip(new) {
        let take = beats::<EXACT>(v, b);
        *nb = if take { v } else { b };
        *na = if take { ch } else { a };
    }
}

/// The mean over channels at each position of `x` (`c × m`), summed in channel order.
pub(super) fn channel_mean(x: &[f32], c: usize) -> Vec<f32> {
    let m = x.len() / c;
    let mut y = zeros(m);
    y.par_chunks_mut(GRAIN).enumerate().for_each(|(t, y)| {
        let at = t * GRAIN;
        for ch in 0..c {
            let len = y.len();
            y.iter_mut().zip(&x[ch * m + at..][..len]).for_each(|(o, v)| *o += v);
        }
        y.iter_mut().for_each(|o| *o /= c as f32);
    });
    y
}

/// Each of `c` channel planes of length `g.len()` filled by `f(channel, position value of g)`.
pub(super) fn per_channel(g: &[f32], c: usize, f: impl Fn(usize, usize, f32) -> f32 + Sync) -> Vec<f32> {
    let m = g.len();
    let mut dx = scratch(c * m);
    dx.par_chunks_mut(m)
        .enumerate()
        .for_each(|(ch, d)| d.iter_mut().zip(g).enumerate().for_each(|(p, (o, &v))| *o = f(ch, p, v)));
    dx
}

/// Adds `g` at each position of `dx` (`c × g.len()`) to the channel `arg` recorded there (the channel maximum's
/// gradient: one value per position, not a pass over every channel).
pub(super) fn pick_into(arg: &[u32], g: &[f32], dx: &mut [f32]) {
    let m = g.len();
    for (p, (&a, &v)) in arg.iter().zip(g).enumerate() {
        dx[a as usize * m + p] += v;
    }
}

/// `dx[ch][p] += s·g[p]` for every channel of `dx` (`c × g.len()`): the channel mean's gradient, `s = 1/c`.
pub(super) fn add_to_channels(g: &[f32], s: f32, dx: &mut [f32]) {
    dx.par_chunks_mut(g.len()).for_each(|d| d.iter_mut().zip(g).for_each(|(o, &v)| *o += s * v));
}

/// [`spread`] added into `dx`.
pub(super) fn spread_into(g: &[f32], dx: &mut [f32]) {
    let m = dx.len() / g.len().max(1);
    dx.par_chunks_mut(m).zip(g.par_iter()).for_each(|(d, &v)| d.iter_mut().for_each(|o| *o += v / m as f32));
}

/// Each value of `g` spread evenly over a plane of `m` (global average pooling's gradient).
pub(super) fn spread(g: &[f32], m: usize) -> Vec<f32> {
    let mut dx = scratch(g.len() * m);
    dx.par_chunks_mut(m).zip(g.par_iter()).for_each(|(d, &v)| d.fill(v / m as f32));
    dx
}
