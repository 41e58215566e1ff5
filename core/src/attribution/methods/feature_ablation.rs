//! Feature ablation (Captum's `FeatureAblation`; the leave-one-out attribution of Zeiler & Fergus 2014 and
//! Zintgraf et al. 2017 over groups of pixels): each feature (a patch, a pixel or a superpixel, every channel at
//! once) is set to the baseline value in turn; its pixels' attribution is the drop of the target's score,
//! S(x) − S(x without the feature).

use crate::attribution::perturbation::{self, Design, Features, Perturbation, BASELINE, FEATURES, PATCH};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{Attribution, Score};
use crate::engine::Rect;
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "ablation",
    aliases: &["feature-ablation", "featureablation"],
    label: "Ablation",
    title: "Feature ablation",
    paper: "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks (Captum's FeatureAblation)",
    family: Family::Perturbation,
    params: &[&FEATURES, &PATCH, &BASELINE],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| {
        let side = model.spec().dataset.side();
        Ok(Box::new(FeatureAblation {
            settings: s.clone(),
            baseline: s.params.real(&BASELINE) as f32,
            features: None,
            side,
        }))
    },
};

pub struct FeatureAblation {
    /// Where the features come from (`features`, `patch`) and the batch of ablated copies per forward pass.
    pub settings: Settings,
    pub baseline: f32,
    /// Features given instead of drawn from the settings (a feature mask of the caller's).
    pub features: Option<Features>,
    /// The side of the model's images.
    pub side: usize,
}

struct Ablated {
    image: Vec<f32>,
    shape: (usize, usize, usize),
    features: Features,
    baseline: f32,
    /// Each feature's bounding box.
    boxes: Vec<Rect>,
}

impl Design for Ablated {
    fn count(&self) -> usize {
        self.features.count
    }

    fn write(&self, k: usize, out: &mut [f32]) {
        let (_, h, w) = self.shape;
        perturbation::write_masked(&self.image, h * w, self.baseline, out, |p| self.features.labels[p] != k as u32);
    }

    fn changed(&self, k: usize) -> Option<Rect> {
        Some(self.boxes[k])
    }

    fn draws(&self) -> Vec<(&'static str, Vec<f32>, Vec<usize>)> {
        let (_, h, w) = self.shape;
        vec![("features", self.features.labels.iter().map(|&l| l as f32).collect(), vec![h, w])]
    }

    fn finish(&self, original: f32, scores: &[f32]) -> Result<Vec<f32>> {
        let (c, _, _) = self.shape;
        let plane: Vec<f32> = self.features.labels.iter().map(|&l| original - scores[l as usize]).collect();
        Ok(plane.repeat(c))
    }
}

impl Perturbation for FeatureAblation {
    fn design(&self, image: &[f32], shape: (usize, usize, usize)) -> Result<Box<dyn Design>> {
        let features = match &self.features {
            Some(f) if f.labels.len() == shape.1 * shape.2 => f.clone(),
            Some(f) => {
                crate::invalid!("the feature mask has {} labels for {}×{} pixels", f.labels.len(), shape.1, shape.2)
            }
            None => Features::of(&self.settings, image, shape)?,
        };
        let (_, h, w) = shape;
        let mut boxes = vec![Rect { y0: h, y1: 0, x0: w, x1: 0 }; features.count];
        for (p, &l) in features.labels.iter().enumerate() {
            let (y, x, b) = (p / w, p % w, &mut boxes[l as usize]);
            (b.y0, b.y1, b.x0, b.x1) = (b.y0.min(y), b.y1.max(y + 1), b.x0.min(x), b.x1.max(x + 1));
        }
        Ok(Box::new(Ablated { image: image.to_vec(), shape, features, baseline: self.baseline, boxes }))
    }
}

impl Attribution for FeatureAblation {
    fn name(&self) -> String {
        "Feature ablation".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        perturbation::attribute(self, model, x, targets, score, self.settings.batch)
    }

    fn inputs_per_image(&self) -> usize {
        match &self.features {
            Some(f) => f.count,
            None => Features::count_of(&self.settings, (self.side, self.side)),
        }
    }

    fn perturbation(&self) -> Option<&dyn Perturbation> {
        Some(self)
    }
}
