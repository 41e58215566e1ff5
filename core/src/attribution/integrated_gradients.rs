//! Integrated Gradients (Sundararajan, Taly & Yan 2017): (x − x′) ⊙ ∫₀¹ ∂S_c(x′ + α(x − x′))/∂x dα, approximated
//! with Captum's Riemann rules. The baseline x′ is zero (the normalised image's zero). All steps of all images run
//! as batches of at most `batch` images.

use super::{chunked, input_gradient, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Riemann {
    Left,
    Right,
    Middle,
    Trapezoid,
}

impl Riemann {
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "left" => Ok(Riemann::Left),
            "right" => Ok(Riemann::Right),
            "middle" => Ok(Riemann::Middle),
            "trapezoid" => Ok(Riemann::Trapezoid),
            other => Err(crate::Error::InvalidArgument(format!("unknown Riemann rule '{other}'"))),
        }
    }

    /// Step weights and α values. The α values are computed as `torch.linspace` computes them in f32 (from both
    /// ends), so that the scaled inputs equal Captum's bit for bit: near-ties in max-pooling make gradients jump,
    /// and a one-ulp difference in α can otherwise pick the other side of a jump.
    pub fn points(self, steps: usize) -> (Vec<f64>, Vec<f64>) {
        let n = steps as f64;
        let (start, end) = match self {
            Riemann::Left => (0.0, 1.0 - 1.0 / n),
            Riemann::Right => (1.0 / n, 1.0),
            Riemann::Middle => (1.0 / (2.0 * n), 1.0 - 1.0 / (2.0 * n)),
            Riemann::Trapezoid => (0.0, 1.0),
        };
        let alphas = linspace_f32(start as f32, end as f32, steps).into_iter().map(f64::from).collect();
        let weights = match self {
            Riemann::Trapezoid if steps >= 2 => {
                let h = 1.0 / (n - 1.0);
                let mut w = vec![h; steps];
                w[0] = h / 2.0;
                w[steps - 1] = h / 2.0;
                w
            }
            Riemann::Trapezoid => return (vec![1.0], vec![0.5]),
            _ => vec![1.0 / n; steps],
        };
        (weights, alphas)
    }
}

/// PyTorch's CPU `linspace` for f32: the first half counts up from `start`, the second half down from `end`.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps).map(|i| if i < half { start + step * i as f32 } else { end - step * (steps - i - 1) as f32 }).collect()
}

pub struct IntegratedGradients {
    pub steps: usize,
    pub riemann: Riemann,
    pub batch: usize,
}

impl Attribution for IntegratedGradients {
    fn name(&self) -> String {
        format!("IG-{}", self.steps)
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        if self.steps == 0 {
            crate::invalid!("IG needs at least one step");
        }
        let (weights, alphas) = self.riemann.points(self.steps);
        let n = x.dim(0)?;
        // Scaled inputs, step-major: row s·N + i is α_s · x_i (zero baseline).
        let alpha = Tensor::from_iter(alphas.iter().map(|&a| a as f32), x.device())?;
        let shape = x.dims().to_vec();
        let mut expanded_shape = vec![self.steps];
        expanded_shape.extend_from_slice(&shape);
        let scaled = x.unsqueeze(0)?.broadcast_mul(&alpha.reshape((self.steps, 1, 1, 1, 1))?)?;
        let scaled = scaled.reshape([self.steps * n].into_iter().chain(shape[1..].iter().copied()).collect::<Vec<_>>())?;
        let all_targets: Vec<u32> = (0..self.steps).flat_map(|_| targets.iter().copied()).collect();
        let grads = chunked(&scaled, &all_targets, self.batch, |xb, tb| {
            input_gradient(model, xb, tb, score, ReluRule::Standard)
        })?;
        let w = Tensor::from_iter(weights.iter().map(|&w| w as f32), x.device())?;
        let grads = grads.reshape(expanded_shape)?;
        let integral = grads.broadcast_mul(&w.reshape((self.steps, 1, 1, 1, 1))?)?.sum(0)?;
        Ok((x * integral)?)
    }
}
