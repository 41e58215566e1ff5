//! ROAR / KAR masking: replace a fraction of each image's pixels, chosen by a map's ranking, with a fill value.

use super::ranking::most_relevant_first;
use crate::data::{DatasetKind, ImageSet};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which end of the ranking is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// RemOve And Retrain: the most relevant pixels go.
    Roar,
    /// Keep And Retrain: the least relevant pixels go.
    Kar,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Roar => "roar",
            Mode::Kar => "kar",
        }
    }
}

/// What a removed pixel becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Fill {
    /// The data set's per-channel mean (Hooker et al.), at the nearest 8-bit level: about 0 after normalisation.
    Mean,
    /// Black (raw 0), as the seed does.
    Zero,
}

impl Fill {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Fill::Mean),
            "zero" => Ok(Fill::Zero),
            other => Err(Error::InvalidArgument(format!("unknown fill '{other}' (expected mean or zero)"))),
        }
    }

    /// The raw value of each channel.
    pub fn raw(self, kind: DatasetKind) -> Vec<u8> {
        match self {
            Fill::Mean => kind.mean().iter().map(|m| (m * 255.0).round() as u8).collect(),
            Fill::Zero => vec![0; kind.channels()],
        }
    }
}

/// A copy of `set` where each image loses `round(threshold × H × W)` pixel locations (all channels): the most
/// relevant (ROAR) or the least relevant (KAR) by `relevance` (`N × H×W`, one value per location), set to `fill`
/// (one raw value per channel).
pub fn remove_pixels(set: &ImageSet, relevance: &[f32], mode: Mode, threshold: f64, fill: &[u8]) -> Result<ImageSet> {
    let plane = set.height * set.width;
    if relevance.len() != set.len() * plane {
        crate::invalid!("{} relevance values for {} images of {plane} pixels", relevance.len(), set.len());
    }
    if !(0.0..=1.0).contains(&threshold) {
        crate::invalid!("threshold {threshold} is outside [0, 1]");
    }
    if fill.len() != set.channels {
        crate::invalid!("{} fill values for {} channels", fill.len(), set.channels);
    }
    let count = (threshold * plane as f64).round() as usize;
    let mut out = set.clone();
    for (i, image) in out.pixels.chunks_exact_mut(set.image_len()).enumerate() {
        let order = most_relevant_first(&relevance[i * plane..(i + 1) * plane]);
        let removed = match mode {
            Mode::Roar => &order[..count],
            Mode::Kar => &order[plane - count..],
        };
        for &p in removed {
            for (c, &v) in fill.iter().enumerate() {
                image[c * plane + p as usize] = v;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roar_and_kar_by_hand() {
        // One 2-channel image of 2×2 pixels; relevance ranks pixel 3 > 1 > 0 > 2.
        let set = ImageSet::new(vec![10, 11, 12, 13, 20, 21, 22, 23], vec![0], 2, 2, 2).unwrap();
        let relevance = [0.5, 0.7, 0.1, 0.9];
        let roar = remove_pixels(&set, &relevance, Mode::Roar, 0.5, &[1, 2]).unwrap();
        assert_eq!(roar.pixels, vec![10, 1, 12, 1, 20, 2, 22, 2]);
        let kar = remove_pixels(&set, &relevance, Mode::Kar, 0.25, &[1, 2]).unwrap();
        assert_eq!(kar.pixels, vec![10, 11, 1, 13, 20, 21, 2, 23]);
        assert_eq!(remove_pixels(&set, &relevance, Mode::Kar, 0.0, &[1, 2]).unwrap(), set);
        assert!(remove_pixels(&set, &relevance[..3], Mode::Roar, 0.5, &[1, 2]).is_err());
        assert!(remove_pixels(&set, &relevance, Mode::Roar, 1.5, &[1, 2]).is_err());
    }

    #[test]
    fn mean_fill_is_about_zero_after_normalisation() {
        for kind in [DatasetKind::Mnist, DatasetKind::Cifar10] {
            for ((v, m), s) in Fill::Mean.raw(kind).iter().zip(kind.mean()).zip(kind.std()) {
                assert!(((*v as f32 / 255.0 - m) / s).abs() < 0.5 / 255.0 / s + 1e-6);
            }
        }
    }
}
