//! KernelSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions"): Shapley values of the
//! features (patches, pixels or superpixels) estimated by a weighted linear regression on random coalitions, as
//! Captum's `KernelShap` computes it: the full and the empty coalition first (weight 10⁶, which makes the
//! coefficients sum to S(x) − S(baseline)), then coalitions of k features, k drawn with probability
//! ∝ (M − 1)/(k(M − k)) and the k features uniformly (weight 1); an ordinary least-squares fit with intercept.

use crate::attribution::perturbation::{
    self, random_subset, Design, Features, Perturbation, Surrogate, Weighing, BASELINE, FEATURES, PATCH, PERTURBATIONS,
};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;
use rand::Rng;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "kernelshap",
    aliases: &["kernel-shap"],
    label: "KernelSHAP",
    title: "KernelSHAP",
    paper: "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions",
    family: Family::Perturbation,
    params: &[&PERTURBATIONS, &FEATURES, &PATCH, &BASELINE],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| Ok(Box::new(KernelShap { settings: s.clone(), given: None })),
};

pub struct KernelShap {
    /// The coalitions (`perturbations`), the features, the baseline, the seed and the batch.
    pub settings: Settings,
    /// Features and coalitions (rows of 0/1) given instead of drawn, for comparisons with a reference.
    pub given: Option<(Features, Vec<u8>)>,
}

impl KernelShap {
    /// `count` coalitions of `m` features drawn from `seed` (rows of 0/1): the full one, the empty one, then
    /// coalitions sampled by the Shapley kernel.
    pub fn coalitions(m: usize, count: usize, seed: u64) -> Result<Vec<u8>> {
        if m < 2 {
            crate::invalid!("KernelSHAP needs at least two features, got {m}");
        }
        let mut rng = perturbation::rng(seed);
        // P(k) ∝ (M − 1) / (k (M − k)), k = 1..M−1, drawn by its cumulative sum.
        let weights: Vec<f64> = (1..m).map(|k| (m - 1) as f64 / (k * (m - k)) as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut rows = Vec::with_capacity(count * m);
        for r in 0..count {
            match r {
                0 => rows.extend(std::iter::repeat_n(1u8, m)),
                1 => rows.extend(std::iter::repeat_n(0u8, m)),
                _ => {
                    let mut u = rng.random::<f64>() * total;
                    let mut k = m - 1;
                    for (i, w) in weights.iter().enumerate() {
                        if u < *w {
                            k = i + 1;
                            break;
                        }
                        u -= w;
                    }
                    rows.extend(random_subset(&mut rng, m, k));
                }
            }
        }
        Ok(rows)
    }
}

impl Perturbation for KernelShap {
    fn design(&self, image: &[f32], shape: (usize, usize, usize)) -> Result<Box<dyn Design>> {
        let (features, samples) =
            perturbation::surrogate_samples(&self.given, &self.settings, image, shape, Self::coalitions)?;
        Ok(Box::new(Surrogate {
            image: image.to_vec(),
            shape,
            features,
            samples,
            baseline: self.settings.params.real(&BASELINE) as f32,
            weighing: Weighing::Shapley,
            ridge: 0.0,
        }))
    }
}

impl Attribution for KernelShap {
    fn name(&self) -> String {
        "KernelSHAP".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        perturbation::attribute(self, model, x, targets, score, self.settings.batch)
    }

    fn inputs_per_image(&self) -> usize {
        perturbation::surrogate_count(&self.given, &self.settings)
    }

    fn perturbation(&self) -> Option<&dyn Perturbation> {
        Some(self)
    }
}
