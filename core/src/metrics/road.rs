//! ROAD — RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A Consistent and Efficient Evaluation
//! Strategy for Attribution Methods", ICML): remove a fraction of each image's pixels, most relevant first (MoRF)
//! or least relevant first (LeRF), fill them by noisy linear imputation ([`super::imputation`]) and read the
//! model's score — no retraining, and the fill leaks (almost) nothing of the mask's shape, unlike ROAR's constant
//! fill. A faithful map makes the MoRF curve fall fast and the LeRF curve stay high.

use super::imputation::impute;
use super::{Batch, Pending, Scorer};
use crate::evaluation::{most_relevant_first, Ranking};
use crate::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// ROAD's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoadConfig {
    /// Fractions of the pixels removed (each in [0, 1]).
    pub fractions: Vec<f64>,
    /// Standard deviation of the imputation noise, in normalised units (the paper's and the references' 0.01).
    pub noise: f32,
    pub ranking: Ranking,
    pub seed: u64,
}

impl Default for RoadConfig {
    fn default() -> Self {
        RoadConfig {
            fractions: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            noise: 0.01,
            ranking: Ranking::Signed,
            seed: 0,
        }
    }
}

/// ROAD's curves, one row per image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoadCurves {
    /// The score of the unmodified image.
    pub original: Vec<f32>,
    /// `morf[i][k]`: image i's score after removing `fractions[k]` of its most relevant pixels.
    pub morf: Vec<Vec<f32>>,
    /// Likewise, least relevant first.
    pub lerf: Vec<Vec<f32>>,
}

impl RoadCurves {
    /// Mean over images and fractions of (LeRF − MoRF) / 2: the single number pytorch-grad-cam's `ROADCombined`
    /// reports, higher for a more faithful map.
    pub fn combined(&self) -> f64 {
        let n = self.morf.iter().map(Vec::len).sum::<usize>() as f64;
        let gap: f64 = self
            .lerf
            .iter()
            .flatten()
            .zip(self.morf.iter().flatten())
            .map(|(l, m)| (*l as f64 - *m as f64) / 2.0)
            .sum();
        gap / n
    }
}

/// The pixels (`H×W`) of an image whose relevance is `relevance` that ROAD removes at `fraction`: the
/// `round(fraction·H·W)` most relevant (`most_first`) or least relevant.
pub fn removed_pixels(relevance: &[f32], fraction: f64, most_first: bool) -> Vec<bool> {
    let plane = relevance.len();
    let count = (fraction * plane as f64).round() as usize;
    let order = most_relevant_first(relevance);
    let chosen = if most_first { &order[..count] } else { &order[plane - count..] };
    let mut removed = vec![false; plane];
    for &p in chosen {
        removed[p as usize] = true;
    }
    removed
}

/// ROAD's MoRF and LeRF curves of every image of `batch`.
pub fn road(scorer: &Scorer, batch: &Batch, config: &RoadConfig) -> Result<RoadCurves> {
    if config.fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || config.fractions.is_empty() {
        crate::invalid!("ROAD fractions must be in [0, 1] (got {:?})", config.fractions);
    }
    let (h, w) = (batch.height, batch.width);
    let fractions = config.fractions.len();
    let original = scorer.scores(batch.x, batch.targets)?;
    let mut curves =
        [vec![Vec::with_capacity(fractions); batch.len()], vec![Vec::with_capacity(fractions); batch.len()]];
    // Images in groups, so that memory stays bounded: each group's imputations in parallel, then scored together.
    let group = scorer.batch.max(1).div_ceil(2 * fractions).max(1);
    for start in (0..batch.len()).step_by(group) {
        let images: Vec<usize> = (start..(start + group).min(batch.len())).collect();
        let jobs: Vec<(usize, usize, bool)> =
            images.iter().flat_map(|&i| (0..fractions).flat_map(move |k| [(i, k, true), (i, k, false)])).collect();
        let imputed: Vec<Vec<f32>> = jobs
            .par_iter()
            .map(|&(i, k, most_first)| {
                let removed = removed_pixels(&batch.relevance(i, config.ranking), config.fractions[k], most_first);
                let seed = config.seed
                    ^ ((i as u64) << 24 | (k as u64) << 1 | most_first as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                impute(batch.image(i), &removed, h, w, config.noise, seed)
            })
            .collect::<Result<_>>()?;
        let mut pending = Pending::new(scorer);
        for (image, &(i, _, _)) in imputed.iter().zip(&jobs) {
            pending.push(image, batch.targets[i])?;
        }
        for (score, &(i, _, most_first)) in pending.finish()?.into_iter().zip(&jobs) {
            curves[if most_first { 0 } else { 1 }][i].push(score);
        }
    }
    let [morf, lerf] = curves;
    Ok(RoadCurves { original, morf, lerf })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_counts_and_ends() {
        let relevance = [0.3, 0.9, 0.1, 0.5];
        assert_eq!(removed_pixels(&relevance, 0.5, true), vec![false, true, false, true]);
        assert_eq!(removed_pixels(&relevance, 0.5, false), vec![true, false, true, false]);
        assert_eq!(removed_pixels(&relevance, 0.0, true), vec![false; 4]);
        assert_eq!(removed_pixels(&relevance, 1.0, false), vec![true; 4]);
    }
}
