//! Insertion and deletion (Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of
//! Black-box Models", §4.1, "causal metrics"): delete the map's most relevant pixels `step` at a time (replace them
//! by a baseline) and read the class probability after each step; or start from a blurred copy and insert the
//! original pixels, most relevant first. A faithful map makes deletion fall fast (low area under the curve) and
//! insertion rise fast (high area). As in RISE's code: the blur is an 11×11 Gaussian of σ = 5 (scipy's
//! `gaussian_filter` of a centred impulse, reflecting at the kernel's border) applied with zero padding, and the
//! area is the trapezoid rule over the steps, on [0, 1].

use super::{area_under_curve, Baseline, Batch, Pending, Scorer};
use crate::evaluation::{most_relevant_first, Ranking};
use crate::Result;
use serde::{Deserialize, Serialize};

/// Which of the two curves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Causal {
    /// From the image to the baseline, most relevant pixels first.
    Deletion,
    /// From the blurred image to the image, most relevant pixels first.
    Insertion,
}

/// Settings of both curves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CausalConfig {
    /// Pixel locations changed per step (RISE: 224 on 224×224 images, 1/224 of the image per step).
    pub step: usize,
    /// What deletion leaves (RISE: zeros of the normalised input, the data set's mean).
    pub baseline: Baseline,
    pub ranking: Ranking,
}

impl CausalConfig {
    /// RISE's settings scaled to an image of `plane` pixels: about 1/`steps` of the image per step.
    pub fn with_steps(plane: usize, steps: usize) -> Self {
        CausalConfig { step: plane.div_ceil(steps.max(1)).max(1), baseline: Baseline::Mean, ranking: Ranking::Signed }
    }
}

/// One curve per image (`steps + 1` scores: before the first step and after each) and its area.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    pub curves: Vec<Vec<f32>>,
    pub areas: Vec<f64>,
}

/// The 1-D weights of RISE's blur kernel: scipy's `gaussian_filter1d(impulse, sigma)` of a length-`len` impulse at
/// its centre, truncated at 4σ, the impulse reflected (half-sample symmetric) beyond the ends.
fn kernel_1d(len: usize, sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let weights: Vec<f64> = (-radius..=radius).map(|m| (-0.5 * (m as f64 / sigma).powi(2)).exp()).collect();
    let total: f64 = weights.iter().sum();
    let centre = (len / 2) as isize;
    let period = 2 * len as isize;
    let reflect = |t: isize| {
        let t = t.rem_euclid(period);
        if t >= len as isize {
            period - 1 - t
        } else {
            t
        }
    };
    (0..len as isize)
        .map(|i| {
            (-radius..=radius).zip(&weights).filter(|&(m, _)| reflect(i + m) == centre).map(|(_, w)| w / total).sum()
        })
        .collect()
}

/// `image` (`C×H×W`) blurred channel by channel with RISE's 11×11, σ = 5 kernel, zero padding.
pub fn blur(image: &[f32], height: usize, width: usize) -> Vec<f32> {
    const LEN: usize = 11;
    let k1 = kernel_1d(LEN, 5.0);
    let r = (LEN / 2) as isize;
    let plane = height * width;
    let mut out = vec![0f32; image.len()];
    for (src, dst) in image.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
        for y in 0..height as isize {
            for x in 0..width as isize {
                let mut acc = 0f64;
                for (ky, wy) in k1.iter().enumerate() {
                    let sy = y + ky as isize - r;
                    if sy < 0 || sy >= height as isize {
                        continue;
                    }
                    for (kx, wx) in k1.iter().enumerate() {
                        let sx = x + kx as isize - r;
                        if sx < 0 || sx >= width as isize {
                            continue;
                        }
                        acc += wy * wx * src[sy as usize * width + sx as usize] as f64;
                    }
                }
                dst[y as usize * width + x as usize] = acc as f32;
            }
        }
    }
    out
}

/// The deletion or insertion curve of every image of `batch`.
pub fn causal_curves(scorer: &Scorer, batch: &Batch, which: Causal, config: &CausalConfig) -> Result<Curves> {
    if config.step == 0 {
        crate::invalid!("insertion and deletion need at least one pixel per step");
    }
    let (plane, len) = (batch.plane(), batch.image_len());
    let kind = scorer.model.spec().dataset;
    let steps = plane.div_ceil(config.step);
    let mut pending = Pending::new(scorer);
    for i in 0..batch.len() {
        let image = batch.image(i);
        let (mut current, finish) = match which {
            Causal::Deletion => {
                let fill = config.baseline.values(kind, image);
                let finish: Vec<f32> = (0..len).map(|v| fill[v / plane]).collect();
                (image.to_vec(), finish)
            }
            Causal::Insertion => (blur(image, batch.height, batch.width), image.to_vec()),
        };
        let order = most_relevant_first(&batch.relevance(i, config.ranking));
        for s in 0..=steps {
            pending.push(&current, batch.targets[i])?;
            if s < steps {
                for &p in &order[s * config.step..((s + 1) * config.step).min(plane)] {
                    for c in 0..batch.channels {
                        let v = c * plane + p as usize;
                        current[v] = finish[v];
                    }
                }
            }
        }
    }
    let scores = pending.finish()?;
    let curves: Vec<Vec<f32>> = scores.chunks_exact(steps + 1).map(<[f32]>::to_vec).collect();
    let areas = curves.iter().map(|c| area_under_curve(c)).collect();
    Ok(Curves { curves, areas })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blur_kernel_is_normalised_symmetric_and_flatter_than_a_gaussian() {
        let k = kernel_1d(11, 5.0);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for i in 0..11 {
            assert!((k[i] - k[10 - i]).abs() < 1e-15);
        }
        // Reflection folds the tails back in: the ends weigh more than a plain Gaussian's ratio exp(-0.5).
        assert!(k[0] / k[5] > (-0.5f64).exp());
        // A constant image far from the border stays constant.
        let image = vec![2.0f32; 31 * 31];
        let b = blur(&image, 31, 31);
        assert!((b[15 * 31 + 15] - 2.0).abs() < 1e-5);
        assert!(b[0] < 2.0);
    }
}
