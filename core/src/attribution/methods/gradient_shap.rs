//! GradientSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions", §4; as Captum's
//! `GradientShap` computes it): the expected value of (x̃ − x′) ⊙ ∂S_c/∂x at x′ + α(x̃ − x′), over α ~ U(0, 1) and
//! noisy copies x̃ = x + ε, ε ~ N(0, σ²) — expected gradients with the zero (normalised-mean) image as the
//! reference x′, IG's baseline. With σ = 0 and many samples it tends to integrated gradients.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{input_gradient, samples_per_chunk, standard_normal, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;
use rand::{Rng, SeedableRng};

/// Random points per image.
pub static SHAP_SAMPLES: ParamSpec = ParamSpec {
    key: "shap-samples",
    aliases: &[],
    label: "Samples",
    help: "Random points per image (GradientSHAP)",
    kind: ParamKind::Count { default: 20, min: 1, max: 1000 },
};

/// σ of the input noise, in normalised units (Captum's `stdevs`).
pub static SHAP_NOISE: ParamSpec = ParamSpec {
    key: "shap-noise",
    aliases: &[],
    label: "Noise σ",
    help: "σ of the Gaussian noise added to the input, in normalised units (GradientSHAP; Captum's stdevs)",
    kind: ParamKind::Real { default: 0.0, min: 0.0, max: 10.0 },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "gradshap",
    aliases: &["gradient-shap", "gradientshap", "shap"],
    label: "GradSHAP",
    title: "GradientSHAP",
    paper: "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions",
    family: Family::Gradient,
    params: &[&SHAP_SAMPLES, &SHAP_NOISE],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| {
        Ok(Box::new(GradientShap {
            samples: s.params.count(&SHAP_SAMPLES),
            stdev: s.params.real(&SHAP_NOISE),
            seed: s.seed,
            batch: s.batch,
            draws: None,
        }))
    },
};

pub struct GradientShap {
    pub samples: usize,
    pub stdev: f64,
    pub seed: u64,
    /// Model inputs per internal batch.
    pub batch: usize,
    /// The draws to use instead of seeded ones (to compare with other libraries): standard-normal noise
    /// `samples×N×C×H×W` and α `samples×N`, sample-major.
    pub draws: Option<(Tensor, Vec<f32>)>,
}

impl GradientShap {
    fn draws(&self, x: &Tensor) -> Result<(Tensor, Vec<f32>)> {
        let (n, c, h, w) = x.dims4()?;
        let s = self.samples;
        if s == 0 {
            crate::invalid!("GradientSHAP needs at least one sample");
        }
        match &self.draws {
            Some((z, a)) if z.dims() == [s, n, c, h, w] && a.len() == s * n => Ok((z.clone(), a.clone())),
            Some((z, a)) => crate::invalid!(
                "GradientSHAP draws have shapes {:?} and {}, expected {:?} and {}",
                z.dims(),
                a.len(),
                [s, n, c, h, w],
                s * n
            ),
            None => {
                let z = standard_normal(&[s, n, c, h, w], self.seed, x.device())?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ 0x5851_f42d_4c95_7f2d);
                Ok((z, (0..s * n).map(|_| rng.random::<f32>()).collect()))
            }
        }
    }
}

impl Attribution for GradientShap {
    fn name(&self) -> String {
        format!("GradSHAP-{}", self.samples)
    }

    fn inputs_per_image(&self) -> usize {
        self.samples.max(1)
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let s = self.samples;
        // x̃ (rows k·N + i), and the points α·x̃ on the way from the zero reference. Without noise (σ = 0, the
        // default) x̃ is x, and no noise is drawn.
        let (noisy, alphas) = if self.stdev == 0.0 && self.draws.is_none() {
            if s == 0 {
                crate::invalid!("GradientSHAP needs at least one sample");
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ 0x5851_f42d_4c95_7f2d);
            let alphas = (0..s * n).map(|_| rng.random::<f32>()).collect();
            (x.unsqueeze(0)?.broadcast_as((s, n, c, h, w))?.reshape((s * n, c, h, w))?, alphas)
        } else {
            let (z, alphas) = self.draws(x)?;
            (x.unsqueeze(0)?.broadcast_add(&(z * self.stdev)?)?.reshape((s * n, c, h, w))?, alphas)
        };
        let alpha = Tensor::from_vec(alphas, (s * n, 1, 1, 1), x.device())?;
        let points = noisy.broadcast_mul(&alpha)?;
        let per_chunk = samples_per_chunk(self.batch, n);
        let mut sum: Option<Tensor> = None;
        for first in (0..s).step_by(per_chunk) {
            let k = per_chunk.min(s - first);
            let chunk_targets: Vec<u32> = (0..k).flat_map(|_| targets.iter().copied()).collect();
            let rows = |t: &Tensor| t.narrow(0, first * n, k * n);
            let g = input_gradient(model, &rows(&points)?, &chunk_targets, score, ReluRule::Standard)?;
            let part = (rows(&noisy)? * g)?.reshape((k, n, c, h, w))?.sum(0)?;
            sum = Some(match sum.take() {
                Some(acc) => (acc + part)?,
                None => part,
            });
        }
        Ok((sum.expect("at least one sample") / s as f64)?)
    }
}
