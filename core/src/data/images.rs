//! An in-memory image set (u8 pixels, N×C×H×W) and its conversion to normalised tensors.

use super::DatasetKind;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rand::{seq::SliceRandom, SeedableRng};

/// Images stored as raw bytes, planar (C×H×W per image), with one label per image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Indices of the training and validation parts of a set.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

/// Shuffles `0..n` with `seed` and puts the first `validation_fraction` into validation, the rest into training,
/// as the seed does (80/20).
pub fn train_validation_split(n: usize, validation_fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..1.0).contains(&validation_fraction) {
        return Err(Error::InvalidArgument(format!("validation fraction {validation_fraction} is outside [0, 1)")));
    }
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let n_val = (validation_fraction * n as f64) as usize;
    let train = indices.split_off(n_val);
    Ok(Split { train, validation: indices })
}

impl ImageSet {
    pub fn new(pixels: Vec<u8>, labels: Vec<u8>, channels: usize, height: usize, width: usize) -> Result<Self> {
        let per = channels * height * width;
        if per == 0 || pixels.len() != labels.len() * per {
            return Err(Error::InvalidArgument(format!(
                "{} pixels do not make {} images of {channels}x{height}x{width}",
                pixels.len(),
                labels.len()
            )));
        }
        Ok(ImageSet { pixels, labels, channels, height, width })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (C×H×W). Panics when `i` is out of range, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.image_len();
        &self.pixels[i * per..(i + 1) * per]
    }

    /// Joins sets of the same image shape.
    pub fn concat(sets: &[ImageSet]) -> Result<ImageSet> {
        let first = sets.first().ok_or_else(|| Error::InvalidArgument("nothing to concatenate".into()))?;
        let mut out = ImageSet { pixels: vec![], labels: vec![], ..first.clone() };
        for s in sets {
            if (s.channels, s.height, s.width) != (first.channels, first.height, first.width) {
                return Err(Error::InvalidArgument("image sets of different shapes".into()));
            }
            out.pixels.extend_from_slice(&s.pixels);
            out.labels.extend_from_slice(&s.labels);
        }
        Ok(out)
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<ImageSet> {
        let per = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::InvalidArgument(format!(
                    "image index {i} is out of range (set has {})",
                    self.len()
                )));
            }
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        ImageSet::new(pixels, labels, self.channels, self.height, self.width)
    }

    /// The first `n` images (all of them when `n` is larger).
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.clone()
        }
    }

    /// Normalised f32 values of the images at `indices`: `(p / 255 - mean[c]) / std[c]`.
    pub fn normalized(&self, indices: &[usize], kind: DatasetKind) -> Result<Vec<f32>> {
        self.check_kind(kind)?;
        let (mean, std) = (kind.mean(), kind.std());
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::InvalidArgument(format!(
                    "image index {i} is out of range (set has {})",
                    self.len()
                )));
            }
            for (c, chunk) in self.image(i).chunks_exact(plane).enumerate() {
                let (m, s) = (mean[c], std[c]);
                out.extend(chunk.iter().map(|&p| (p as f32 / 255.0 - m) / s));
            }
        }
        Ok(out)
    }

    /// The images at `indices` as a normalised `N×C×H×W` tensor, and their labels as a `u32` tensor.
    pub fn batch(&self, indices: &[usize], kind: DatasetKind, device: &Device) -> Result<(Tensor, Tensor)> {
        let x = Tensor::from_vec(
            self.normalized(indices, kind)?,
            (indices.len(), self.channels, self.height, self.width),
            device,
        )?;
        let y: Vec<u32> = indices.iter().map(|&i| self.labels[i] as u32).collect();
        Ok((x, Tensor::from_vec(y, indices.len(), device)?))
    }

    fn check_kind(&self, kind: DatasetKind) -> Result<()> {
        if self.channels != kind.channels() || self.height != kind.side() || self.width != kind.side() {
            return Err(Error::InvalidArgument(format!(
                "images are {}x{}x{}, but {kind} expects {}x{}x{}",
                self.channels,
                self.height,
                self.width,
                kind.channels(),
                kind.side(),
                kind.side()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let a = train_validation_split(1000, 0.2, 7).unwrap();
        assert_eq!(a, train_validation_split(1000, 0.2, 7).unwrap());
        assert_ne!(a, train_validation_split(1000, 0.2, 8).unwrap());
        assert_eq!((a.train.len(), a.validation.len()), (800, 200));
        let mut all: Vec<usize> = a.train.iter().chain(&a.validation).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn normalisation_matches_hand_values() {
        let set = ImageSet::new(vec![0, 255, 51, 102], vec![1, 2, 3, 4], 1, 1, 1).unwrap();
        let set28 = ImageSet::new(vec![255; 28 * 28], vec![0], 1, 28, 28).unwrap();
        assert!(set.normalized(&[0], DatasetKind::Mnist).is_err(), "shape is checked");
        let v = set28.normalized(&[0], DatasetKind::Mnist).unwrap();
        assert!((v[0] - (1.0 - 0.1307) / 0.3081).abs() < 1e-6);
        assert_eq!(set.select(&[3, 1]).unwrap().pixels, vec![102, 255]);
        assert!(set.select(&[4]).is_err());
    }
}
