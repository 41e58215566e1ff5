//! Batch normalisation (Ioffe & Szegedy 2015) as one fused CPU kernel per pass.
//!
//! Training mode normalises with the batch statistics and back-propagates through them (the full formula of the
//! paper, not a detached mean); evaluation mode is a per-channel affine map with the running statistics.

use super::{dims4, output, slice_f32, tensor_like, with_f32};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Per-channel mean and biased variance of the last training batch, for the running-statistics update.
#[derive(Clone, Debug, Default)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    /// Number of values each statistic was computed over (N·H·W).
    pub count: usize,
}

struct BatchNormTrain {
    eps: f32,
    /// This application's statistics, kept for its own backward pass.
    own: Mutex<BatchStats>,
    /// Where the caller reads them for the running-statistics update.
    report: Arc<Mutex<BatchStats>>,
}

/// Per-channel sums over an `N×C×H×W` buffer, computed in parallel over channels.
fn per_channel(n: usize, c: usize, hw: usize, f: impl Fn(usize, usize) -> (f64, f64) + Sync) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ci| {
            let mut acc = (0f64, 0f64);
            for ni in 0..n {
                let (a, b) = f(ni * c + ci, hw);
                acc.0 += a;
                acc.1 += b;
            }
            acc
        })
        .collect()
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "whitebox-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(xl, "batch_norm")?;
        let (x, gamma, beta) = (slice_f32(xs, xl)?, slice_f32(gs, gl)?, slice_f32(bs, bl)?);
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch_norm: {c} channels but {} weights and {} biases", gamma.len(), beta.len());
        }
        let hw = h * w;
        let m = (n * hw) as f64;
        let sums = per_channel(n, c, hw, |p, hw| {
            let s = &x[p * hw..][..hw];
            (s.iter().map(|&v| v as f64).sum(), s.iter().map(|&v| (v as f64) * (v as f64)).sum())
        });
        let mean: Vec<f32> = sums.iter().map(|s| (s.0 / m) as f32).collect();
        let var: Vec<f32> = sums.iter().map(|s| ((s.1 / m) - (s.0 / m).powi(2)).max(0.0) as f32).collect();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw).enumerate().for_each(|(p, out)| {
            let ci = p % c;
            let scale = gamma[ci] / (var[ci] + self.eps).sqrt();
            let shift = beta[ci] - mean[ci] * scale;
            for (o, &v) in out.iter_mut().zip(&x[p * hw..][..hw]) {
                *o = v * scale + shift;
            }
        });
        let stats = BatchStats { mean, var, count: n * hw };
        *self.report.lock().expect("batch-norm stats lock") = stats.clone();
        *self.own.lock().expect("batch-norm stats lock") = stats;
        Ok(output(y, (n, c, h, w)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let hw = h * w;
        let m = (n * hw) as f32;
        let stats = self.own.lock().expect("batch-norm stats lock").clone();
        let inv_std: Vec<f32> = stats.var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let gamma_v = gamma.to_vec1::<f32>()?;
        let (dx, dgamma, dbeta) = with_f32(x, |x| {
            with_f32(grad, |dy| {
                // dβ = Σ dy, dγ = Σ dy·x̂, dx = γ/σ · (dy − dβ/M − x̂·dγ/M)
                let sums = per_channel(n, c, hw, |p, hw| {
                    let ci = p % c;
                    let (mu, is) = (stats.mean[ci], inv_std[ci]);
                    let (xs, dys) = (&x[p * hw..][..hw], &dy[p * hw..][..hw]);
                    let db: f64 = dys.iter().map(|&v| v as f64).sum();
                    let dg: f64 = xs.iter().zip(dys).map(|(&xv, &g)| (((xv - mu) * is) * g) as f64).sum();
                    (db, dg)
                });
                let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
                let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(hw).enumerate().for_each(|(p, out)| {
                    let ci = p % c;
                    let (mu, is, k) = (stats.mean[ci], inv_std[ci], gamma_v[ci] * inv_std[ci]);
                    let (mb, mg) = (dbeta[ci] / m, dgamma[ci] / m);
                    for ((o, &xv), &g) in out.iter_mut().zip(&x[p * hw..][..hw]).zip(&dy[p * hw..][..hw]) {
                        *o = k * (g - mb - (xv - mu) * is * mg);
                    }
                });
                (dx, dgamma, dbeta)
            })
        })??;
        Ok((Some(tensor_like(dx, (n, c, h, w), x)?), Some(tensor_like(dgamma, c, x)?), Some(tensor_like(dbeta, c, x)?)))
    }
}

/// Training-mode batch normalisation of `x` (`N×C×H×W`); the batch statistics are written to `stats`.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    stats: &Arc<Mutex<BatchStats>>,
) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let op = BatchNormTrain { eps: eps as f32, own: Mutex::default(), report: stats.clone() };
        return x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op);
    }
    // Reference formulation with plain candle ops (other devices and dtypes).
    let (n, c, h, w) = x.dims4()?;
    let m = (n * h * w) as f64;
    let mean = x.transpose(0, 1)?.reshape((c, n * h * w))?.mean(D::Minus1)?;
    let centred = x.broadcast_sub(&mean.reshape((1, c, 1, 1))?)?;
    let var = centred.sqr()?.transpose(0, 1)?.reshape((c, n * h * w))?.sum(D::Minus1)?.affine(1.0 / m, 0.0)?;
    let y = centred.broadcast_div(&(var.reshape((1, c, 1, 1))? + eps)?.sqrt()?)?;
    *stats.lock().expect("batch-norm stats lock") = BatchStats {
        mean: mean.to_dtype(DType::F32)?.to_vec1()?,
        var: var.to_dtype(DType::F32)?.to_vec1()?,
        count: n * h * w,
    };
    y.broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?.broadcast_add(&beta.reshape((1, c, 1, 1))?)
}

/// `y = x·scale[c] + shift[c]`; gradients flow to `x` only (parameters are constants in evaluation mode).
struct ChannelAffine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "whitebox-channel-affine"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(layout, "batch_norm")?;
        let x = slice_f32(storage, layout)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h * w).enumerate().for_each(|(p, out)| {
            let (s, t) = (self.scale[p % c], self.shift[p % c]);
            for (o, &v) in out.iter_mut().zip(&x[p * h * w..][..h * w]) {
                *o = v * s + t;
            }
        });
        Ok(output(y, (n, c, h, w)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let c = self.scale.len();
        let scale = Tensor::from_slice(&self.scale, (1, c, 1, 1), arg.device())?;
        Ok(Some(grad.broadcast_mul(&scale)?))
    }
}

/// Evaluation-mode batch normalisation with running statistics.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let scale = (gamma.detach() / (running_var.detach() + eps)?.sqrt()?)?;
    let shift = (beta.detach() - (running_mean.detach() * &scale)?)?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let op = ChannelAffine { scale: scale.to_vec1()?, shift: shift.to_vec1()? };
        return x.contiguous()?.apply_op1(op);
    }
    x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random, rel_error};
    use candle_core::{Device, Var};

    #[test]
    fn hand_derived_two_values() -> Result<()> {
        // One channel holding {1, 3}: mean 2, variance 1, so (with eps = 0) the output is {-1, +1}·γ + β.
        let x = Tensor::from_vec(vec![1f32, 3.], (2, 1, 1, 1), &Device::Cpu)?;
        let (g, b) = (Tensor::new(&[2f32], &Device::Cpu)?, Tensor::new(&[0.5f32], &Device::Cpu)?);
        let stats = Arc::new(Mutex::new(BatchStats::default()));
        let y = batch_norm_train(&x, &g, &b, 0.0, &stats)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, vec![-1.5, 2.5]);
        let stats = stats.lock().unwrap().clone();
        assert_eq!((stats.mean, stats.var), (vec![2.], vec![1.]));
        Ok(())
    }

    /// The fused kernel's output and all three gradients equal the plain-candle formulation.
    #[test]
    fn matches_reference_formulation() -> Result<()> {
        for (i, shape) in [[4, 3, 5, 5], [1, 2, 3, 3], [16, 8, 7, 7]].iter().enumerate() {
            let x = Var::from_tensor(&random(shape, i as u64)?.affine(3.0, 1.0)?)?;
            let g = Var::from_tensor(&random(&[shape[1]], 10 + i as u64)?)?;
            let b = Var::from_tensor(&random(&[shape[1]], 20 + i as u64)?)?;
            let probe = random(shape, 30 + i as u64)?;
            let s = Arc::new(Mutex::new(BatchStats::default()));
            let fast = batch_norm_train(&x, &g, &b, 1e-5, &s)?;
            let gf = (&fast * &probe)?.sum_all()?.backward()?;
            // The reference path runs on f64 to exercise the fallback and give a tight target.
            let (x64, g64, b64) = (x.to_dtype(DType::F64)?, g.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
            let (xv, gv, bv) = (Var::from_tensor(&x64)?, Var::from_tensor(&g64)?, Var::from_tensor(&b64)?);
            let slow = batch_norm_train(&xv, &gv, &bv, 1e-5, &s)?;
            let gs = (&slow * probe.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
            assert!(rel_error(&fast, &slow.to_dtype(DType::F32)?, 1.0)? < 1e-5);
            for (a, r) in [(&x, &xv), (&g, &gv), (&b, &bv)] {
                let (ga, gr) = (gf.get(a).unwrap(), gs.get(r).unwrap().to_dtype(DType::F32)?);
                assert!(rel_error(ga, &gr, 1.0)? < 1e-4, "case {i}: {}", rel_error(ga, &gr, 1.0)?);
            }
        }
        Ok(())
    }

    #[test]
    fn eval_mode_is_the_affine_map() -> Result<()> {
        let x = random(&[2, 3, 4, 4], 1)?;
        let (g, b) = (random(&[3], 2)?, random(&[3], 3)?);
        let (rm, rv) = (random(&[3], 4)?, (random(&[3], 5)?.abs()? + 0.5)?);
        let y = batch_norm_eval(&x, &g, &b, &rm, &rv, 1e-5)?;
        let r = |t: &Tensor| t.reshape((1, 3, 1, 1));
        let want = x
            .broadcast_sub(&r(&rm)?)?
            .broadcast_div(&r(&(&rv + 1e-5)?.sqrt()?)?)?
            .broadcast_mul(&r(&g)?)?
            .broadcast_add(&r(&b)?)?;
        assert!(rel_error(&y, &want, 1.0)? < 1e-6);
        Ok(())
    }
}
