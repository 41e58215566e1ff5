//! Occlusion (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"): a square window of
//! the baseline value slides over the image (every channel at once); each pixel's attribution is the mean, over
//! the windows that cover it, of the drop of the target's score, S(x) − S(x with the window occluded) — as Captum's
//! `Occlusion` computes it with a window of `C×k×k` and strides `C×s×s`. A pixel no window covers (when the
//! stride skips it) gets 0, where Captum divides 0 by 0.

use crate::attribution::perturbation::{self, Design, Perturbation, BASELINE};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{Attribution, Score};
use crate::engine::Rect;
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

pub static WINDOW: ParamSpec = ParamSpec {
    key: "window",
    aliases: &[],
    label: "Window",
    help: "Side of the occluding square, in pixels",
    kind: ParamKind::Count { default: 4, min: 1, max: 64 },
};

pub static STRIDE: ParamSpec = ParamSpec {
    key: "stride",
    aliases: &[],
    label: "Stride",
    help: "Pixels between one window and the next",
    kind: ParamKind::Count { default: 2, min: 1, max: 64 },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "occlusion",
    aliases: &[],
    label: "Occlusion",
    title: "Occlusion",
    paper: "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
    family: Family::Perturbation,
    params: &[&WINDOW, &STRIDE, &BASELINE],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| {
        let side = model.spec().dataset.side();
        let o = Occlusion {
            window: s.params.count(&WINDOW),
            stride: s.params.count(&STRIDE),
            baseline: s.params.real(&BASELINE) as f32,
            batch: s.batch,
            side,
        };
        if o.window > side {
            crate::invalid!("an occlusion window of {} pixels does not fit in a {side}×{side} image", o.window);
        }
        Ok(Box::new(o))
    },
};

pub struct Occlusion {
    pub window: usize,
    pub stride: usize,
    pub baseline: f32,
    /// Occluded copies per forward pass.
    pub batch: usize,
    /// The side of the model's images.
    pub side: usize,
}

impl Occlusion {
    /// The windows' top-left corners, row by row.
    pub fn corners(&self, h: usize, w: usize) -> Vec<(usize, usize)> {
        let along = |n: usize| if self.window > n { 0 } else { (n - self.window) / self.stride.max(1) + 1 };
        let s = self.stride.max(1);
        (0..along(h)).flat_map(|i| (0..along(w)).map(move |j| (i * s, j * s))).collect()
    }
}

struct Windows {
    image: Vec<f32>,
    shape: (usize, usize, usize),
    corners: Vec<(usize, usize)>,
    window: usize,
    baseline: f32,
}

impl Windows {
    fn covers(&self, k: usize, p: usize) -> bool {
        let (_, _, w) = self.shape;
        let (y, x) = (p / w, p % w);
        let (cy, cx) = self.corners[k];
        (cy..cy + self.window).contains(&y) && (cx..cx + self.window).contains(&x)
    }
}

impl Design for Windows {
    fn count(&self) -> usize {
        self.corners.len()
    }

    fn write(&self, k: usize, out: &mut [f32]) {
        let (_, h, w) = self.shape;
        perturbation::write_masked(&self.image, h * w, self.baseline, out, |p| !self.covers(k, p));
    }

    fn changed(&self, k: usize) -> Option<Rect> {
        let (y, x) = self.corners[k];
        Some(Rect { y0: y, y1: y + self.window, x0: x, x1: x + self.window })
    }

    /// Each window as (top, bottom, left, right), bottom and right exclusive.
    fn draws(&self) -> Vec<(&'static str, Vec<f32>, Vec<usize>)> {
        let corners =
            self.corners.iter().flat_map(|&(y, x)| [y, y + self.window, x, x + self.window].map(|v| v as f32));
        vec![("windows", corners.collect(), vec![self.corners.len(), 4])]
    }

    fn finish(&self, original: f32, scores: &[f32]) -> Result<Vec<f32>> {
        let (c, h, w) = self.shape;
        let (mut sum, mut count) = (vec![0.0f64; h * w], vec![0u32; h * w]);
        for (k, &(cy, cx)) in self.corners.iter().enumerate() {
            let drop = (original - scores[k]) as f64;
            for y in cy..cy + self.window {
                for x in cx..cx + self.window {
                    sum[y * w + x] += drop;
                    count[y * w + x] += 1;
                }
            }
        }
        let plane: Vec<f32> =
            sum.iter().zip(&count).map(|(s, &n)| if n == 0 { 0.0 } else { (s / n as f64) as f32 }).collect();
        Ok(plane.repeat(c))
    }
}

impl Perturbation for Occlusion {
    fn design(&self, image: &[f32], (c, h, w): (usize, usize, usize)) -> Result<Box<dyn Design>> {
        if self.window > h || self.window > w {
            crate::invalid!("an occlusion window of {} pixels does not fit in a {h}×{w} image", self.window);
        }
        Ok(Box::new(Windows {
            image: image.to_vec(),
            shape: (c, h, w),
            corners: self.corners(h, w),
            window: self.window,
            baseline: self.baseline,
        }))
    }
}

impl Attribution for Occlusion {
    fn name(&self) -> String {
        "Occlusion".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        perturbation::attribute(self, model, x, targets, score, self.batch)
    }

    fn inputs_per_image(&self) -> usize {
        self.corners(self.side, self.side).len()
    }

    fn perturbation(&self) -> Option<&dyn Perturbation> {
        Some(self)
    }
}
