//! Ensembles that wrap any method and average it over noisy copies of the input:
//! - SmoothGrad (Smilkov et al. 2017): E[A(x + ε)];
//! - SmoothGrad-Squared (Hooker et al. 2019): E[A(x + ε)²];
//! - VarGrad / SmoothGrad-VAR (Adebayo et al. 2018; Hooker et al. 2019): Var[A(x + ε)] = E[A²] − E[A]².
//!
//! ε ~ N(0, σ²) with σ = noise_level × (max(x) − min(x)) per image, as Smilkov et al. define it. The seed divided
//! by the range instead, squared the variance and used another VAR formula; whitebox implements the papers.

use super::{chunked, Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::{Tensor, D};
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ensemble {
    #[serde(rename = "sg")]
    SmoothGrad,
    #[serde(rename = "sg-sq")]
    SmoothGradSquared,
    #[serde(rename = "sg-var")]
    VarGrad,
}

impl Ensemble {
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sg" | "smoothgrad" => Ok(Ensemble::SmoothGrad),
            "sg-sq" | "sgsq" => Ok(Ensemble::SmoothGradSquared),
            "sg-var" | "sgvar" | "vargrad" => Ok(Ensemble::VarGrad),
            other => Err(crate::Error::InvalidArgument(format!("unknown ensemble '{other}' (sg, sg-sq or sg-var)"))),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Ensemble::SmoothGrad => "SG",
            Ensemble::SmoothGradSquared => "SG-SQ",
            Ensemble::VarGrad => "SG-VAR",
        }
    }
}

pub struct NoiseTunnel<'a> {
    pub base: &'a dyn Attribution,
    pub kind: Ensemble,
    pub samples: usize,
    pub noise_level: f64,
    /// Images per internal batch.
    pub batch: usize,
    pub seed: u64,
    /// Standard-normal draws `samples×N×C×H×W` to use instead of seeded ones (to compare with other libraries).
    pub noise: Option<Tensor>,
}

/// Standard-normal draws from a seeded generator (Box–Muller).
pub fn standard_normal(shape: &[usize], seed: u64, device: &candle_core::Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

impl Attribution for NoiseTunnel<'_> {
    fn name(&self) -> String {
        format!("{}-{}({})", self.kind.label(), self.samples, self.base.name())
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        if self.samples == 0 {
            crate::invalid!("an ensemble needs at least one sample");
        }
        let (n, c, h, w) = x.dims4()?;
        let s = self.samples;
        let noise = match &self.noise {
            Some(z) if z.dims() == [s, n, c, h, w] => z.clone(),
            Some(z) => crate::invalid!("noise has shape {:?}, expected {:?}", z.dims(), [s, n, c, h, w]),
            None => standard_normal(&[s, n, c, h, w], self.seed, x.device())?,
        };
        let flat = x.flatten_from(1)?;
        let range = (flat.max_keepdim(D::Minus1)? - flat.min_keepdim(D::Minus1)?)?;
        let sigma = (range * self.noise_level)?.reshape((1, n, 1, 1, 1))?;
        let noisy = x.unsqueeze(0)?.broadcast_add(&noise.broadcast_mul(&sigma)?)?.reshape((s * n, c, h, w))?;
        let all_targets: Vec<u32> = (0..s).flat_map(|_| targets.iter().copied()).collect();
        let attrs = chunked(&noisy, &all_targets, self.batch, |xb, tb| self.base.attribute(model, xb, tb, score))?;
        let attrs = attrs.reshape((s, n, c, h, w))?;
        let mean = attrs.mean(0)?;
        Ok(match self.kind {
            Ensemble::SmoothGrad => mean,
            Ensemble::SmoothGradSquared => attrs.sqr()?.mean(0)?,
            Ensemble::VarGrad => (attrs.sqr()?.mean(0)? - mean.sqr()?)?,
        })
    }
}
