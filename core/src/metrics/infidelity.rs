//! Infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019, "On the (In)fidelity and Sensitivity of
//! Explanations", §2): the expected squared error between the map's prediction of a perturbation's effect, `Iᵀφ`,
//! and the effect itself, `f(x) − f(x − I)`, over random perturbations `I` (here Gaussian, the paper's "noisy
//! baseline"). Lower is more faithful. With `normalize`, the map is first scaled by the least-squares factor β (the
//! paper's §2.3, Captum's `normalize=True`), which makes the number independent of the map's scale. Captum's
//! `infidelity` with the same perturbations gives the same numbers.

use super::{Batch, Pending, Scorer};
use crate::attribution::normal_draw;
use crate::Result;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Infidelity {
    /// Perturbations per image.
    pub samples: usize,
    /// Standard deviation of each perturbation value, in normalised units.
    pub noise: f32,
    pub normalize: bool,
    pub seed: u64,
}

impl Default for Infidelity {
    fn default() -> Self {
        Infidelity { samples: 50, noise: 0.2, normalize: true, seed: 0 }
    }
}

impl Infidelity {
    /// The seeded perturbations: `samples × C×H×W` values per image, image-major.
    pub fn perturbations(&self, images: usize, image_len: usize) -> Result<Vec<f32>> {
        if self.samples == 0 || !self.noise.is_finite() || self.noise < 0.0 {
            crate::invalid!(
                "infidelity needs one or more samples and a finite noise ≥ 0 (got {}, {})",
                self.samples,
                self.noise
            );
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        Ok((0..images * self.samples * image_len).map(|_| normal_draw(&mut rng) as f32 * self.noise).collect())
    }
}

/// Each image's infidelity under `perturbations` (`samples × C×H×W` per image, image-major; the perturbed input is
/// `x − I`).
pub fn infidelity(scorer: &Scorer, batch: &Batch, config: &Infidelity, perturbations: &[f32]) -> Result<Vec<f64>> {
    let (len, plane, samples) = (batch.image_len(), batch.plane(), config.samples);
    if samples == 0 || perturbations.len() != batch.len() * samples * len {
        crate::invalid!(
            "{} perturbation values for {} images × {samples} samples of {len}",
            perturbations.len(),
            batch.len()
        );
    }
    if perturbations.iter().any(|v| !v.is_finite()) {
        crate::invalid!("a perturbation value is not a finite number");
    }
    let original = scorer.scores(batch.x, batch.targets)?;
    let mut pending = Pending::new(scorer);
    let mut predicted = Vec::with_capacity(batch.len() * samples);
    for i in 0..batch.len() {
        let image = batch.image(i);
        for perturbation in perturbations[i * samples * len..(i + 1) * samples * len].chunks_exact(len) {
            let perturbed: Vec<f32> = image.iter().zip(perturbation).map(|(x, p)| x - p).collect();
            let dot: f64 = perturbation
                .iter()
                .enumerate()
                .map(|(v, &p)| p as f64 * batch.map_at(i, v / plane, v % plane) as f64)
                .sum();
            predicted.push(dot);
            pending.push(&perturbed, batch.targets[i])?;
        }
    }
    let scores = pending.finish()?;
    Ok((0..batch.len())
        .map(|i| {
            let a = &predicted[i * samples..(i + 1) * samples];
            let b: Vec<f64> =
                scores[i * samples..(i + 1) * samples].iter().map(|&s| (original[i] - s) as f64).collect();
            let (aa, ab, bb) =
                a.iter().zip(&b).fold((0.0, 0.0, 0.0), |(aa, ab, bb), (x, y)| (aa + x * x, ab + x * y, bb + y * y));
            let total = if config.normalize {
                let beta = if aa == 0.0 { 0.0 } else { ab / aa };
                beta * beta * aa - 2.0 * beta * ab + bb
            } else {
                a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum()
            };
            total / samples as f64
        })
        .collect())
}
