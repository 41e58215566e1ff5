//! What the perturbation methods share (Occlusion, feature ablation, RISE, KernelSHAP, LIME): they explain by
//! changing the input and watching the target's score, with forward passes only. Each method describes, for one
//! image, a [`Design`]: how many perturbed copies it scores, how to write copy k, and how the scores combine into a
//! map. [`attribute`] runs a design's copies through the model in batches of at most `batch` inputs (memory stays
//! bounded by the batch, not by the number of copies); a [`Job`](super::Job) runs the same batches one step at a
//! time, for the page's progress bar. The interpretable features of feature ablation, KernelSHAP and LIME are
//! [`Features`]: pixels, square patches or superpixels, shared by the image's channels.

use super::registry::{ParamKind, ParamSpec, Settings};
use super::{check_targets, Score};
use crate::engine::Rect;
use crate::models::{eval_logits, Classifier};
use crate::Result;
use candle_core::{Device, Tensor, D};
use rand::{Rng, SeedableRng};

/// The value a perturbation puts in place of the image's (in the model's normalised units): one parameter that
/// Occlusion, feature ablation, RISE, KernelSHAP and LIME share.
pub static BASELINE: ParamSpec = ParamSpec {
    key: "baseline",
    aliases: &[],
    label: "Baseline value",
    help: "What a perturbation puts in place of the image's values, in the model's normalised units (0: the data \
           set's mean)",
    kind: ParamKind::Real { default: 0.0, min: -100.0, max: 100.0 },
};

/// How feature ablation, KernelSHAP and LIME group pixels into features.
pub static FEATURES: ParamSpec = ParamSpec {
    key: "features",
    aliases: &[],
    label: "Features",
    help: "The features switched on and off: square patches (--patch), single pixels, or superpixels (SLIC, \
           about --patch² pixels each)",
    kind: ParamKind::Choice { values: &["patches", "pixels", "superpixels"], default: "patches" },
};

/// The side of a patch (and the size of a superpixel).
pub static PATCH: ParamSpec = ParamSpec {
    key: "patch",
    aliases: &[],
    label: "Patch size",
    help: "Side of a square patch in pixels; superpixels have about patch² pixels",
    kind: ParamKind::Count { default: 4, min: 1, max: 64 },
};

/// The features of an image: a label in `0..count` for each pixel (`H×W`, shared by the channels).
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub labels: Vec<u32>,
    pub count: usize,
}

impl Features {
    /// Square `patch × patch` patches in rows (the last row and column may be narrower).
    pub fn patches(h: usize, w: usize, patch: usize) -> Result<Features> {
        if patch == 0 {
            crate::invalid!("a patch has at least one pixel");
        }
        let cols = w.div_ceil(patch);
        let labels = (0..h * w).map(|p| ((p / w / patch) * cols + (p % w) / patch) as u32).collect();
        Ok(Features { labels, count: h.div_ceil(patch) * cols })
    }

    /// Labels given per pixel: each of `0..max + 1` must label at least one pixel.
    pub fn from_labels(labels: Vec<u32>, pixels: usize) -> Result<Features> {
        if labels.len() != pixels {
            crate::invalid!("a feature mask needs one label per pixel ({pixels}), got {}", labels.len());
        }
        let count = labels.iter().max().map_or(0, |&m| m as usize + 1);
        let mut seen = vec![false; count];
        labels.iter().for_each(|&l| seen[l as usize] = true);
        if let Some(missing) = seen.iter().position(|s| !s) {
            crate::invalid!("feature labels must be 0..{count} with none missing; {missing} labels no pixel");
        }
        Ok(Features { labels, count })
    }

    /// The features `settings` ask for, for `image` (`C×H×W`).
    pub fn of(settings: &Settings, image: &[f32], (c, h, w): (usize, usize, usize)) -> Result<Features> {
        let patch = settings.params.count(&PATCH);
        match settings.params.choice(&FEATURES) {
            "pixels" => Features::patches(h, w, 1),
            "superpixels" => super::superpixels::slic(image, (c, h, w), patch),
            _ => Features::patches(h, w, patch),
        }
    }

    /// The number of features `settings` ask for on images of this shape, where it does not depend on the image
    /// (superpixels: the number of seeds).
    pub fn count_of(settings: &Settings, (h, w): (usize, usize)) -> usize {
        let patch = settings.params.count(&PATCH);
        match settings.params.choice(&FEATURES) {
            "pixels" => h * w,
            _ => h.div_ceil(patch) * w.div_ceil(patch),
        }
    }
}

/// One image's perturbations: `count` copies and how their scores make the map.
pub trait Design: Send {
    fn count(&self) -> usize;

    /// Copy `k` of the image (`C×H×W`) into `out`.
    fn write(&self, k: usize, out: &mut [f32]);

    /// The map (`C×H×W`) from the target's score on the image itself and on each copy, in order.
    fn finish(&self, original: f32, scores: &[f32]) -> Result<Vec<f32>>;

    /// A rectangle outside which copy `k` equals the image (every channel), where there is one: the CPU engine then
    /// recomputes only what the change reaches ([`Plan::forward_local`](crate::engine::Plan::forward_local)).
    fn changed(&self, _k: usize) -> Option<Rect> {
        None
    }

    /// What the design drew or chose, by name, with its shape (`--draws`): masks, coalitions, features, windows.
    fn draws(&self) -> Vec<(&'static str, Vec<f32>, Vec<usize>)>;
}

/// A perturbation method: a [`Design`] for each image.
pub trait Perturbation {
    /// The design for `image` (`C×H×W`).
    fn design(&self, image: &[f32], shape: (usize, usize, usize)) -> Result<Box<dyn Design>>;
}

/// The target's score (`score` of logits `n × classes`) of each row `i`, explained for `target(i)`.
fn pick(logits: &[f32], n: usize, target: impl Fn(usize) -> u32, score: Score) -> Vec<f32> {
    let classes = logits.len() / n.max(1);
    (0..n)
        .map(|i| {
            let row = &logits[i * classes..(i + 1) * classes];
            let t = row[target(i) as usize];
            match score {
                Score::Logit => t,
                Score::Prob => {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    (t - max).exp() / row.iter().map(|v| (v - max).exp()).sum::<f32>()
                }
            }
        })
        .collect()
}

/// The target's score (`score` of the logits) for each of `n` inputs in `xs`, image `i` explained for
/// `target(i)`.
pub fn scores(
    model: &dyn Classifier,
    xs: Vec<f32>,
    n: usize,
    (c, h, w): (usize, usize, usize),
    target: impl Fn(usize) -> u32,
    score: Score,
) -> Result<Vec<f32>> {
    let x = Tensor::from_vec(xs, (n, c, h, w), &Device::Cpu)?;
    let logits = eval_logits(model, &x)?;
    let out = match score {
        Score::Logit => logits,
        Score::Prob => candle_nn::ops::softmax(&logits, D::Minus1)?,
    };
    let out = out.to_vec2::<f32>()?;
    Ok((0..n).map(|i| out[i][target(i) as usize]).collect())
}

/// Each image's map under `method`: every copy scored in batches of at most `batch` inputs.
pub fn attribute(
    method: &dyn Perturbation,
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    score: Score,
    batch: usize,
) -> Result<Tensor> {
    let mut run = Run::new(method, model, x, targets, score)?;
    while !run.step(model, batch)? {}
    Ok(Tensor::from_vec(run.finish()?, x.shape(), x.device())?)
}

/// The perturbations of a batch of images in progress: the designs, the scores so far, and where the next batch
/// starts. [`attribute`] runs it to the end; a job steps it.
pub struct Run {
    designs: Vec<Box<dyn Design>>,
    /// The images, `N×C×H×W`.
    images: Vec<f32>,
    originals: Vec<f32>,
    scores: Vec<Vec<f32>>,
    targets: Vec<u32>,
    score: Score,
    shape: (usize, usize, usize),
    /// The image and the copy the next batch starts at.
    image: usize,
    copy: usize,
}

impl Run {
    /// The designs for `x` (`N×C×H×W`) and the targets' scores on the images themselves.
    pub fn new(
        method: &dyn Perturbation,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        score: Score,
    ) -> Result<Run> {
        let (n, c, h, w) = x.dims4()?;
        check_targets(model, n, targets)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        if xs.iter().any(|v| !v.is_finite()) {
            crate::invalid!("the images hold non-finite values; a perturbation method cannot explain them");
        }
        let per = c * h * w;
        let designs = (0..n).map(|i| method.design(&xs[i * per..(i + 1) * per], (c, h, w))).collect::<Result<_>>()?;
        let originals =
            if n == 0 { Vec::new() } else { scores(model, xs.clone(), n, (c, h, w), |i| targets[i], score)? };
        Ok(Run {
            designs,
            images: xs,
            originals,
            scores: vec![Vec::new(); n],
            targets: targets.to_vec(),
            score,
            shape: (c, h, w),
            image: 0,
            copy: 0,
        })
    }

    /// Model inputs in all, and done.
    pub fn total(&self) -> usize {
        self.designs.iter().map(|d| d.count()).sum()
    }

    pub fn done(&self) -> usize {
        self.designs[..self.image].iter().map(|d| d.count()).sum::<usize>() + self.copy
    }

    /// Scores the next at most `batch` copies; `true` once every copy is scored.
    pub fn step(&mut self, model: &dyn Classifier, batch: usize) -> Result<bool> {
        let (c, h, w) = self.shape;
        let per = c * h * w;
        let mut xs = Vec::new();
        // (image, copy) of each row of `xs`.
        let mut owners: Vec<(usize, usize)> = Vec::new();
        while owners.len() < batch.max(1) && self.image < self.designs.len() {
            let design = &self.designs[self.image];
            if self.copy == design.count() {
                self.image += 1;
                self.copy = 0;
                continue;
            }
            let from = xs.len();
            xs.resize(from + per, 0.0);
            design.write(self.copy, &mut xs[from..]);
            owners.push((self.image, self.copy));
            self.copy += 1;
        }
        if !owners.is_empty() {
            let local = model.engine().and_then(crate::engine::plan_of).filter(|p| p.serves_local());
            let rects: Option<Vec<Rect>> = owners.iter().map(|&(i, k)| self.designs[i].changed(k)).collect();
            let got = match (local, rects) {
                (Some(plan), Some(rects)) => {
                    // Each image's copies against its own activations.
                    let mut got = Vec::with_capacity(owners.len());
                    let mut start = 0;
                    while start < owners.len() {
                        let i = owners[start].0;
                        let end = start + owners[start..].iter().take_while(|o| o.0 == i).count();
                        let logits = plan
                            .forward_local(
                                &self.images[i * per..(i + 1) * per],
                                &xs[start * per..end * per],
                                &rects[start..end],
                            )
                            .expect("the plan serves local passes");
                        got.extend(pick(&logits, end - start, |_| self.targets[i], self.score));
                        start = end;
                    }
                    got
                }
                _ => scores(model, xs, owners.len(), self.shape, |k| self.targets[owners[k].0], self.score)?,
            };
            for (&(i, _), s) in owners.iter().zip(got) {
                self.scores[i].push(s);
            }
        }
        while self.image < self.designs.len() && self.copy == self.designs[self.image].count() {
            self.image += 1;
            self.copy = 0;
        }
        Ok(self.image == self.designs.len())
    }

    /// The maps (`N×C×H×W`, flat) once every copy is scored.
    pub fn finish(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for (i, d) in self.designs.iter().enumerate() {
            let map = d.finish(self.originals[i], &self.scores[i])?;
            if map.iter().any(|v| !v.is_finite()) {
                crate::invalid!("the map of image {i} is not finite (the model's scores are not)");
            }
            out.extend(map);
        }
        Ok(out)
    }
}

/// A seeded random generator for a method's draws (the same draws for every image of a run).
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `x` where `on(pixel)`, else `baseline`, in every channel.
pub fn write_masked(image: &[f32], hw: usize, baseline: f32, out: &mut [f32], on: impl Fn(usize) -> bool) {
    for (src, dst) in image.chunks(hw).zip(out.chunks_mut(hw)) {
        for p in 0..hw {
            dst[p] = if on(p) { src[p] } else { baseline };
        }
    }
}

/// The weighted least-squares fit with an intercept and a ridge penalty α·|β|² (α = 0: ordinary weighted least
/// squares), as scikit-learn's `Ridge`/`LinearRegression` fit with `sample_weight`: rows centred on their weighted
/// means, then (Zcᵀ W Zc + αI) β = Zcᵀ W yc solved by Cholesky in f64. Returns β (the intercept is not a map).
/// `z` holds `k` rows of `m` values.
pub fn weighted_ridge(z: &[f64], y: &[f64], weights: &[f64], m: usize, alpha: f64) -> Result<Vec<f64>> {
    let k = y.len();
    let total: f64 = weights.iter().sum();
    if total.is_nan() || total <= 0.0 || weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
        crate::invalid!("the samples' weights must be finite, non-negative and not all zero");
    }
    let mean_z: Vec<f64> = (0..m).map(|j| (0..k).map(|r| weights[r] * z[r * m + j]).sum::<f64>() / total).collect();
    let mean_y = (0..k).map(|r| weights[r] * y[r]).sum::<f64>() / total;
    let mut a = vec![0.0f64; m * m];
    let mut b = vec![0.0f64; m];
    let mut row = vec![0.0f64; m];
    for r in 0..k {
        let wr = weights[r];
        if wr == 0.0 {
            continue;
        }
        for j in 0..m {
            row[j] = z[r * m + j] - mean_z[j];
        }
        let yc = y[r] - mean_y;
        for i in 0..m {
            let wi = wr * row[i];
            if wi == 0.0 {
                continue;
            }
            b[i] += wi * yc;
            for j in i..m {
                a[i * m + j] += wi * row[j];
            }
        }
    }
    for i in 0..m {
        a[i * m + i] += alpha;
        for j in 0..i {
            a[i * m + j] = a[j * m + i];
        }
    }
    cholesky_solve(&mut a, &mut b, m).ok_or_else(|| {
        crate::Error::InvalidArgument(format!(
            "the samples do not determine the {m} features' weights (the fit is singular): take more samples, \
             fewer features (larger patches) or a ridge penalty"
        ))
    })?;
    Ok(b)
}

/// Solves `a x = b` for a symmetric positive-definite `a` (`m×m`, overwritten), `x` into `b`; `None` when `a` is
/// not (numerically) positive definite.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], m: usize) -> Option<()> {
    let scale = (0..m).map(|i| a[i * m + i].abs()).fold(0.0f64, f64::max).max(f64::MIN_POSITIVE);
    for j in 0..m {
        let mut d = a[j * m + j];
        for p in 0..j {
            d -= a[j * m + p] * a[j * m + p];
        }
        if d.is_nan() || d <= scale * 1e-12 {
            return None;
        }
        let d = d.sqrt();
        a[j * m + j] = d;
        for i in j + 1..m {
            let mut s = a[i * m + j];
            for p in 0..j {
                s -= a[i * m + p] * a[j * m + p];
            }
            a[i * m + j] = s / d;
        }
    }
    for i in 0..m {
        let mut s = b[i];
        for p in 0..i {
            s -= a[i * m + p] * b[p];
        }
        b[i] = s / a[i * m + i];
    }
    for i in (0..m).rev() {
        let mut s = b[i];
        for p in i + 1..m {
            s -= a[p * m + i] * b[p];
        }
        b[i] = s / a[i * m + i];
    }
    Some(())
}

/// A uniformly random subset of `k` of `m` features, as a 0/1 row.
pub fn random_subset(rng: &mut impl Rng, m: usize, k: usize) -> Vec<u8> {
    let mut order: Vec<usize> = (0..m).collect();
    for i in 0..k.min(m) {
        let j = rng.random_range(i..m);
        order.swap(i, j);
    }
    let mut row = vec![0u8; m];
    order[..k.min(m)].iter().for_each(|&f| row[f] = 1);
    row
}

/// The number of perturbed copies RISE, KernelSHAP and LIME score per image.
pub static PERTURBATIONS: ParamSpec = ParamSpec {
    key: "perturbations",
    aliases: &[],
    label: "Perturbed samples",
    help: "Perturbed copies of the image scored (RISE: masks; KernelSHAP, LIME: coalitions)",
    kind: ParamKind::Count { default: 1000, min: 2, max: 100_000 },
};

/// How the surrogate's samples are weighed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weighing {
    /// KernelSHAP (Captum's): 10⁶ for the empty and the full coalition, 1 for the others (which are drawn in
    /// proportion to the Shapley kernel already).
    Shapley,
    /// LIME (Captum's default): exp(−d² / 2w²), d the cosine distance of the perturbed input from the image.
    Cosine { width: f64 },
}

/// LIME's and KernelSHAP's features and samples for one image (`C×H×W` of `shape`): `given` ones (checked against
/// the image), or the settings' features and `draw(features, perturbations, seed)`.
pub fn surrogate_samples(
    given: &Option<(Features, Vec<u8>)>,
    settings: &Settings,
    image: &[f32],
    shape: (usize, usize, usize),
    draw: impl Fn(usize, usize, u64) -> Result<Vec<u8>>,
) -> Result<(Features, Vec<u8>)> {
    match given {
        Some((f, s)) if f.labels.len() == shape.1 * shape.2 && s.len() % f.count == 0 => Ok((f.clone(), s.clone())),
        Some(_) => crate::invalid!("the given features or samples do not fit a {}×{} image", shape.1, shape.2),
        None => {
            let f = Features::of(settings, image, shape)?;
            let s = draw(f.count, settings.params.count(&PERTURBATIONS), settings.seed)?;
            Ok((f, s))
        }
    }
}

/// The perturbed copies per image of LIME and KernelSHAP: the given samples' rows, or the settings' count.
pub fn surrogate_count(given: &Option<(Features, Vec<u8>)>, settings: &Settings) -> usize {
    match given {
        Some((f, s)) => s.len() / f.count.max(1),
        None => settings.params.count(&PERTURBATIONS),
    }
}

/// The design of LIME and KernelSHAP: `samples` (rows of 0/1 over the features; 1 keeps the feature's pixels,
/// 0 puts the baseline there), a weight for each, and a linear surrogate fitted to the scores (weighted ridge with
/// intercept); each pixel's attribution is its feature's coefficient.
pub struct Surrogate {
    pub image: Vec<f32>,
    pub shape: (usize, usize, usize),
    pub features: Features,
    pub samples: Vec<u8>,
    pub baseline: f32,
    pub weighing: Weighing,
    pub ridge: f64,
}

impl Surrogate {
    fn keeps(&self, k: usize, p: usize) -> bool {
        self.samples[k * self.features.count + self.features.labels[p] as usize] == 1
    }

    fn weight(&self, k: usize) -> f64 {
        let m = self.features.count;
        match self.weighing {
            Weighing::Shapley => {
                let on = self.samples[k * m..(k + 1) * m].iter().filter(|&&b| b == 1).count();
                if on == 0 || on == m {
                    1e6
                } else {
                    1.0
                }
            }
            Weighing::Cosine { width } => {
                let (c, h, w) = self.shape;
                let hw = h * w;
                let (mut dot, mut xx, mut pp) = (0.0f64, 0.0f64, 0.0f64);
                for ch in 0..c {
                    for p in 0..hw {
                        let x = self.image[ch * hw + p] as f64;
                        let v = if self.keeps(k, p) { x } else { self.baseline as f64 };
                        dot += x * v;
                        xx += x * x;
                        pp += v * v;
                    }
                }
                // torch's CosineSimilarity: x·y / max(|x||y|, 1e-8).
                let d = 1.0 - dot / (xx.sqrt() * pp.sqrt()).max(1e-8);
                (-d * d / (2.0 * width * width)).exp()
            }
        }
    }
}

impl Design for Surrogate {
    fn count(&self) -> usize {
        self.samples.len() / self.features.count.max(1)
    }

    fn write(&self, k: usize, out: &mut [f32]) {
        let (_, h, w) = self.shape;
        write_masked(&self.image, h * w, self.baseline, out, |p| self.keeps(k, p));
    }

    fn draws(&self) -> Vec<(&'static str, Vec<f32>, Vec<usize>)> {
        let (_, h, w) = self.shape;
        let m = self.features.count;
        vec![
            ("coalitions", self.samples.iter().map(|&b| b as f32).collect(), vec![self.count(), m]),
            ("features", self.features.labels.iter().map(|&l| l as f32).collect(), vec![h, w]),
        ]
    }

    fn finish(&self, _original: f32, scores: &[f32]) -> Result<Vec<f32>> {
        let m = self.features.count;
        let k = self.count();
        let z: Vec<f64> = self.samples.iter().map(|&b| b as f64).collect();
        let y: Vec<f64> = scores.iter().map(|&s| s as f64).collect();
        let weights: Vec<f64> = (0..k).map(|r| self.weight(r)).collect();
        let beta = weighted_ridge(&z, &y, &weights, m, self.ridge)?;
        let plane: Vec<f32> = self.features.labels.iter().map(|&l| beta[l as usize] as f32).collect();
        Ok(plane.repeat(self.shape.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_tile_the_image_row_by_row() {
        let f = Features::patches(5, 5, 2).unwrap();
        assert_eq!(f.count, 9);
        assert_eq!(&f.labels[..5], &[0, 0, 1, 1, 2]);
        assert_eq!(&f.labels[20..], &[6, 6, 7, 7, 8]);
        assert_eq!(Features::patches(28, 28, 4).unwrap().count, 49);
        assert!(Features::from_labels(vec![0, 2, 2], 3).unwrap_err().to_string().contains("1 labels no pixel"));
        assert!(Features::from_labels(vec![0, 1], 3).is_err());
    }

    /// The fit recovers an exact linear function (with intercept) and, with a ridge penalty, the closed form of
    /// one feature: β = Σw(z−z̄)(y−ȳ) / (Σw(z−z̄)² + α).
    #[test]
    fn weighted_ridge_recovers_linear_functions() {
        let mut r = rng(4);
        let (k, m) = (40, 5);
        let z: Vec<f64> = (0..k * m).map(|_| r.random_range(0..2) as f64).collect();
        let beta = [1.5, -2.0, 0.25, 3.0, -0.5];
        let y: Vec<f64> = (0..k).map(|i| 0.7 + (0..m).map(|j| beta[j] * z[i * m + j]).sum::<f64>()).collect();
        let w: Vec<f64> = (0..k).map(|_| r.random_range(0.1..2.0)).collect();
        let got = weighted_ridge(&z, &y, &w, m, 0.0).unwrap();
        for j in 0..m {
            assert!((got[j] - beta[j]).abs() < 1e-10, "{got:?}");
        }
        let z1: Vec<f64> = (0..k).map(|i| z[i * m]).collect();
        let tw: f64 = w.iter().sum();
        let (mz, my) = ((0..k).map(|i| w[i] * z1[i]).sum::<f64>() / tw, (0..k).map(|i| w[i] * y[i]).sum::<f64>() / tw);
        let num: f64 = (0..k).map(|i| w[i] * (z1[i] - mz) * (y[i] - my)).sum();
        let den: f64 = (0..k).map(|i| w[i] * (z1[i] - mz).powi(2)).sum();
        let got = weighted_ridge(&z1, &y, &w, 1, 2.0).unwrap();
        assert!((got[0] - num / (den + 2.0)).abs() < 1e-12);
        // A feature never switched off cannot be fitted without a penalty.
        let ones = vec![1.0; k];
        assert!(weighted_ridge(&ones, &y, &w, 1, 0.0).unwrap_err().to_string().contains("singular"));
        assert!(weighted_ridge(&ones, &y, &w, 1, 1.0).is_ok());
    }
}
