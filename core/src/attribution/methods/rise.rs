//! RISE (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models"): N random
//! masks, each a grid of cells kept with probability p, up-sampled bilinearly to (s + 1)·cell pixels and shifted by
//! a random offset within one cell; the map is Σᵢ S(x ⊙ Mᵢ) Mᵢ / (N·p), as the authors' code computes it. Where
//! the authors up-sample with scikit-image (`order=1, mode='reflect'`), whitebox uses PyTorch's bilinear
//! `interpolate` (half-pixel centres, edges clamped); the reference in `tests/reference` does the same. Masked
//! pixels take the baseline value: x ⊙ M + b (1 − M) (the paper's b = 0).

use crate::attribution::perturbation::{self, Design, Perturbation, BASELINE, PERTURBATIONS};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;
use rand::Rng;
use std::sync::{Arc, Mutex};

pub static CELL: ParamSpec = ParamSpec {
    key: "cell",
    aliases: &[],
    label: "Cell size",
    help: "Side of a mask's cell in pixels (the grid has ⌈side / cell⌉ cells a row)",
    kind: ParamKind::Count { default: 4, min: 1, max: 64 },
};

pub static KEEP: ParamSpec = ParamSpec {
    key: "keep",
    aliases: &[],
    label: "Keep probability",
    help: "Probability that a mask keeps a cell",
    kind: ParamKind::Real { default: 0.5, min: 0.01, max: 1.0 },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "rise",
    aliases: &[],
    label: "RISE",
    title: "RISE",
    paper: "Petsiuk et al. 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models",
    family: Family::Perturbation,
    params: &[&PERTURBATIONS, &CELL, &KEEP, &BASELINE],
    needs: Needs::Nothing,
    display: Display::MinMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| {
        Ok(Box::new(Rise {
            masks: s.params.count(&PERTURBATIONS),
            cell: s.params.count(&CELL),
            keep: s.params.real(&KEEP),
            baseline: s.params.real(&BASELINE) as f32,
            seed: s.seed,
            batch: s.batch,
            given: None,
            drawn: Mutex::new(None),
        }))
    },
};

/// Masks drawn for images of one size (`h, w`).
pub type Drawn = ((usize, usize), Arc<Vec<f32>>);

pub struct Rise {
    pub masks: usize,
    pub cell: usize,
    pub keep: f64,
    pub baseline: f32,
    /// The seed of the masks (the same masks for every image of a run).
    pub seed: u64,
    /// Masked copies per forward pass.
    pub batch: usize,
    /// Masks given instead of drawn (`N×H×W`), for comparisons with a reference.
    pub given: Option<Arc<Vec<f32>>>,
    /// The masks drawn for one image size, shared by the images of a run.
    pub drawn: Mutex<Option<Drawn>>,
}

impl Rise {
    /// `N×H×W` masks drawn from the seed.
    pub fn draw(&self, h: usize, w: usize) -> Vec<f32> {
        let mut rng = perturbation::rng(self.seed);
        let cell = self.cell.max(1);
        let (gh, gw) = (h.div_ceil(cell), w.div_ceil(cell));
        let mut out = Vec::with_capacity(self.masks * h * w);
        for _ in 0..self.masks {
            let grid: Vec<f32> = (0..gh * gw).map(|_| (rng.random::<f64>() < self.keep) as u8 as f32).collect();
            let (dy, dx) = (rng.random_range(0..cell), rng.random_range(0..cell));
            out.extend(mask(&grid, (gh, gw), cell, (dy, dx), (h, w)));
        }
        out
    }
}

/// One mask: the `gh×gw` grid up-sampled bilinearly to `((gh + 1)·cell) × ((gw + 1)·cell)` (PyTorch's
/// `interpolate(mode='bilinear', align_corners=False)`), cropped to `h×w` from `(dy, dx)`.
pub fn mask(
    grid: &[f32],
    (gh, gw): (usize, usize),
    cell: usize,
    (dy, dx): (usize, usize),
    (h, w): (usize, usize),
) -> Vec<f32> {
    let (uh, uw) = ((gh + 1) * cell, (gw + 1) * cell);
    // PyTorch's source index: max(0, (dst + 0.5)·in/out − 0.5), its neighbour clamped to the last row.
    let taps = |dst: usize, inn: usize, out: usize| {
        let src = (((dst as f32) + 0.5) * (inn as f32 / out as f32) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(inn - 1);
        let i1 = (i0 + 1).min(inn - 1);
        (i0, i1, src - i0 as f32)
    };
    let rows: Vec<_> = (dy..dy + h).map(|y| taps(y.min(uh - 1), gh, uh)).collect();
    let cols: Vec<_> = (dx..dx + w).map(|x| taps(x.min(uw - 1), gw, uw)).collect();
    let mut out = Vec::with_capacity(h * w);
    for &(y0, y1, ly) in &rows {
        for &(x0, x1, lx) in &cols {
            let top = (1.0 - lx) * grid[y0 * gw + x0] + lx * grid[y0 * gw + x1];
            let bottom = (1.0 - lx) * grid[y1 * gw + x0] + lx * grid[y1 * gw + x1];
            out.push((1.0 - ly) * top + ly * bottom);
        }
    }
    out
}

struct Masked {
    image: Vec<f32>,
    shape: (usize, usize, usize),
    masks: Arc<Vec<f32>>,
    keep: f64,
    baseline: f32,
}

impl Design for Masked {
    fn count(&self) -> usize {
        let (_, h, w) = self.shape;
        self.masks.len() / (h * w)
    }

    fn write(&self, k: usize, out: &mut [f32]) {
        let (_, h, w) = self.shape;
        let hw = h * w;
        let m = &self.masks[k * hw..(k + 1) * hw];
        for (src, dst) in self.image.chunks(hw).zip(out.chunks_mut(hw)) {
            for p in 0..hw {
                dst[p] = src[p] * m[p] + self.baseline * (1.0 - m[p]);
            }
        }
    }

    fn draws(&self) -> Vec<(&'static str, Vec<f32>, Vec<usize>)> {
        let (_, h, w) = self.shape;
        vec![("masks", self.masks.to_vec(), vec![self.count(), h, w])]
    }

    fn finish(&self, _original: f32, scores: &[f32]) -> Result<Vec<f32>> {
        let (c, h, w) = self.shape;
        let hw = h * w;
        let mut sum = vec![0.0f64; hw];
        for (k, &s) in scores.iter().enumerate() {
            let m = &self.masks[k * hw..(k + 1) * hw];
            sum.iter_mut().zip(m).for_each(|(a, &v)| *a += s as f64 * v as f64);
        }
        let scale = 1.0 / (scores.len() as f64 * self.keep);
        let plane: Vec<f32> = sum.iter().map(|v| (v * scale) as f32).collect();
        Ok(plane.repeat(c))
    }
}

impl Perturbation for Rise {
    fn design(&self, image: &[f32], (c, h, w): (usize, usize, usize)) -> Result<Box<dyn Design>> {
        let masks = match &self.given {
            Some(m) if m.len() % (h * w) == 0 && !m.is_empty() => m.clone(),
            Some(m) => crate::invalid!("{} mask values are not whole {h}×{w} masks", m.len()),
            None => {
                let mut drawn = self.drawn.lock().expect("not poisoned");
                match &*drawn {
                    Some((size, m)) if *size == (h, w) => m.clone(),
                    _ => {
                        let m = Arc::new(self.draw(h, w));
                        *drawn = Some(((h, w), m.clone()));
                        m
                    }
                }
            }
        };
        Ok(Box::new(Masked {
            image: image.to_vec(),
            shape: (c, h, w),
            masks,
            keep: self.keep,
            baseline: self.baseline,
        }))
    }
}

impl Attribution for Rise {
    fn name(&self) -> String {
        "RISE".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        perturbation::attribute(self, model, x, targets, score, self.batch)
    }

    fn inputs_per_image(&self) -> usize {
        self.masks
    }

    fn perturbation(&self) -> Option<&dyn Perturbation> {
        Some(self)
    }
}
