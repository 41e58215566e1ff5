//! Pixel flipping (Bach, Binder, Montavon, Klauschen, Müller & Samek 2015, "On Pixel-Wise Explanations for
//! Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation", §4): replace the map's most relevant pixels,
//! `step` locations at a time, by a baseline and read the score after every step. Quantus's `PixelFlipping` with
//! its defaults (softmax score, "black" = each image's minimum) is [`PixelFlipping::default`]; the curve here also
//! holds the unmodified image's score first.

use super::{area_under_curve, Baseline, Batch, Pending, Scorer};
use crate::evaluation::{most_relevant_first, Ranking};
use crate::Result;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelFlipping {
    /// Pixel locations replaced per step.
    pub step: usize,
    pub baseline: Baseline,
    pub ranking: Ranking,
}

impl Default for PixelFlipping {
    fn default() -> Self {
        PixelFlipping { step: 1, baseline: Baseline::Min, ranking: Ranking::Signed }
    }
}

/// Each image's curve: its score, then the score after every step (`ceil(H·W / step)` steps), and the curve's area
/// on [0, 1] (lower: a more faithful map).
pub fn pixel_flipping(
    scorer: &Scorer,
    batch: &Batch,
    config: &PixelFlipping,
) -> Result<super::insertion_deletion::Curves> {
    if config.step == 0 {
        crate::invalid!("pixel flipping needs at least one pixel per step");
    }
    let plane = batch.plane();
    let kind = scorer.model.spec().dataset;
    let steps = plane.div_ceil(config.step);
    let mut pending = Pending::new(scorer);
    for i in 0..batch.len() {
        let mut current = batch.image(i).to_vec();
        let fill = config.baseline.values(kind, &current);
        let order = most_relevant_first(&batch.relevance(i, config.ranking));
        pending.push(&current, batch.targets[i])?;
        for s in 0..steps {
            for &p in &order[s * config.step..((s + 1) * config.step).min(plane)] {
                for (c, &f) in fill.iter().enumerate() {
                    current[c * plane + p as usize] = f;
                }
            }
            pending.push(&current, batch.targets[i])?;
        }
    }
    let scores = pending.finish()?;
    let curves: Vec<Vec<f32>> = scores.chunks_exact(steps + 1).map(<[f32]>::to_vec).collect();
    let areas = curves.iter().map(|c| area_under_curve(c)).collect();
    Ok(super::insertion_deletion::Curves { curves, areas })
}
