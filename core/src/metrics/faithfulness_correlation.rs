//! Faithfulness correlation (Bhatt, Weller & Moura 2020, "Evaluating and Aggregating Feature-based Model
//! Explanations", §3.1): for `runs` random subsets of `subset` pixel locations, replace the subset by a baseline and
//! correlate (Pearson) the map's sum over the subset with the drop of the score. Quantus's
//! `FaithfulnessCorrelation` with the same subsets gives the same numbers.

use super::{pearson, Baseline, Batch, Pending, Scorer};
use crate::evaluation::Ranking;
use crate::Result;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaithfulnessCorrelation {
    pub runs: usize,
    /// Pixel locations per subset.
    pub subset: usize,
    pub baseline: Baseline,
    pub seed: u64,
}

impl FaithfulnessCorrelation {
    /// Quantus's defaults (100 runs, "black" baseline) with subsets of `subset` locations (Quantus: 224, for
    /// 224×224 images).
    pub fn new(subset: usize) -> Self {
        FaithfulnessCorrelation { runs: 100, subset, baseline: Baseline::Min, seed: 0 }
    }

    /// The seeded subsets: `runs × subset` location indices per image, image-major.
    pub fn subsets(&self, images: usize, plane: usize) -> Result<Vec<u32>> {
        if self.subset == 0 || self.subset > plane || self.runs < 2 {
            crate::invalid!(
                "faithfulness correlation needs 2 or more runs of 1 to {plane} pixels (got {} of {})",
                self.runs,
                self.subset
            );
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        Ok((0..images * self.runs)
            .flat_map(|_| sample(&mut rng, plane, self.subset).into_iter().map(|p| p as u32))
            .collect())
    }
}

/// Each image's correlation. `subsets` (from [`FaithfulnessCorrelation::subsets`], or given) holds `runs × subset`
/// location indices per image.
pub fn faithfulness_correlation(
    scorer: &Scorer,
    batch: &Batch,
    config: &FaithfulnessCorrelation,
    subsets: &[u32],
) -> Result<Vec<f64>> {
    let plane = batch.plane();
    let (runs, size) = (config.runs, config.subset);
    if subsets.len() != batch.len() * runs * size || subsets.iter().any(|&p| p as usize >= plane) {
        crate::invalid!(
            "{} subset indices for {} images × {runs} runs × {size} pixels of {plane}",
            subsets.len(),
            batch.len()
        );
    }
    let kind = scorer.model.spec().dataset;
    let original = scorer.scores(batch.x, batch.targets)?;
    let mut pending = Pending::new(scorer);
    let mut sums = Vec::with_capacity(batch.len() * runs);
    for i in 0..batch.len() {
        let image = batch.image(i);
        let fill = config.baseline.values(kind, image);
        let relevance = batch.relevance(i, Ranking::Signed);
        for run in subsets[i * runs * size..(i + 1) * runs * size].chunks_exact(size) {
            let mut perturbed = image.to_vec();
            for &p in run {
                for (c, &f) in fill.iter().enumerate() {
                    perturbed[c * plane + p as usize] = f;
                }
            }
            sums.push(run.iter().map(|&p| relevance[p as usize] as f64).sum::<f64>());
            pending.push(&perturbed, batch.targets[i])?;
        }
    }
    let scores = pending.finish()?;
    Ok((0..batch.len())
        .map(|i| {
            let drops: Vec<f64> = scores[i * runs..(i + 1) * runs].iter().map(|&s| (original[i] - s) as f64).collect();
            pearson(&sums[i * runs..(i + 1) * runs], &drops)
        })
        .collect())
}
