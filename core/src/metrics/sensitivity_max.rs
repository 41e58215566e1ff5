//! Max-sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019, "On the (In)fidelity and Sensitivity of
//! Explanations", §3): the largest change of the map, relative to its norm, over random perturbations of the input
//! within an L∞ ball of radius r (uniform draws): `max ‖φ(x + δ) − φ(x)‖ / ‖φ(x)‖` (Frobenius norms; a zero map
//! counts as norm 1, as Captum's `sensitivity_max` does). Lower is more robust. Captum's `sensitivity_max` with the
//! same perturbations gives the same numbers.

use super::Batch;
use crate::Result;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensitivityMax {
    pub samples: usize,
    /// The ball's radius, in normalised units (Captum's default 0.02).
    pub radius: f32,
    pub seed: u64,
}

impl Default for SensitivityMax {
    fn default() -> Self {
        SensitivityMax { samples: 10, radius: 0.02, seed: 0 }
    }
}

impl SensitivityMax {
    /// The seeded perturbations δ: `samples × C×H×W` values per image, image-major, uniform in [−r, r].
    pub fn perturbations(&self, images: usize, image_len: usize) -> Result<Vec<f32>> {
        if self.samples == 0 || !self.radius.is_finite() || self.radius < 0.0 {
            crate::invalid!(
                "max-sensitivity needs one or more samples and a finite radius ≥ 0 (got {}, {})",
                self.samples,
                self.radius
            );
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        Ok((0..images * self.samples * image_len).map(|_| rng.random_range(-self.radius..=self.radius)).collect())
    }
}

/// Maps for images (`k × C×H×W` values) and their targets, in the layout of the batch's maps.
pub type ExplainImages<'e> = dyn FnMut(&[f32], &[u32]) -> Result<Vec<f32>> + 'e;

/// Each image's max-sensitivity. `explain` maps images (`k × C×H×W` values) and their targets to maps of the same
/// layout as `batch.maps` (it is called with all perturbed copies of a group of images at once); `perturbations`
/// holds `samples × C×H×W` values per image (added to the input).
pub fn sensitivity_max(
    batch: &Batch,
    explain: &mut ExplainImages,
    samples: usize,
    perturbations: &[f32],
) -> Result<Vec<f64>> {
    let (len, map_len) = (batch.image_len(), batch.map_channels * batch.plane());
    if samples == 0 || perturbations.len() != batch.len() * samples * len {
        crate::invalid!(
            "{} perturbation values for {} images × {samples} samples of {len}",
            perturbations.len(),
            batch.len()
        );
    }
    let mut out = Vec::with_capacity(batch.len());
    for i in 0..batch.len() {
        let image = batch.image(i);
        let mut x = Vec::with_capacity(samples * len);
        for delta in perturbations[i * samples * len..(i + 1) * samples * len].chunks_exact(len) {
            x.extend(image.iter().zip(delta).map(|(a, d)| a + d));
        }
        let maps = explain(&x, &vec![batch.targets[i]; samples])?;
        if maps.len() != samples * map_len {
            crate::invalid!("the explanation gave {} values for {samples} maps of {map_len}", maps.len());
        }
        let reference = batch.map(i);
        let norm = reference.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let norm = if norm == 0.0 { 1.0 } else { norm };
        let worst = maps
            .chunks_exact(map_len)
            .map(|m| m.iter().zip(reference).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>().sqrt() / norm)
            .fold(f64::NEG_INFINITY, f64::max);
        out.push(worst);
    }
    Ok(out)
}
