//! Superpixels by SLIC (Achanta et al. 2012, "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods"):
//! seeds on a grid of step S, then k-means in (value, position) space, each pixel compared with the seeds within
//! 2S of it, for ten rounds. Distances weigh the channels' values by the image's value range and positions by
//! S / compactness (compactness 0.1: a value difference of a tenth of the range counts as much as S pixels). Seeds
//! left with no pixel are dropped and the labels renumbered, so that labels are `0..count`. (Unlike scikit-image's
//! `slic`, segments are not forced to be connected.)

use super::perturbation::Features;
use crate::Result;

const ROUNDS: usize = 10;
const COMPACTNESS: f64 = 0.1;

/// SLIC superpixels of `image` (`C×H×W`) of about `size²` pixels each.
pub fn slic(image: &[f32], (c, h, w): (usize, usize, usize), size: usize) -> Result<Features> {
    if size == 0 || image.len() != c * h * w || h * w == 0 {
        crate::invalid!("superpixels need a non-empty C×H×W image and a size of at least 1");
    }
    let hw = h * w;
    let (lo, hi) =
        image.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, u), &v| (l.min(v as f64), u.max(v as f64)));
    let range = if hi > lo { hi - lo } else { 1.0 };
    let s = size as f64;
    // Seeds at the centres of a grid of step `size`: (y, x, values…).
    let mut seeds: Vec<Vec<f64>> = Vec::new();
    for gy in 0..h.div_ceil(size) {
        for gx in 0..w.div_ceil(size) {
            let y = ((gy * size) as f64 + (size.min(h - gy * size) as f64 - 1.0) / 2.0).round() as usize;
            let x = ((gx * size) as f64 + (size.min(w - gx * size) as f64 - 1.0) / 2.0).round() as usize;
            let mut seed = vec![y as f64, x as f64];
            seed.extend((0..c).map(|ch| image[ch * hw + y * w + x] as f64 / range));
            seeds.push(seed);
        }
    }
    let mut labels = vec![0u32; hw];
    for _ in 0..ROUNDS {
        let mut best = vec![f64::INFINITY; hw];
        for (k, seed) in seeds.iter().enumerate() {
            let (sy, sx) = (seed[0], seed[1]);
            let y0 = (sy - 2.0 * s).floor().max(0.0) as usize;
            let x0 = (sx - 2.0 * s).floor().max(0.0) as usize;
            let y1 = ((sy + 2.0 * s).ceil() as usize).min(h - 1);
            let x1 = ((sx + 2.0 * s).ceil() as usize).min(w - 1);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let p = y * w + x;
                    let space = ((y as f64 - sy).powi(2) + (x as f64 - sx).powi(2)) * (COMPACTNESS / s).powi(2);
                    let value: f64 = (0..c).map(|ch| (image[ch * hw + p] as f64 / range - seed[2 + ch]).powi(2)).sum();
                    let d = space + value;
                    if d < best[p] {
                        best[p] = d;
                        labels[p] = k as u32;
                    }
                }
            }
        }
        let mut sums = vec![vec![0.0f64; 2 + c]; seeds.len()];
        let mut counts = vec![0usize; seeds.len()];
        for p in 0..hw {
            let k = labels[p] as usize;
            counts[k] += 1;
            sums[k][0] += (p / w) as f64;
            sums[k][1] += (p % w) as f64;
            for ch in 0..c {
                sums[k][2 + ch] += image[ch * hw + p] as f64 / range;
            }
        }
        for (k, seed) in seeds.iter_mut().enumerate() {
            if counts[k] > 0 {
                seed.iter_mut().zip(&sums[k]).for_each(|(v, s)| *v = s / counts[k] as f64);
            }
        }
    }
    // Renumber the seeds that kept pixels, in order of first appearance.
    let mut renumber = vec![u32::MAX; seeds.len()];
    let mut next = 0u32;
    for l in labels.iter_mut() {
        if renumber[*l as usize] == u32::MAX {
            renumber[*l as usize] = next;
            next += 1;
        }
        *l = renumber[*l as usize];
    }
    Features::from_labels(labels, hw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two flat regions split by a vertical edge off the grid lines: no superpixel straddles the edge, and every
    /// pixel has a label.
    #[test]
    fn superpixels_follow_edges() {
        let (h, w) = (16, 16);
        let image: Vec<f32> = (0..h * w).map(|p| if p % w < 6 { 0.0 } else { 1.0 }).collect();
        let f = slic(&image, (1, h, w), 4).unwrap();
        assert!(f.count >= 4 && f.count <= 16, "{}", f.count);
        for k in 0..f.count as u32 {
            let sides: std::collections::BTreeSet<bool> =
                (0..h * w).filter(|&p| f.labels[p] == k).map(|p| p % w < 6).collect();
            assert_eq!(sides.len(), 1, "superpixel {k} straddles the edge");
        }
        assert!(slic(&image, (1, h, w), 0).is_err());
    }
}
