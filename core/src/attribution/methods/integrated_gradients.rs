//! Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks"):
//! (x − x′) ⊙ ∫₀¹ ∂S_c(x′ + α(x − x′))/∂x dα, approximated with Captum's Riemann rules. The baseline x′ is zero (the
//! normalised image's zero). All steps of all images run as batches of at most `batch` images.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{input_gradient, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

/// The number of points of the path integral.
pub static STEPS: ParamSpec = ParamSpec {
    key: "ig-steps",
    aliases: &["steps"],
    label: "Steps",
    help: "Points of the path integral (IG)",
    kind: ParamKind::Count { default: 50, min: 1, max: 1000 },
};

/// The Riemann rule of the path integral.
pub static RIEMANN: ParamSpec = ParamSpec {
    key: "riemann",
    aliases: &[],
    label: "Rule",
    help: "Riemann rule of the path integral (IG)",
    kind: ParamKind::Choice { values: &["left", "right", "middle", "trapezoid"], default: "trapezoid" },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "ig",
    aliases: &["integrated-gradients"],
    label: "IG",
    title: "Integrated Gradients",
    paper: "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
    family: Family::Gradient,
    params: &[&STEPS, &RIEMANN],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: true,
    build: |s: &Settings, _: &dyn Classifier| {
        Ok(Box::new(IntegratedGradients {
            steps: s.params.count(&STEPS),
            riemann: Riemann::parse(s.params.choice(&RIEMANN))?,
            batch: s.batch,
        }))
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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

#[derive(Clone, Debug)]
pub struct IntegratedGradients {
    pub steps: usize,
    pub riemann: Riemann,
    pub batch: usize,
}

impl IntegratedGradients {
    /// The scaled inputs, step-major (row `s·N + i` is α_s · x_i, zero baseline), and the step weights.
    pub fn scaled_inputs(&self, x: &Tensor) -> Result<(Tensor, Vec<f64>)> {
        if self.steps == 0 {
            crate::invalid!("IG needs at least one step");
        }
        let (weights, alphas) = self.riemann.points(self.steps);
        let n = x.dim(0)?;
        let alpha = Tensor::from_iter(alphas.iter().map(|&a| a as f32), x.device())?;
        let scaled = x.unsqueeze(0)?.broadcast_mul(&alpha.reshape((self.steps, 1, 1, 1, 1))?)?;
        let mut shape = x.dims().to_vec();
        shape[0] = self.steps * n;
        Ok((scaled.reshape(shape)?, weights))
    }
}

/// The weighted sum of IG's step gradients, fed a chunk of whole steps at a time (see [`crate::attribution::noise_tunnel::EnsembleSums`]).
#[derive(Debug)]
pub struct IntegralSums {
    weights: Vec<f64>,
    images: usize,
    next_step: usize,
    sum: Option<Tensor>,
}

impl IntegralSums {
    pub fn new(weights: Vec<f64>, images: usize) -> Self {
        IntegralSums { weights, images, next_step: 0, sum: None }
    }

    /// Adds the gradients of the next `k` steps (`k·N` rows, step-major).
    pub fn add(&mut self, grads: &Tensor) -> Result<()> {
        let (rows, c, h, w) = grads.dims4()?;
        let k = rows / self.images.max(1);
        if rows % self.images != 0 || self.next_step + k > self.weights.len() {
            crate::invalid!("{rows} gradients are not the next whole steps of {} images", self.images);
        }
        let wts = &self.weights[self.next_step..self.next_step + k];
        let w_t = Tensor::from_iter(wts.iter().map(|&w| w as f32), grads.device())?.reshape((k, 1, 1, 1, 1))?;
        let part = grads.reshape((k, self.images, c, h, w))?.broadcast_mul(&w_t)?.sum(0)?;
        self.sum = Some(match self.sum.take() {
            Some(s) => (s + part)?,
            None => part,
        });
        self.next_step += k;
        Ok(())
    }

    /// (x − 0) ⊙ the integral.
    pub fn finish(self, x: &Tensor) -> Result<Tensor> {
        if self.next_step != self.weights.len() {
            crate::invalid!("IG finished after {} of {} steps", self.next_step, self.weights.len());
        }
        Ok((x * self.sum.expect("at least one step"))?)
    }
}

impl Attribution for IntegratedGradients {
    fn name(&self) -> String {
        format!("IG-{}", self.steps)
    }

    fn inputs_per_image(&self) -> usize {
        self.steps.max(1)
    }

    fn integral(&self) -> Option<&IntegratedGradients> {
        Some(self)
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let (scaled, weights) = self.scaled_inputs(x)?;
        let n = x.dim(0)?;
        let mut sums = IntegralSums::new(weights, n);
        let per_chunk = crate::attribution::samples_per_chunk(self.batch, n);
        for first in (0..self.steps).step_by(per_chunk) {
            let k = per_chunk.min(self.steps - first);
            let chunk_targets: Vec<u32> = (0..k).flat_map(|_| targets.iter().copied()).collect();
            sums.add(&input_gradient(
                model,
                &scaled.narrow(0, first * n, k * n)?,
                &chunk_targets,
                score,
                ReluRule::Standard,
            )?)?;
        }
        sums.finish(x)
    }
}
