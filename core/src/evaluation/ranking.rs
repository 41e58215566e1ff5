//! One relevance value per pixel location, and the order of locations from most to least relevant.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How a map's channels and signs make one relevance per pixel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Ranking {
    /// The attribution summed over channels: evidence for the class first, evidence against it last (the seed's
    /// order: it takes the arg-max of the signed map).
    #[default]
    Signed,
    /// The sum over channels of |attribution|: strong evidence of either sign first.
    Absolute,
}

impl Ranking {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "signed" => Ok(Ranking::Signed),
            "absolute" | "abs" => Ok(Ranking::Absolute),
            other => Err(Error::InvalidArgument(format!("unknown ranking '{other}' (expected signed or absolute)"))),
        }
    }
}

/// The relevance of each of the `map.len() / channels` pixel locations of one image's map (`C×H×W`).
pub fn pixel_relevance(map: &[f32], channels: usize, ranking: Ranking) -> Result<Vec<f32>> {
    if channels == 0 || map.is_empty() || !map.len().is_multiple_of(channels) {
        crate::invalid!("a map of {} values does not have {channels} equal channels", map.len());
    }
    let plane = map.len() / channels;
    let mut out = vec![0f32; plane];
    for channel in map.chunks_exact(plane) {
        for (o, &v) in out.iter_mut().zip(channel) {
            *o += match ranking {
                Ranking::Signed => v,
                Ranking::Absolute => v.abs(),
            };
        }
    }
    Ok(out)
}

/// Pixel indices from the most to the least relevant. Ties keep index order (so the result is deterministic);
/// NaN counts as least relevant.
pub fn most_relevant_first(relevance: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..relevance.len() as u32).collect();
    let key = |i: u32| {
        let v = relevance[i as usize];
        if v.is_nan() {
            f32::NEG_INFINITY
        } else {
            v
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance_by_hand() {
        // Two channels of two pixels.
        let map = [1.0, -3.0, 2.0, 1.0];
        assert_eq!(pixel_relevance(&map, 2, Ranking::Signed).unwrap(), vec![3.0, -2.0]);
        assert_eq!(pixel_relevance(&map, 2, Ranking::Absolute).unwrap(), vec![3.0, 4.0]);
        assert!(pixel_relevance(&map, 3, Ranking::Signed).is_err());
    }

    #[test]
    fn order_by_hand_with_ties_and_nan() {
        assert_eq!(most_relevant_first(&[0.5, f32::NAN, 2.0, 0.5, -1.0]), vec![2, 0, 3, 4, 1]);
        assert_eq!(most_relevant_first(&[f32::NEG_INFINITY, f32::NAN]), vec![0, 1]);
    }
}
