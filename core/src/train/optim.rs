//! Optimisers with PyTorch's semantics: SGD with momentum and L2 weight decay (`torch.optim.SGD`, which candle-nn's
//! SGD lacks), and AdamW (Loshchilov & Hutter 2019). Their state can be saved and restored, so training resumes
//! exactly where it stopped.

use crate::graph::Gradients;
use crate::{Error, Result};
use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OptimizerKind {
    Sgd,
    #[cfg_attr(feature = "clap", value(name = "adamw"))]
    AdamW,
}

impl OptimizerKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adamw" => Ok(OptimizerKind::AdamW),
            other => Err(Error::InvalidArgument(format!("unknown optimizer '{other}' (expected sgd or adamw)"))),
        }
    }
}

/// An optimiser over the trainable variables of a [`VarMap`] (buffers such as running statistics get no gradient
/// and are left alone).
pub struct Optimizer {
    kind: OptimizerKind,
    vars: Vec<(String, Var)>,
    momentum: f64,
    weight_decay: f64,
    /// SGD: momentum buffers; AdamW: first moments.
    first: HashMap<String, Tensor>,
    /// AdamW: second moments.
    second: HashMap<String, Tensor>,
    step: u64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

impl Optimizer {
    pub fn new(kind: OptimizerKind, map: &VarMap, momentum: f64, weight_decay: f64) -> Self {
        let mut vars: Vec<(String, Var)> = map
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .filter(|(k, _)| !crate::nn::is_buffer(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Optimizer { kind, vars, momentum, weight_decay, first: HashMap::new(), second: HashMap::new(), step: 0 }
    }

    /// One update with learning rate `lr` from the gradients in `grads`.
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else { continue };
            // Detached, so the stored buffers never chain autograd graphs across steps.
            let p = &var.as_tensor().detach();
            let previous = self.first.get(name).filter(|_| self.momentum > 0.0);
            if self.kind == OptimizerKind::Sgd
                && fused_sgd_applies(p, grad)
                && previous.is_none_or(|b| fused_sgd_applies(b, grad))
            {
                let (buf, first) = match previous {
                    Some(b) => (b.clone(), false),
                    None => (Tensor::zeros_like(p)?, true),
                };
                sgd_in_place(p, grad, &buf, first, self.momentum, self.weight_decay, lr)?;
                if self.momentum > 0.0 && first {
                    self.first.insert(name.clone(), buf);
                }
                continue;
            }
            let update = match self.kind {
                OptimizerKind::Sgd => {
                    let g = if self.weight_decay > 0.0 { (grad + (p * self.weight_decay)?)? } else { grad.clone() };
                    let buf = match self.first.get(name) {
                        Some(b) if self.momentum > 0.0 => ((b * self.momentum)? + g)?,
                        _ => g,
                    };
                    let update = (&buf * lr)?;
                    if self.momentum > 0.0 {
                        self.first.insert(name.clone(), buf);
                    }
                    update
                }
                OptimizerKind::AdamW => {
                    let m = match self.first.get(name) {
                        Some(m) => ((m * BETA1)? + (grad * (1.0 - BETA1))?)?,
                        None => (grad * (1.0 - BETA1))?,
                    };
                    let v = match self.second.get(name) {
                        Some(v) => ((v * BETA2)? + (grad.sqr()? * (1.0 - BETA2))?)?,
                        None => (grad.sqr()? * (1.0 - BETA2))?,
                    };
                    let t = self.step as i32;
                    let m_hat = (&m / (1.0 - BETA1.powi(t)))?;
                    let v_hat = (&v / (1.0 - BETA2.powi(t)))?;
                    let adam = (m_hat / (v_hat.sqrt()? + ADAM_EPS)?)?;
                    self.first.insert(name.clone(), m);
                    self.second.insert(name.clone(), v);
                    ((adam + (p * self.weight_decay)?)? * lr)?
                }
            };
            var.set(&(p - update)?)?;
        }
        Ok(())
    }

    /// The optimiser's state as named tensors (`<param>#1`, `<param>#2`, `#step`).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        // Copies: the SGD momentum buffers are updated in place.
        for (k, t) in &self.first {
            out.insert(format!("{k}#1"), t.copy()?);
        }
        for (k, t) in &self.second {
            out.insert(format!("{k}#2"), t.copy()?);
        }
        let dev = self.vars.first().map(|(_, v)| v.device().clone()).unwrap_or(candle_core::Device::Cpu);
        // The step count as two exact f32 halves (f32 holds integers up to 2^24 exactly).
        let step = [(self.step >> 24) as f32, (self.step & 0xff_ffff) as f32];
        out.insert("#step".into(), Tensor::new(&step, &dev)?);
        Ok(out)
    }

    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.first.clear();
        self.second.clear();
        for (k, t) in state {
            if let Some(name) = k.strip_suffix("#1") {
                self.first.insert(name.to_string(), t.clone());
            } else if let Some(name) = k.strip_suffix("#2") {
                self.second.insert(name.to_string(), t.clone());
            } else if k == "#step" {
                let v = t.to_vec1::<f32>()?;
                self.step = ((v[0] as u64) << 24) | v[1] as u64;
            }
        }
        Ok(())
    }
}

fn fused_sgd_applies(p: &Tensor, grad: &Tensor) -> bool {
    p.device().is_cpu()
        && p.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && p.shape() == grad.shape()
        && p.is_contiguous()
        && grad.is_contiguous()
}

/// One SGD step in place, in one pass over the CPU buffers, with the same `f32` operations in the same order as the
/// tensor formulation (`g = ∇ + λ·p`, `b = μ·b + g` or `b = g` on the `first` step, `p − lr·b`): the same numbers,
/// without the intermediate tensors and copies (for SimpleCNN's 1.2 M-weight layer they were most of a batch-1
/// training step). `p` is the parameter's own storage; `buf` (the momentum buffer, never `p` itself) is
/// overwritten.
fn sgd_in_place(
    p: &Tensor,
    grad: &Tensor,
    buf: &Tensor,
    first: bool,
    momentum: f64,
    weight_decay: f64,
    lr: f64,
) -> Result<()> {
    let rule = SgdRule { mu: momentum as f32, wd: weight_decay as f32, lr: lr as f32, first };
    // The momentum buffer's storage (write lock), then the parameter's (write lock) with the gradient (read lock).
    buf.inplace_op1(&WithMomentum { p, grad, rule })?;
    Ok(())
}

#[derive(Clone, Copy)]
struct SgdRule {
    mu: f32,
    wd: f32,
    lr: f32,
    first: bool,
}

/// Elements per rayon task of the in-place update.
const SGD_CHUNK: usize = 1 << 14;

/// Runs on the momentum buffer's storage: hands it to [`SgdStep`] on the parameter's.
struct WithMomentum<'a> {
    p: &'a Tensor,
    grad: &'a Tensor,
    rule: SgdRule,
}

impl InplaceOp1 for WithMomentum<'_> {
    fn name(&self) -> &'static str {
        "whitebox-sgd-momentum"
    }

    fn cpu_fwd(&self, b: &mut CpuStorage, bl: &Layout) -> candle_core::Result<()> {
        let momentum = std::sync::Mutex::new(crate::ops::slice_f32_mut(b, bl)?);
        self.p.inplace_op2(self.grad, &SgdStep { momentum, rule: self.rule })
    }
}

/// `g = ∇ + λ·p`, `b ← μ·b + g` (or `g`), `p ← p − lr·b`, element by element.
struct SgdStep<'a> {
    momentum: std::sync::Mutex<&'a mut [f32]>,
    rule: SgdRule,
}

impl InplaceOp2 for SgdStep<'_> {
    fn name(&self) -> &'static str {
        "whitebox-sgd-step"
    }

    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let (p, g) = (crate::ops::slice_f32_mut(p, pl)?, crate::ops::slice_f32(g, gl)?);
        let mut b = self.momentum.lock().map_err(|_| candle_core::Error::Msg("in-place SGD: poisoned lock".into()))?;
        if b.len() != p.len() || g.len() != p.len() {
            candle_core::bail!("in-place SGD: {} parameters, {} gradients, {} momenta", p.len(), g.len(), b.len());
        }
        let rule = self.rule;
        p.par_chunks_mut(SGD_CHUNK).zip(b.par_chunks_mut(SGD_CHUNK)).zip(g.par_chunks(SGD_CHUNK)).for_each(
            |((p, b), g)| {
                // The rule as locals (not read through the closure's reference on every element), so the loop vectorises.
                let SgdRule { mu, wd, lr, first } = rule;
                for ((p, b), &g) in p.iter_mut().zip(b.iter_mut()).zip(g) {
                    let g = if wd > 0.0 { g + *p * wd } else { g };
                    *b = if first { g } else { *b * mu + g };
                    *p -= *b * lr;
                }
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two SGD steps on f(p) = p²/2 (∇ = p) with μ = 0.9, λ = 0.1, lr = 0.5, from p = 1:
    /// g₁ = 1 + 0.1 = 1.1, b₁ = 1.1, p₁ = 1 − 0.55 = 0.45;
    /// g₂ = 0.45 + 0.045 = 0.495, b₂ = 0.99 + 0.495 = 1.485, p₂ = 0.45 − 0.7425 = −0.2925.
    #[test]
    fn sgd_momentum_by_hand() -> Result<()> {
        let map = VarMap::new();
        let p = map.get(1, "p", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu)?;
        let mut opt = Optimizer::new(OptimizerKind::Sgd, &map, 0.9, 0.1);
        for want in [0.45f32, -0.2925] {
            let grads = (p.sqr()? * 0.5)?.sum_all()?.backward()?;
            opt.step(&grads.into(), 0.5)?;
            let got = p.to_vec1::<f32>()?[0];
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        Ok(())
    }

    /// Each element of a vector follows the scalar recurrence of `sgd_momentum_by_hand` for its own start value.
    #[test]
    fn sgd_momentum_elementwise() -> Result<()> {
        let mut map = VarMap::new();
        let p = map.get((2, 2), "p", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu)?;
        let start = [1.0f32, -2.0, 3.0, 0.5];
        map.set_one("p", Tensor::from_slice(&start, (2, 2), &Device::Cpu)?)?;
        let mut opt = Optimizer::new(OptimizerKind::Sgd, &map, 0.9, 0.1);
        let (mut want, mut buf) = (start, [0f32; 4]);
        for step in 0..3 {
            let grads = (p.sqr()? * 0.5)?.sum_all()?.backward()?;
            opt.step(&grads.into(), 0.5)?;
            for i in 0..4 {
                let g = want[i] + want[i] * 0.1;
                buf[i] = if step == 0 { g } else { buf[i] * 0.9 + g };
                want[i] -= buf[i] * 0.5;
            }
            let got = p.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..4 {
                assert!((got[i] - want[i]).abs() < 1e-6, "step {step} element {i}: {} vs {}", got[i], want[i]);
            }
        }
        Ok(())
    }

    /// The fused SGD pass gives bit for bit what the tensor formula gives, with and without a momentum buffer.
    #[test]
    fn in_place_sgd_equals_the_tensor_formula() -> Result<()> {
        let dev = Device::Cpu;
        let vals = |seed: u32| -> Vec<f32> {
            (0..40_000u32)
                .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed)) % 2000) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let (p, g, b) = (
            Tensor::from_vec(vals(1), (200, 200), &dev)?,
            Tensor::from_vec(vals(2), (200, 200), &dev)?,
            Tensor::from_vec(vals(3), (200, 200), &dev)?,
        );
        let (mu, wd, lr) = (0.9, 5e-4, 0.01);
        for previous in [None, Some(&b)] {
            let g2 = (&g + (&p * wd)?)?;
            let buf = match previous {
                Some(b) => ((b * mu)? + &g2)?,
                None => g2,
            };
            let want = (&p - (&buf * lr)?)?;
            // In place on copies (the test's tensors stay as they are).
            let (got, got_buf) = (p.copy()?, previous.map_or_else(|| p.zeros_like(), |b| b.copy())?);
            sgd_in_place(&got, &g, &got_buf, previous.is_none(), mu, wd, lr)?;
            assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want.flatten_all()?.to_vec1::<f32>()?);
            assert_eq!(got_buf.flatten_all()?.to_vec1::<f32>()?, buf.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    }

    /// First AdamW step moves each parameter by lr·(sign(∇) + λ·p) (bias-corrected moments cancel).
    #[test]
    fn adamw_first_step_by_hand() -> Result<()> {
        let map = VarMap::new();
        let p = map.get(1, "p", candle_nn::Init::Const(2.0), DType::F32, &Device::Cpu)?;
        let mut opt = Optimizer::new(OptimizerKind::AdamW, &map, 0.0, 0.01);
        let grads = (p.sqr()? * 0.5)?.sum_all()?.backward()?;
        opt.step(&grads.into(), 0.1)?;
        let got = p.to_vec1::<f32>()?[0];
        assert!((got - (2.0 - 0.1 * (1.0 + 0.02))).abs() < 1e-5, "{got}");
        let state = opt.state()?;
        let mut again = Optimizer::new(OptimizerKind::AdamW, &map, 0.0, 0.01);
        again.load_state(&state)?;
        assert_eq!(again.step, 1);
        Ok(())
    }
}
