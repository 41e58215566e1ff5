//! Matrix products where one factor is a constant (a frozen model's weights). candle's autograd computes the
//! gradient of both factors of every product; for saliency maps the weights' gradient is wasted work, a third of
//! the backward pass. These products back-propagate to the variable factor only.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// `constant · x`
    Left,
    /// `x · constant`
    Right,
}

struct ConstMatmul {
    constant: Tensor,
    side: Side,
}

impl CustomOp1 for ConstMatmul {
    fn name(&self) -> &'static str {
        "whitebox-const-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (cs, cl) = self.constant.storage_and_layout();
        let Storage::Cpu(c) = &*cs else { candle_core::bail!("const matmul: constant is not on the CPU") };
        let (xr, xc) = layout.shape().dims2()?;
        let (cr, cc) = cl.shape().dims2()?;
        let (out, shape) = match self.side {
            Side::Left => {
                if cc != xr {
                    candle_core::bail!("const matmul: {cr}×{cc} · {xr}×{xc}");
                }
                (c.matmul(storage, (1, cr, xc, cc), cl, layout)?, (cr, xc))
            }
            Side::Right => {
                if xc != cr {
                    candle_core::bail!("const matmul: {xr}×{xc} · {cr}×{cc}");
                }
                (storage.matmul(c, (1, xr, cc, xc), layout, cl)?, (xr, cc))
            }
        };
        Ok((out, shape.into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(match self.side {
            Side::Left => self.constant.t()?.matmul(grad)?,
            Side::Right => grad.matmul(&self.constant.t()?)?,
        }))
    }
}

fn fast_path(constant: &Tensor, x: &Tensor) -> bool {
    !constant.track_op() && constant.device().is_cpu() && x.device().is_cpu() && x.dtype() == DType::F32 && constant.dtype() == DType::F32
}

/// `a · b` for 2-D tensors, skipping the gradient of `a` when it is a constant.
pub fn matmul_left(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast_path(a, b) {
        return b.contiguous()?.apply_op1(ConstMatmul { constant: a.clone(), side: Side::Left });
    }
    a.matmul(b)
}

/// `a · b` for 2-D tensors, skipping the gradient of `b` when it is a constant.
pub fn matmul_right(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast_path(b, a) {
        return a.contiguous()?.apply_op1(ConstMatmul { constant: b.clone(), side: Side::Right });
    }
    a.matmul(b)
}

/// `c (m×n, row-major) (+)= a (m×k) · b (k×n)`, with `a` and `b` given by (row stride, column stride); on the rayon
/// pool when `parallel` (one large product), else on the calling thread (callers that split the work themselves).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(m: usize, n: usize, k: usize, a: &[f32], a_s: (isize, isize), b: &[f32], b_s: (isize, isize), c: &mut [f32], accumulate: bool, parallel: bool) {
    let last = |rows: usize, cols: usize, (rs, cs): (isize, isize)| (rows.max(1) - 1) as isize * rs + (cols.max(1) - 1) as isize * cs + 1;
    assert!(c.len() >= m * n, "sgemm output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        assert!(a.len() as isize >= last(m, k, a_s) && b.len() as isize >= last(k, n, b_s), "sgemm operands too small");
        assert!(a_s.0 >= 0 && a_s.1 >= 0 && b_s.0 >= 0 && b_s.1 >= 0, "sgemm strides must be non-negative");
    }
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the sizes and strides are checked above, so every element read or written lies inside the slices.
    unsafe {
        gemm::gemm(
            m, n, k,
            c.as_mut_ptr(), 1, n as isize, accumulate,
            a.as_ptr(), a_s.1, a_s.0,
            b.as_ptr(), b_s.1, b_s.0,
            1.0, 1.0, false, false, false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{random, rel_diff};
    use candle_core::Var;

    /// Same products and the same gradient for the variable factor as candle's matmul.
    #[test]
    fn matches_candle_matmul() -> Result<()> {
        let w = random(&[5, 7], 1)?;
        let x = Var::from_tensor(&random(&[7, 3], 2)?)?;
        let probe = random(&[5, 3], 3)?;
        let ours = matmul_left(&w, &x)?;
        let theirs = w.matmul(&x)?;
        assert!(rel_diff(&ours, &theirs)? < 1e-6);
        let (g1, g2) = ((ours * &probe)?.sum_all()?.backward()?, (theirs * &probe)?.sum_all()?.backward()?);
        assert!(rel_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap())? < 1e-6);

        let x = Var::from_tensor(&random(&[4, 7], 4)?)?;
        let wt = random(&[5, 7], 5)?.t()?; // a transposed (strided) constant, as a linear layer uses it
        let probe = random(&[4, 5], 6)?;
        let ours = matmul_right(&x, &wt)?;
        let theirs = x.matmul(&wt)?;
        assert!(rel_diff(&ours, &theirs)? < 1e-6);
        let (g1, g2) = ((ours * &probe)?.sum_all()?.backward()?, (theirs * &probe)?.sum_all()?.backward()?);
        assert!(rel_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap())? < 1e-6);
        // A variable factor keeps its gradient (training).
        let wv = Var::from_tensor(&random(&[5, 7], 7)?)?;
        let g = matmul_left(&wv, &random(&[7, 3], 8)?)?.sum_all()?.backward()?;
        assert!(g.get(&wv).is_some());
        Ok(())
    }
}
