//! Ensembles that wrap any method and average it over noisy copies of the input:
//! - SmoothGrad (Smilkov et al. 2017): E[A(x + ε)];
//! - SmoothGrad-Squared (Hooker et al. 2019): E[A(x + ε)²];
//! - VarGrad / SmoothGrad-VAR (Adebayo et al. 2018; Hooker et al. 2019): Var[A(x + ε)] = E[A²] − E[A]².
//!
//! ε ~ N(0, σ²) with σ = noise_level × (max(x) − min(x)) per image, as Smilkov et al. define it. The seed divided
//! by the range instead, squared the variance and used another VAR formula; whitebox implements the papers.

use super::{Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::{Tensor, D};
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Ensemble {
    #[serde(rename = "sg")]
    #[cfg_attr(feature = "clap", value(name = "sg"))]
    SmoothGrad,
    #[serde(rename = "sg-sq")]
    #[cfg_attr(feature = "clap", value(name = "sg-sq"))]
    SmoothGradSquared,
    #[serde(rename = "sg-var")]
    #[cfg_attr(feature = "clap", value(name = "sg-var"))]
    VarGrad,
}

impl Ensemble {
    pub const ALL: [Ensemble; 3] = [Ensemble::SmoothGrad, Ensemble::SmoothGradSquared, Ensemble::VarGrad];

    /// The spelling the command line and the page use.
    pub fn id(self) -> &'static str {
        match self {
            Ensemble::SmoothGrad => "sg",
            Ensemble::SmoothGradSquared => "sg-sq",
            Ensemble::VarGrad => "sg-var",
        }
    }

    /// The name people know it by.
    pub fn title(self) -> &'static str {
        match self {
            Ensemble::SmoothGrad => "SmoothGrad",
            Ensemble::SmoothGradSquared => "SmoothGrad²",
            Ensemble::VarGrad => "VarGrad",
        }
    }

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

/// One standard-normal draw (Box–Muller, two uniform draws from `rng`).
pub fn normal_draw(rng: &mut impl Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Standard-normal draws from a seeded generator (Box–Muller).
pub fn standard_normal(shape: &[usize], seed: u64, device: &candle_core::Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| normal_draw(&mut rng) as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

impl NoiseTunnel<'_> {
    /// The noisy copies of `x`, sample-major (row `k·N + i` is sample k of image i).
    pub fn noisy_inputs(&self, x: &Tensor) -> Result<Tensor> {
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
        Ok(x.unsqueeze(0)?.broadcast_add(&noise.broadcast_mul(&sigma)?)?.reshape((s * n, c, h, w))?)
    }
}

/// Running sums of an ensemble's sample attributions, fed a chunk of whole samples at a time, so that a caller can
/// compute an ensemble in steps (the browser does, to stay responsive) and get the same result as in one go.
#[derive(Debug)]
pub struct EnsembleSums {
    kind: Ensemble,
    images: usize,
    count: usize,
    sum: Option<Tensor>,
    sum_sq: Option<Tensor>,
}

impl EnsembleSums {
    pub fn new(kind: Ensemble, images: usize) -> Self {
        EnsembleSums { kind, images, count: 0, sum: None, sum_sq: None }
    }

    /// Adds `k·N` attributions (k samples of the N images, sample-major).
    pub fn add(&mut self, attrs: &Tensor) -> Result<()> {
        let (rows, c, h, w) = attrs.dims4()?;
        if rows % self.images != 0 {
            crate::invalid!("{rows} attributions are not whole samples of {} images", self.images);
        }
        let k = rows / self.images;
        let attrs = attrs.reshape((k, self.images, c, h, w))?;
        let add = |acc: &mut Option<Tensor>, t: Tensor| -> Result<()> {
            *acc = Some(match acc.take() {
                Some(a) => (a + t)?,
                None => t,
            });
            Ok(())
        };
        if self.kind != Ensemble::SmoothGradSquared {
            add(&mut self.sum, attrs.sum(0)?)?;
        }
        if self.kind != Ensemble::SmoothGrad {
            add(&mut self.sum_sq, attrs.sqr()?.sum(0)?)?;
        }
        self.count += k;
        Ok(())
    }

    /// The ensemble's attributions (`N×C×H×W`).
    pub fn finish(self) -> Result<Tensor> {
        if self.count == 0 {
            crate::invalid!("an ensemble needs at least one sample");
        }
        let n = self.count as f64;
        let mean = |t: Option<Tensor>| -> Result<Tensor> { Ok((t.expect("summed for this kind") / n)?) };
        Ok(match self.kind {
            Ensemble::SmoothGrad => mean(self.sum)?,
            Ensemble::SmoothGradSquared => mean(self.sum_sq)?,
            Ensemble::VarGrad => {
                let m = mean(self.sum)?;
                (mean(self.sum_sq)? - m.sqr()?)?
            }
        })
    }
}

/// Samples per chunk such that a chunk holds at most `batch` images (at least one sample).
pub(crate) fn samples_per_chunk(batch: usize, images: usize) -> usize {
    (batch / images.max(1)).max(1)
}

impl Attribution for NoiseTunnel<'_> {
    fn name(&self) -> String {
        format!("{}-{}({})", self.kind.label(), self.samples, self.base.name())
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let noisy = self.noisy_inputs(x)?;
        let n = x.dim(0)?;
        let mut sums = EnsembleSums::new(self.kind, n);
        let per_chunk = samples_per_chunk(self.batch, n);
        for first in (0..self.samples).step_by(per_chunk) {
            let k = per_chunk.min(self.samples - first);
            let chunk_targets: Vec<u32> = (0..k).flat_map(|_| targets.iter().copied()).collect();
            sums.add(&self.base.attribute(model, &noisy.narrow(0, first * n, k * n)?, &chunk_targets, score)?)?;
        }
        sums.finish()
    }
}
