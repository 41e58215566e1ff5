//! ReLU with the three backward rules of the saliency literature, as one modified-ReLU mechanism (as Captum does):
//! - standard: `dx = dy·[x > 0]` (Simonyan et al. 2014, vanilla gradients);
//! - guided: `dx = dy·[x > 0]·[dy > 0]` (Springenberg et al. 2015, Guided Backpropagation);
//! - deconv: `dx = max(dy, 0)` (Zeiler & Fergus 2014, DeconvNet).

use super::{output, slice_f32, tensor_like, with_f32};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which backward rule the ReLUs of a forward pass use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReluRule {
    #[default]
    Standard,
    Guided,
    Deconv,
}

const CHUNK: usize = 4096;

struct Relu(ReluRule);

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "whitebox-relu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_f32(storage, layout)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, i)| {
            for (o, &v) in o.iter_mut().zip(i) {
                *o = v.max(0.0);
            }
        });
        Ok(output(y, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let rule = self.0;
        let dx = with_f32(res, |y| {
            with_f32(grad, |g| {
                let mut dx = vec![0f32; y.len()];
                dx.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(o, (y, g))| {
                    for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                        // The output is positive exactly where the input is.
                        *o = match rule {
                            ReluRule::Standard if y > 0.0 => g,
                            ReluRule::Guided if y > 0.0 && g > 0.0 => g,
                            ReluRule::Deconv => g.max(0.0),
                            _ => 0.0,
                        };
                    }
                });
                dx
            })
        })??;
        Ok(Some(tensor_like(dx, res.shape(), res)?))
    }
}

/// `max(x, 0)` whose backward pass follows `rule`. Non-standard rules need the CPU kernel (f32 on the CPU).
pub fn relu(x: &Tensor, rule: ReluRule) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Relu(rule));
    }
    match rule {
        ReluRule::Standard => x.relu(),
        other => candle_core::bail!("the {other:?} ReLU rule needs f32 tensors on the CPU"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// x = [-1, 2, 3, -4], upstream gradient g = [5, -6, 7, -8].
    fn backward(rule: ReluRule) -> Result<Vec<f32>> {
        let x = Var::new(&[-1f32, 2., 3., -4.], &Device::Cpu)?;
        let g = Tensor::new(&[5f32, -6., 7., -8.], &Device::Cpu)?;
        let grads = (relu(&x, rule)? * g)?.sum_all()?.backward()?;
        grads.get(&x).unwrap().to_vec1()
    }

    #[test]
    fn three_rules_by_hand() -> Result<()> {
        assert_eq!(backward(ReluRule::Standard)?, vec![0., -6., 7., 0.]); // g·[x>0]
        assert_eq!(backward(ReluRule::Guided)?, vec![0., 0., 7., 0.]); // g·[x>0]·[g>0]
        assert_eq!(backward(ReluRule::Deconv)?, vec![5., 0., 7., 0.]); // max(g, 0)
        let y = relu(&Tensor::new(&[-1f32, 2.], &Device::Cpu)?, ReluRule::Guided)?.to_vec1::<f32>()?;
        assert_eq!(y, vec![0., 2.]);
        Ok(())
    }
}
