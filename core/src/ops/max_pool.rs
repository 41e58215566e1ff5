//! 2×2 max-pooling with stride 2 (floor mode, as PyTorch's `MaxPool2d(2, 2)`), whose backward routes each gradient
//! to the window's arg-max (the first maximum in row-major order, PyTorch's tie rule). candle 0.11's `max_pool2d`
//! backward scales by 1/4 and misroutes odd sizes (7 → 3), so it is not used.

use super::{dims4, output, slice_f32, tensor_like, with_f32};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

struct MaxPool2x2;

/// Position (0–3, in scan order (0,0), (0,1), (1,0), (1,1)) of the maximum of a 2×2 window `[a, b, c, d]`: the first
/// maximum, a NaN counting as the maximum (PyTorch's rules). Found pairwise without branches; the evaluation-mode
/// engine uses it too.
#[inline]
pub(crate) fn window_argmax([a, b, c, d]: [f32; 4]) -> u8 {
    let wins = |new: f32, old: f32| new > old || new.is_nan();
    let (top, top_i) = if wins(b, a) { (b, 1) } else { (a, 0) };
    let (bottom, bottom_i) = if wins(d, c) { (d, 3) } else { (c, 2) };
    if wins(bottom, top) {
        bottom_i
    } else {
        top_i
    }
}

/// The value [`window_argmax`] picks.
#[inline]
pub(crate) fn window_max([a, b, c, d]: [f32; 4]) -> f32 {
    let pick = |new: f32, old: f32| if new > old || new.is_nan() { new } else { old };
    pick(pick(d, c), pick(b, a))
}

/// One `h×w` plane through `v ↦ max(v·scale + shift, 0)` (BatchNorm as an affine map, then ReLU) and 2×2
/// max-pooling in one pass: the pooled values into `out` (`h/2 × w/2`) and, when `arg` is given, the position of
/// each window's maximum as [`window_argmax`] picks it. Equal, bit for bit, to the three layers one after another.
pub(crate) fn affine_relu_pool(
    plane: &[f32],
    (h, w): (usize, usize),
    (scale, shift): (f32, f32),
    out: &mut [f32],
    arg: Option<&mut [u8]>,
) {
    let (ho, wo) = (h / 2, w / 2);
    if ho == 0 || wo == 0 {
        return;
    }
    let window = |top: &[f32], bottom: &[f32], ox: usize| {
        [top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1]].map(|v| (v * scale + shift).max(0.0))
    };
    let rows = |oy: usize| (&plane[2 * oy * w..][..w], &plane[(2 * oy + 1) * w..][..w]);
    match arg {
        // Values only (inference): branch-free, so the compiler vectorises it.
        None => {
            for (oy, row) in out.chunks_exact_mut(wo).take(ho).enumerate() {
                let (top, bottom) = rows(oy);
                row.iter_mut().enumerate().for_each(|(ox, o)| *o = window_max(window(top, bottom, ox)));
            }
        }
        Some(arg) => {
            for (oy, (row, arg_row)) in out.chunks_exact_mut(wo).zip(arg.chunks_exact_mut(wo)).take(ho).enumerate() {
                let (top, bottom) = rows(oy);
                for (ox, (o, a)) in row.iter_mut().zip(arg_row).enumerate() {
                    let values = window(top, bottom, ox);
                    *a = window_argmax(values);
                    *o = values[*a as usize];
                }
            }
        }
    }
}

/// Index (within the input plane) of the maximum of the 2×2 window at output `(oy, ox)`.
#[inline]
fn argmax(plane: &[f32], w: usize, oy: usize, ox: usize) -> usize {
    let base = 2 * oy * w + 2 * ox;
    let offsets = [0, 1, w, w + 1];
    base + offsets[window_argmax(offsets.map(|o| plane[base + o])) as usize]
}

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "whitebox-max-pool-2x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(layout, "max_pool2x2")?;
        let x = slice_f32(storage, layout)?;
        let (ho, wo) = (h / 2, w / 2);
        let mut y = vec![0f32; n * c * ho * wo];
        y.par_chunks_mut((ho * wo).max(1)).enumerate().for_each(|(p, out)| {
            let plane = &x[p * h * w..][..h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    out[oy * wo + ox] = plane[argmax(plane, w, oy, ox)];
                }
            }
        });
        Ok(output(y, (n, c, ho, wo)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let dx = with_f32(arg, |x| {
            with_f32(grad, |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(h * w).enumerate().for_each(|(p, out)| {
                    let plane = &x[p * h * w..][..h * w];
                    let gp = &g[p * ho * wo..][..ho * wo];
                    for oy in 0..ho {
                        for ox in 0..wo {
                            out[argmax(plane, w, oy, ox)] += gp[oy * wo + ox];
                        }
                    }
                });
                dx
            })
        })??;
        Ok(Some(tensor_like(dx, (n, c, h, w), arg)?))
    }
}

/// 2×2 max-pooling, stride 2, floor mode, with arg-max routing of gradients.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!("max_pool2x2 needs at least 2×2 inputs, got {h}×{w}");
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(MaxPool2x2);
    }
    max_pool2x2_reference(x)
}

/// 2×2 max-pooling, stride 2, ceil mode (PyTorch's `MaxPool2d(2, ceil_mode=True)`): an odd last row or column
/// pools in windows of its own. The input is padded with −∞, which never wins a window.
pub fn max_pool2x2_ceil(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let mut x = x.clone();
    if h % 2 == 1 {
        let pad = Tensor::full(f32::NEG_INFINITY, (n, c, 1, w), x.device())?.to_dtype(x.dtype())?;
        x = Tensor::cat(&[&x, &pad], 2)?;
    }
    if w % 2 == 1 {
        let pad = Tensor::full(f32::NEG_INFINITY, (n, c, h + h % 2, 1), x.device())?.to_dtype(x.dtype())?;
        x = Tensor::cat(&[&x, &pad], 3)?;
    }
    max_pool2x2(&x)
}

/// The same pooling from plain candle ops (crop to even size, then a max over 2×2 blocks). Its backward routes a
/// gradient to every tied maximum, so it agrees with the kernel whenever windows have a unique maximum.
pub fn max_pool2x2_reference(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let cropped = x.narrow(2, 0, 2 * ho)?.narrow(3, 0, 2 * wo)?;
    cropped.reshape((n, c, ho, 2, wo, 2))?.max(D::Minus1)?.max(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random, rel_error};
    use candle_core::{Device, Var};

    #[test]
    fn odd_size_by_hand() -> Result<()> {
        // A 3×3 plane pools to 1×1: the window is the top-left 2×2 block, whose maximum (5) sits at index 4.
        // The last row and column are dropped and get no gradient.
        let x = Var::new(&[[[[1f32, 2., 9.], [3., 5., 9.], [9., 9., 9.]]]], &Device::Cpu)?;
        let y = max_pool2x2(&x)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5.]);
        let grads = (y * 7.0)?.sum_all()?.backward()?;
        let g = grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(g, vec![0., 0., 0., 0., 7., 0., 0., 0., 0.]);
        Ok(())
    }

    #[test]
    fn ceil_mode_by_hand() -> Result<()> {
        // A 3×3 plane pools to 2×2 in ceil mode: windows {1,2,3,5}, {9,9}, {9,9}, {4}. The gradient of each window
        // goes to its first maximum.
        let x = Var::new(&[[[[1f32, 2., 9.], [3., 5., 8.], [7., 6., 4.]]]], &Device::Cpu)?;
        let y = max_pool2x2_ceil(&x)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5., 9., 7., 4.]);
        let g = y.sum_all()?.backward()?.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(g, vec![0., 0., 1., 0., 1., 0., 1., 0., 1.]);
        Ok(())
    }

    #[test]
    fn ties_go_to_the_first_maximum() -> Result<()> {
        let x = Var::new(&[[[[4f32, 4.], [4., 4.]]]], &Device::Cpu)?;
        let grads = max_pool2x2(&x)?.sum_all()?.backward()?;
        assert_eq!(grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?, vec![1., 0., 0., 0.]);
        Ok(())
    }

    #[test]
    fn matches_reference_on_odd_and_even_sizes() -> Result<()> {
        for (i, shape) in [[2, 3, 28, 28], [3, 2, 7, 7], [1, 1, 5, 8], [128, 4, 14, 14]].iter().enumerate() {
            let x = Var::from_tensor(&random(shape, i as u64)?)?;
            let probe = random(&[shape[0], shape[1], shape[2] / 2, shape[3] / 2], 50 + i as u64)?;
            let (fast, slow) = (max_pool2x2(&x)?, max_pool2x2_reference(&x)?);
            assert!(rel_error(&fast, &slow, 1.0)? == 0.0);
            let gf = (fast * &probe)?.sum_all()?.backward()?;
            let gs = (slow * &probe)?.sum_all()?.backward()?;
            assert!(rel_error(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1.0)? < 1e-6, "case {i}");
        }
        Ok(())
    }
}

/// Maximum over one axis of a tensor viewed as `outer × len × inner`, remembering nothing: the backward recomputes
/// the arg-max (first maximum, PyTorch's rule) and routes the whole gradient there. candle's own `max` backward
/// gives the full gradient to every tied maximum, which over-counts on images with flat regions.
struct MaxAxis {
    outer: usize,
    len: usize,
    inner: usize,
}

impl MaxAxis {
    #[inline]
    fn argmax(&self, x: &[f32], o: usize, i: usize) -> usize {
        let base = o * self.len * self.inner + i;
        let mut best = base;
        for k in 1..self.len {
            let idx = base + k * self.inner;
            if x[idx] > x[best] || x[idx].is_nan() {
                best = idx;
            }
        }
        best
    }
}

impl CustomOp1 for MaxAxis {
    fn name(&self) -> &'static str {
        "whitebox-max-axis"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(storage, layout)?;
        let out: Vec<f32> = (0..self.outer * self.inner)
            .into_par_iter()
            .map(|p| x[self.argmax(x, p / self.inner, p % self.inner)])
            .collect();
        Ok(output(out, (self.outer, self.inner)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_f32(arg, |x| {
            with_f32(grad, |g| {
                let mut dx = vec![0f32; x.len()];
                for p in 0..self.outer * self.inner {
                    dx[self.argmax(x, p / self.inner, p % self.inner)] += g[p];
                }
                dx
            })
        })??;
        Ok(Some(tensor_like(dx, arg.shape(), arg)?))
    }
}

/// The maximum over dimension `dim` (removed from the shape), with arg-max gradient routing.
pub fn max_over(x: &Tensor, dim: usize) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dim >= dims.len() {
        candle_core::bail!("max_over: dimension {dim} of a {}-d tensor", dims.len());
    }
    let mut out_dims = dims.clone();
    out_dims.remove(dim);
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return x.max(dim);
    }
    let op = MaxAxis { outer: dims[..dim].iter().product(), len: dims[dim], inner: dims[dim + 1..].iter().product() };
    x.contiguous()?.apply_op1(op)?.reshape(out_dims)
}

#[cfg(test)]
mod max_over_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn ties_route_once_to_the_first_maximum() -> Result<()> {
        // Rows [1, 3, 3] and [5, 2, 5] (max over the last axis): maxima 3 and 5, gradients to indices 1 and 3.
        let x = Var::new(&[[1f32, 3., 3.], [5., 2., 5.]], &Device::Cpu)?;
        let y = max_over(&x, 1)?;
        assert_eq!(y.to_vec1::<f32>()?, vec![3., 5.]);
        let g = (y * Tensor::new(&[2f32, 7.], &Device::Cpu)?)?.sum_all()?.backward()?;
        assert_eq!(g.get(&x).unwrap().to_vec2::<f32>()?, vec![vec![0., 2., 0.], vec![7., 0., 0.]]);
        // Over a middle axis: shape 2×2×2, max over dim 1.
        let x = Var::new(&[[[1f32, 9.], [4., 9.]], [[0., 0.], [0., -1.]]], &Device::Cpu)?;
        let y = max_over(&x, 1)?;
        assert_eq!(y.to_vec2::<f32>()?, vec![vec![4., 9.], vec![0., 0.]]);
        let g = y.sum_all()?.backward()?;
        assert_eq!(g.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?, vec![0., 1., 1., 0., 1., 1., 0., 0.]);
        Ok(())
    }
}
