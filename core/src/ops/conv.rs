//! 2-D convolution as im2col + one large matrix product (Chellapilla, Puri & Simard 2006), the formulation
//! PyTorch's CPU path uses. The backward of im2col is col2im, so candle's matmul autograd gives both the weight and
//! the input gradient with two more large matrix products; the input gradient is skipped when nobody asked for it.

use super::{dims4, output, slice_f32, tensor_like, with_f32};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The shape of one convolution: `n` images of `c×h×w`, a `kh×kw` kernel, square stride and zero padding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Columns of the unfolded matrix: one per output position of every image.
    pub(crate) fn cols(&self) -> usize {
        self.n * self.out_h() * self.out_w()
    }
    /// Rows of the unfolded matrix: one per (input channel, kernel row, kernel column).
    pub(crate) fn rows(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Range of output columns `ox` whose input column `ox * stride + kx - pad` lies inside the image.
    fn valid_ox(&self, kx: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
        let hi = if self.w + p > kx { ((self.w + p - kx - 1) / s + 1).min(self.out_w()) } else { 0 };
        (lo, hi.max(lo))
    }
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky).checked_sub(self.pad).filter(|&iy| iy < self.h)
    }

    /// A `k×k` kernel, stride 1.
    pub(crate) fn stride_one(n: usize, (c, h, w): (usize, usize, usize), k: usize, pad: usize) -> Self {
        Geometry { n, c, h, w, kh: k, kw: k, stride: 1, pad }
    }

    /// Row `r` of the unfolded matrix of `x` (`row` holds `cols()` zeros; positions in the padding stay zero).
    pub(crate) fn im2col_row(&self, x: &[f32], r: usize, row: &mut [f32]) {
        let (ho, wo, per_image) = (self.out_h(), self.out_w(), self.out_h() * self.out_w());
        let (ci, ky, kx) = (r / (self.kh * self.kw), (r / self.kw) % self.kh, r % self.kw);
        let (lo, hi) = self.valid_ox(kx);
        for ni in 0..self.n {
            let plane = &x[(ni * self.c + ci) * self.h * self.w..][..self.h * self.w];
            for oy in 0..ho {
                let Some(iy) = self.input_row(oy, ky) else { continue };
                let src = &plane[iy * self.w..][..self.w];
                let dst = &mut row[ni * per_image + oy * wo..][..wo];
                if self.stride == 1 {
                    let start = lo + kx - self.pad;
                    dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                } else {
                    for ox in lo..hi {
                        dst[ox] = src[ox * self.stride + kx - self.pad];
                    }
                }
            }
        }
    }

    /// Input plane `plane_idx` (image `plane_idx / c`, channel `plane_idx % c`) of the folded-back matrix `cols`,
    /// added into `plane`: the adjoint of [`Geometry::im2col_row`].
    pub(crate) fn col2im_plane(&self, cols: &[f32], plane_idx: usize, plane: &mut [f32]) {
        let (ho, wo, per_image, ncols) = (self.out_h(), self.out_w(), self.out_h() * self.out_w(), self.cols());
        let (ni, ci) = (plane_idx / self.c, plane_idx % self.c);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let r = (ci * self.kh + ky) * self.kw + kx;
                let row = &cols[r * ncols + ni * per_image..][..per_image];
                let (lo, hi) = self.valid_ox(kx);
                for oy in 0..ho {
                    let Some(iy) = self.input_row(oy, ky) else { continue };
                    let src = &row[oy * wo..][..wo];
                    let dst = &mut plane[iy * self.w..][..self.w];
                    if self.stride == 1 {
                        let start = lo + kx - self.pad;
                        dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]).for_each(|(d, s)| *d += s);
                    } else {
                        for ox in lo..hi {
                            dst[ox * self.stride + kx - self.pad] += src[ox];
                        }
                    }
                }
            }
        }
    }
}

/// The offset `d − pad` of kernel tap `d` of a "same"-padded kernel, and the output coordinates `o` in `0..len`
/// whose input coordinate `o + d − pad` lies inside `0..len`.
fn tap(d: usize, pad: usize, len: usize) -> (isize, std::ops::Range<usize>) {
    let off = d as isize - pad as isize;
    let lo = ((-off).max(0) as usize).min(len);
    let hi = (len as isize - off.max(0)).max(lo as isize) as usize;
    (off, lo..hi)
}

/// Zeroes the positions of each `h×w` image in `row` outside `rows × cols`.
fn zero_outside(row: &mut [f32], h: usize, w: usize, rows: &std::ops::Range<usize>, cols: &std::ops::Range<usize>) {
    for img in row.chunks_mut(h * w) {
        img[..rows.start * w].fill(0.0);
        img[rows.end * w..].fill(0.0);
        // At most `pad` columns on either side: one strided pass per column (a fill per line would be a memset call
        // for one or two values).
        for x in (0..cols.start).chain(cols.end..w) {
            img[rows.start * w..rows.end * w].iter_mut().skip(x).step_by(w).for_each(|v| *v = 0.0);
        }
    }
}

/// The ranges `(to, from)` with `to[j] = from[j + shift]` inside `0..m`.
fn shifted(m: usize, shift: isize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let s = shift.unsigned_abs().min(m);
    if shift >= 0 {
        (0..m - s, s..m)
    } else {
        (s..m, 0..m - s)
    }
}

/// im2col for "same" padding, stride 1, channel-major images (`a`: `c × N × h × w`; one image is simply
/// `c × h × w`): each row of `cols` (`c·k·k × N·h·w`) is its channel's whole `N×h×w` block shifted by the kernel
/// offset — one copy — with the positions that fall outside their image zeroed. (Copying a few pixels at a time,
/// as [`Geometry::im2col_row`] must for `N×C×H×W` batches, costs several times more.) Rows on the rayon pool when
/// `parallel`.
pub(crate) fn im2col_same(
    a: &[f32],
    (n, h, w): (usize, usize, usize),
    k: usize,
    pad: usize,
    cols: &mut [f32],
    parallel: bool,
) {
    let m = n * h * w;
    let row = |(r, row): (usize, &mut [f32])| {
        let (ci, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let ((dy, rows), (dx, xs)) = (tap(ky, pad, h), tap(kx, pad, w));
        let (to, from) = shifted(m, dy * w as isize + dx);
        row[to.clone()].copy_from_slice(&a[ci * m..][..m][from]);
        row[..to.start].fill(0.0);
        row[to.end..].fill(0.0);
        zero_outside(row, h, w, &rows, &xs);
    };
    if parallel {
        cols.par_chunks_mut(m).with_min_len(super::grain(m)).enumerate().for_each(row);
    } else {
        cols.chunks_mut(m).enumerate().for_each(row);
    }
}

/// The adjoint of [`im2col_same`]: `dcols` summed back into `dx` (`c × N × h × w`, overwritten). `dcols`' entries
/// outside their image are zeroed first (the buffer is scratch), so each row adds in as one shifted block.
/// Channels on the rayon pool when `parallel`.
pub(crate) fn col2im_same(
    dcols: &mut [f32],
    (n, h, w): (usize, usize, usize),
    k: usize,
    pad: usize,
    dx: &mut [f32],
    parallel: bool,
) {
    let m = n * h * w;
    let channel = |(channel, rows): (&mut [f32], &mut [f32])| {
        channel.fill(0.0);
        for (t, row) in rows.chunks_mut(m).enumerate() {
            let ((dy, ys), (dxo, xs)) = (tap(t / k, pad, h), tap(t % k, pad, w));
            zero_outside(row, h, w, &ys, &xs);
            let (from, to) = shifted(m, dy * w as isize + dxo);
            channel[to].iter_mut().zip(&row[from]).for_each(|(d, s)| *d += s);
        }
    };
    if parallel {
        dx.par_chunks_mut(m)
            .zip(dcols.par_chunks_mut(k * k * m))
            .with_min_len(super::grain(k * k * m))
            .for_each(channel);
    } else {
        dx.chunks_mut(m).zip(dcols.chunks_mut(k * k * m)).for_each(channel);
    }
}

/// `A×B×P` planes → `B×A×P` (between `N×C×H×W` and the channel-major `C×N×H×W`).
pub(crate) fn transpose_planes(x: &[f32], a: usize, b: usize, p: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    transpose_planes_into(x, a, b, p, &mut out);
    out
}

/// [`transpose_planes`] into `out`.
pub(crate) fn transpose_planes_into(x: &[f32], a: usize, b: usize, p: usize, out: &mut [f32]) {
    if p == 1 {
        // Single values: a copy call per value would cost more than the value.
        for (i, row) in x.chunks_exact(b).take(a).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                out[j * a + i] = v;
            }
        }
        return;
    }
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * p..][..p].copy_from_slice(&x[(i * b + j) * p..][..p]);
        }
    }
}

/// Unfolds `N×C×H×W` into a `(C·kh·kw) × (N·Ho·Wo)` matrix.
struct Im2Col(Geometry);
/// Folds the matrix back, summing overlapping contributions: the adjoint of [`Im2Col`].
struct Col2Im(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "whitebox-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = slice_f32(storage, layout)?;
        let mut cols = vec![0f32; g.rows() * g.cols()];
        cols.par_chunks_mut(g.cols()).enumerate().for_each(|(r, row)| g.im2col_row(x, r, row));
        Ok(output(cols, (g.rows(), g.cols())))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "whitebox-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = slice_f32(storage, layout)?;
        let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
        dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(p, plane)| g.col2im_plane(cols, p, plane));
        Ok(output(dx, (g.n, g.c, g.h, g.w)))
    }
}

/// Turns the product `W·cols` (`O × (N·Ho·Wo)`) into the `N×O×Ho×Wo` output and adds the bias, in one pass. Its
/// backward transposes the gradient back and sums it per channel for the bias.
struct ToChannelsFirst {
    n: usize,
    o: usize,
    plane: usize,
}

impl CustomOp2 for ToChannelsFirst {
    fn name(&self) -> &'static str {
        "whitebox-channels-first-bias"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, bias) = (slice_f32(ys, yl)?, slice_f32(bs, bl)?);
        let (n, plane) = (self.n, self.plane);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(plane).enumerate().for_each(|(p, dst)| {
            let (ni, oi) = (p / self.o, p % self.o);
            let b = bias[oi];
            for (d, &v) in dst.iter_mut().zip(&y[(oi * n + ni) * plane..][..plane]) {
                *d = v + b;
            }
        });
        Ok(output(out, (n, self.o, plane)))
    }

    fn bwd(&self, y: &Tensor, bias: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, o, plane) = (self.n, self.o, self.plane);
        let want_bias = bias.track_op();
        let (dy, dbias) = with_f32(grad, |g| {
            let mut dy = vec![0f32; g.len()];
            dy.par_chunks_mut(n * plane).enumerate().for_each(|(oi, dst)| {
                for ni in 0..n {
                    dst[ni * plane..][..plane].copy_from_slice(&g[(ni * o + oi) * plane..][..plane]);
                }
            });
            if !want_bias {
                return (dy, None);
            }
            let dbias: Vec<f32> = (0..o)
                .into_par_iter()
                .map(|oi| {
                    (0..n)
                        .map(|ni| g[(ni * o + oi) * plane..][..plane].iter().map(|&v| v as f64).sum::<f64>())
                        .sum::<f64>() as f32
                })
                .collect();
            (dy, Some(dbias))
        })?;
        let dbias = dbias.map(|d| tensor_like(d, o, y)).transpose()?;
        Ok((Some(tensor_like(dy, y.shape(), y)?), dbias))
    }
}

/// Convolution of `x` (`N×C×H×W`) with `weight` (`O×C×kh×kw`), optional `bias` (`O`), square stride and zero
/// padding. Uses the im2col kernel for f32 CPU tensors and candle's own convolution elsewhere.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = dims4(x.layout(), "conv2d input")?;
    let (o, wc, kh, kw) = dims4(weight.layout(), "conv2d weight")?;
    if wc != c {
        candle_core::bail!("conv2d: input has {c} channels, weight expects {wc} (weight shape {:?})", weight.dims());
    }
    if stride == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
        candle_core::bail!("conv2d: kernel {kh}x{kw} (stride {stride}, padding {pad}) does not fit a {h}x{w} input");
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return conv2d_reference(x, weight, bias, stride, pad);
    }
    let g = Geometry { n, c, h, w, kh, kw, stride, pad };
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let y = super::matmul_left(&weight.reshape((o, g.rows()))?, &cols)?;
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(o, DType::F32, x.device())?;
            &zeros
        }
    };
    let op = ToChannelsFirst { n, o, plane: g.out_h() * g.out_w() };
    y.apply_op2(&bias.contiguous()?, op)?.reshape((n, o, g.out_h(), g.out_w()))
}

/// The same convolution with candle's own kernels: the reference the fast path is tested against.
pub fn conv2d_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    let y = x.conv2d(weight, pad, stride, 1, 1)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random, rel_error};
    use candle_core::{Device, Var};

    #[test]
    fn hand_derived_3x3() -> Result<()> {
        // x = 1..9 on a 3×3 grid, kernel of ones, padding 1: each output is the sum of its 3×3 neighbourhood.
        let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect::<Vec<_>>(), (1, 1, 3, 3), &Device::Cpu)?;
        let w = Tensor::ones((1, 1, 3, 3), DType::F32, &Device::Cpu)?;
        let y = conv2d(&x, &w, None, 1, 1)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, vec![12., 21., 16., 27., 45., 33., 24., 39., 28.]);
        // d(sum y)/dx counts how many output windows cover each input: 4 in corners, 6 on edges, 9 in the centre.
        let xv = Var::from_tensor(&x)?;
        let grads = conv2d(xv.as_tensor(), &w, None, 1, 1)?.sum_all()?.backward()?;
        let gx = grads.get(xv.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(gx, vec![4., 6., 4., 6., 9., 6., 4., 6., 4.]);
        Ok(())
    }

    /// Forward and both gradients equal candle's reference convolution, for odd and even sizes, strides, paddings
    /// and batch sizes.
    #[test]
    fn matches_candle_reference() -> Result<()> {
        let cases = [
            (1, 1, 28, 28, 4, 3, 1, 1),
            (3, 3, 7, 7, 5, 3, 1, 1),
            (2, 4, 8, 6, 3, 5, 1, 2),
            (2, 3, 9, 9, 4, 3, 2, 1),
            (2, 2, 7, 7, 1, 7, 1, 3),
            (5, 6, 4, 4, 2, 1, 2, 0),
        ];
        for (i, &(n, c, h, w, o, k, s, p)) in cases.iter().enumerate() {
            let x = Var::from_tensor(&random(&[n, c, h, w], i as u64)?)?;
            let wt = Var::from_tensor(&random(&[o, c, k, k], 100 + i as u64)?)?;
            let b = Var::from_tensor(&random(&[o], 200 + i as u64)?)?;
            let probe = random(&[n, o, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1], 300 + i as u64)?;
            let fast = conv2d(&x, &wt, Some(&b), s, p)?;
            let slow = conv2d_reference(&x, &wt, Some(&b), s, p)?;
            assert!(rel_error(&fast, &slow, 1.0)? < 1e-5, "forward case {i}");
            let gf = (fast * &probe)?.sum_all()?.backward()?;
            let gs = (slow * &probe)?.sum_all()?.backward()?;
            for v in [&x, &wt, &b] {
                let (a, r) = (gf.get(v).unwrap(), gs.get(v).unwrap());
                assert!(rel_error(a, r, 1.0)? < 1e-5, "gradient case {i}: {}", rel_error(a, r, 1.0)?);
            }
        }
        Ok(())
    }

    #[test]
    fn shape_errors_are_reported() {
        let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &w, None, 1, 1).unwrap_err().to_string();
        assert!(err.contains("2 channels"), "{err}");
    }
}
