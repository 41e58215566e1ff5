//! How faithful is a map to the model it explains? Metrics that need no retraining, each in a file named after it:
//!
//! - [`road`]: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A Consistent and Efficient
//!   Evaluation Strategy for Attribution Methods"): removed pixels are filled by noisy linear imputation
//!   ([`imputation`]) so that the mask's shape leaks no class; the score after removing the most (MoRF) and least
//!   (LeRF) relevant fractions.
//! - [`insertion_deletion`]: Petsiuk, Das & Saenko 2018 ("RISE"): the class probability while pixels are deleted
//!   (most relevant first) or inserted into a blurred copy; area under each curve.
//! - [`pixel_flipping`]: Bach et al. 2015: the score while the most relevant pixels are replaced, step by step.
//! - [`faithfulness_correlation`]: Bhatt, Weller & Moura 2020: the Pearson correlation, over random pixel subsets,
//!   between the map's sum on the subset and the score drop when the subset is replaced.
//! - [`infidelity`] and [`sensitivity_max`]: Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019 ("On the (In)fidelity and
//!   Sensitivity of Explanations").
//!
//! One contract: a [`Scorer`] (the model and the score it reads: logit or softmax probability), the images `x`
//! (`N×C×H×W`, normalised), their targets and the maps (`N×C×H×W` or `N×1×H×W`, one value per location broadcast
//! over channels); a metric returns one number or one curve per image. Every forward pass is batched across images
//! and perturbation steps and runs on the model's evaluation engine where it has one.

pub mod faithfulness_correlation;
pub mod imputation;
pub mod infidelity;
pub mod insertion_deletion;
pub mod mprt;
pub mod pixel_flipping;
pub mod road;
pub mod sensitivity_max;
pub mod similarity;

use crate::data::DatasetKind;
use crate::evaluation::{pixel_relevance, Ranking};
use crate::graph::Score;
use crate::models::{eval_logits, Classifier};
use crate::Result;
use candle_core::{Device, Tensor};

/// Every metric, as the command line and the reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    Road,
    Insertion,
    Deletion,
    PixelFlipping,
    FaithfulnessCorrelation,
    Infidelity,
    SensitivityMax,
    Mprt,
    Smprt,
    Emprt,
    RandomLogit,
}

impl Metric {
    pub const ALL: [Metric; 11] = [
        Metric::Road,
        Metric::Insertion,
        Metric::Deletion,
        Metric::PixelFlipping,
        Metric::FaithfulnessCorrelation,
        Metric::Infidelity,
        Metric::SensitivityMax,
        Metric::Mprt,
        Metric::Smprt,
        Metric::Emprt,
        Metric::RandomLogit,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Metric::Road => "road",
            Metric::Insertion => "insertion",
            Metric::Deletion => "deletion",
            Metric::PixelFlipping => "pixel-flipping",
            Metric::FaithfulnessCorrelation => "faithfulness-correlation",
            Metric::Infidelity => "infidelity",
            Metric::SensitivityMax => "sensitivity-max",
            Metric::Mprt => "mprt",
            Metric::Smprt => "smprt",
            Metric::Emprt => "emprt",
            Metric::RandomLogit => "random-logit",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Metric::ALL.into_iter().find(|m| m.id() == s).ok_or_else(|| {
            let all: Vec<&str> = Metric::ALL.iter().map(|m| m.id()).collect();
            crate::Error::InvalidArgument(format!("unknown metric '{s}' (expected one of {})", all.join(", ")))
        })
    }

    /// The number each image gets, in words.
    pub fn summary(self) -> &'static str {
        match self {
            Metric::Road => "(LeRF − MoRF) / 2 over the fractions",
            Metric::Insertion => "area under the insertion curve",
            Metric::Deletion => "area under the deletion curve",
            Metric::PixelFlipping => "area under the pixel-flipping curve",
            Metric::FaithfulnessCorrelation => "Pearson r of map sums and score drops",
            Metric::Infidelity => "infidelity (normalised)",
            Metric::SensitivityMax => "max-sensitivity",
            Metric::Mprt | Metric::Smprt => "Spearman ρ to the original map, all layers randomised",
            Metric::Emprt => "relative rise of the map's entropy, all layers randomised",
            Metric::RandomLogit => "SSIM to the map of a random other class",
        }
    }

    /// Whether a more faithful (or more model-sensitive) method scores higher.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Road | Metric::Insertion | Metric::FaithfulnessCorrelation | Metric::Emprt)
    }
}

/// The model under test, read as one score per image: its class logit or softmax probability.
pub struct Scorer<'a> {
    pub model: &'a dyn Classifier,
    pub score: Score,
    /// Images per forward pass.
    pub batch: usize,
}

impl<'a> Scorer<'a> {
    /// Softmax probabilities (as RISE, ROAD and Quantus read a classifier), 256 images per pass.
    pub fn new(model: &'a dyn Classifier) -> Self {
        Scorer { model, score: Score::Prob, batch: 256 }
    }

    pub fn with_score(self, score: Score) -> Self {
        Scorer { score, ..self }
    }

    fn shape(&self) -> (usize, usize, usize) {
        let kind = self.model.spec().dataset;
        (kind.channels(), kind.side(), kind.side())
    }

    /// The score of `targets[i]` for each of the images in `x` (`n × C×H×W` values).
    pub fn scores(&self, x: &[f32], targets: &[u32]) -> Result<Vec<f32>> {
        let (c, h, w) = self.shape();
        let len = c * h * w;
        if x.len() != targets.len() * len {
            crate::invalid!("{} values for {} images of {c}×{h}×{w}", x.len(), targets.len());
        }
        let classes = self.model.spec().dataset.num_classes();
        if let Some(&t) = targets.iter().find(|&&t| t as usize >= classes) {
            crate::invalid!("target class {t} is not one of the model's {classes} classes");
        }
        let mut out = Vec::with_capacity(targets.len());
        for (chunk, ts) in x.chunks(self.batch.max(1) * len).zip(targets.chunks(self.batch.max(1))) {
            let n = ts.len();
            let t = Tensor::from_slice(chunk, (n, c, h, w), &Device::Cpu)?;
            let logits = eval_logits(self.model, &t)?.flatten_all()?.to_vec1::<f32>()?;
            for (row, &target) in logits.chunks_exact(classes).zip(ts) {
                out.push(match self.score {
                    Score::Logit => row[target as usize],
                    Score::Prob => softmax_of(row, target as usize),
                });
            }
        }
        Ok(out)
    }
}

/// `softmax(row)[k]`, computed stably.
fn softmax_of(row: &[f32], k: usize) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (((row[k] - max) as f64).exp() / sum) as f32
}

/// The images a metric reads: `x` (`n × C×H×W` values, normalised) with one target class each, and a map per image
/// (`n × M×H×W` with `M` = 1 or C).
pub struct Batch<'a> {
    pub x: &'a [f32],
    pub targets: &'a [u32],
    pub maps: &'a [f32],
    pub map_channels: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl<'a> Batch<'a> {
    /// The batch of `x` (`N×C×H×W`) and `maps` (`N×M×H×W`, M = 1 or C), checked: shapes agree, every value finite.
    pub fn new(x: &'a [f32], shape: (usize, usize, usize, usize), targets: &'a [u32], maps: &'a [f32]) -> Result<Self> {
        let (n, channels, height, width) = shape;
        let plane = height * width;
        if n == 0 || plane == 0 || channels == 0 {
            crate::invalid!("no images to measure");
        }
        if x.len() != n * channels * plane {
            crate::invalid!("{} input values for {n} images of {channels}×{height}×{width}", x.len());
        }
        if targets.len() != n {
            crate::invalid!("{} targets for {n} images", targets.len());
        }
        let map_channels = maps.len() / (n * plane).max(1);
        if !(map_channels == 1 || map_channels == channels) || maps.len() != n * map_channels * plane {
            crate::invalid!(
                "{} map values for {n} images of {height}×{width}: expected 1 or {channels} channels",
                maps.len()
            );
        }
        if x.iter().chain(maps).any(|v| !v.is_finite()) {
            crate::invalid!("the images or maps hold a value that is not a finite number");
        }
        Ok(Batch { x, targets, maps, map_channels, channels, height, width })
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.plane()
    }

    pub fn image(&self, i: usize) -> &'a [f32] {
        &self.x[i * self.image_len()..(i + 1) * self.image_len()]
    }

    pub fn map(&self, i: usize) -> &'a [f32] {
        let len = self.map_channels * self.plane();
        &self.maps[i * len..(i + 1) * len]
    }

    /// Image `i`'s map as one value per pixel location, its channels combined by `ranking`.
    pub fn relevance(&self, i: usize, ranking: Ranking) -> Vec<f32> {
        pixel_relevance(self.map(i), self.map_channels, ranking).expect("shapes checked by Batch::new")
    }

    /// Image `i`'s map value at channel `c`, location `p` (broadcast when the map has one channel).
    pub fn map_at(&self, i: usize, c: usize, p: usize) -> f32 {
        let c = if self.map_channels == 1 { 0 } else { c };
        self.map(i)[c * self.plane() + p]
    }
}

/// What replaces a removed pixel (values in normalised units per channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Baseline {
    /// The data set's mean: 0 after normalisation (RISE's deletion substrate, Hooker et al.'s fill).
    Mean,
    /// Raw 0 (black).
    Black,
    /// Each image's own minimum over all its values (Quantus's "black").
    Min,
}

impl Baseline {
    /// The fill value of each channel of `image` (`C×H×W`) of data set `kind`.
    pub fn values(self, kind: DatasetKind, image: &[f32]) -> Vec<f32> {
        let c = kind.channels();
        match self {
            Baseline::Mean => vec![0.0; c],
            Baseline::Black => kind.mean().iter().zip(kind.std()).map(|(m, s)| -m / s).collect(),
            Baseline::Min => vec![image.iter().copied().fold(f32::INFINITY, f32::min); c],
        }
    }
}

/// Area under a curve sampled at equal steps on [0, 1] by the trapezoid rule (RISE's `auc`): the mean of the
/// values with the two ends counted half.
pub fn area_under_curve(values: &[f32]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        1 => values[0] as f64,
        n => {
            let sum: f64 = values.iter().map(|&v| v as f64).sum();
            (sum - (values[0] as f64 + values[n - 1] as f64) / 2.0) / (n - 1) as f64
        }
    }
}

/// Collects perturbed copies of images with their targets and scores them in batches of the scorer's size.
struct Pending<'s, 'a> {
    scorer: &'s Scorer<'a>,
    x: Vec<f32>,
    targets: Vec<u32>,
    scores: Vec<f32>,
}

impl<'s, 'a> Pending<'s, 'a> {
    fn new(scorer: &'s Scorer<'a>) -> Self {
        Pending { scorer, x: Vec::new(), targets: Vec::new(), scores: Vec::new() }
    }

    fn push(&mut self, image: &[f32], target: u32) -> Result<()> {
        self.x.extend_from_slice(image);
        self.targets.push(target);
        if self.targets.len() >= self.scorer.batch.max(1) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.targets.is_empty() {
            self.scores.extend(self.scorer.scores(&self.x, &self.targets)?);
            self.x.clear();
            self.targets.clear();
        }
        Ok(())
    }

    /// Every score, in push order.
    fn finish(mut self) -> Result<Vec<f32>> {
        self.flush()?;
        Ok(self.scores)
    }
}

/// Pearson's correlation of two equally long samples (NaN when either is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_and_correlation_by_hand() {
        assert_eq!(area_under_curve(&[1.0, 1.0, 1.0]), 1.0);
        assert_eq!(area_under_curve(&[1.0, 0.0]), 0.5);
        assert!((area_under_curve(&[0.0, 1.0, 0.0, 1.0]) - (2.0 - 0.5) / 3.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
        assert!((softmax_of(&[0.0, 0.0], 1) - 0.5).abs() < 1e-7);
        assert!((softmax_of(&[1000.0, 0.0], 0) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn a_batch_checks_its_shapes_and_values() {
        let x = vec![0.0; 2 * 3 * 4];
        let t = [0u32, 1];
        assert!(Batch::new(&x, (2, 3, 2, 2), &t, &[0.0; 8]).is_ok());
        assert!(Batch::new(&x, (2, 3, 2, 2), &t, &[0.0; 24]).is_ok());
        assert!(Batch::new(&x, (2, 3, 2, 2), &t, &[0.0; 16]).is_err());
        assert!(Batch::new(&x, (2, 3, 2, 2), &t[..1], &[0.0; 8]).is_err());
        let mut bad = vec![0.0; 8];
        bad[3] = f32::NAN;
        let e = Batch::new(&x, (2, 3, 2, 2), &t, &bad).err().unwrap().to_string();
        assert!(e.contains("finite"), "{e}");
        let b = Batch::new(&x, (2, 3, 2, 2), &t, &[1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
        assert_eq!(b.relevance(0, Ranking::Absolute), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(b.map_at(1, 2, 1), 6.0);
    }
}
