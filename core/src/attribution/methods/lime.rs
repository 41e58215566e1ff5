//! LIME (Ribeiro et al. 2016, "'Why Should I Trust You?': Explaining the Predictions of Any Classifier"): a linear
//! surrogate of the target's score over the features (patches, pixels or superpixels), fitted to random
//! perturbations near the image, as Captum's `Lime` computes it: each feature kept with probability ½, each sample
//! weighed by exp(−d²/2w²) with d the cosine distance of the perturbed input from the image; the surrogate is a
//! weighted ridge regression with intercept (LIME's own; Captum's default surrogate is a Lasso, whose solution
//! depends on its solver's stopping rule).

use crate::attribution::perturbation::{
    self, Design, Features, Perturbation, Surrogate, Weighing, BASELINE, FEATURES, PATCH, PERTURBATIONS,
};
use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;
use rand::Rng;

pub static KERNEL_WIDTH: ParamSpec = ParamSpec {
    key: "kernel-width",
    aliases: &[],
    label: "Kernel width",
    help: "Width w of LIME's similarity kernel exp(−d²/2w²) over the cosine distance d",
    kind: ParamKind::Real { default: 1.0, min: 1e-3, max: 100.0 },
};

pub static RIDGE: ParamSpec = ParamSpec {
    key: "ridge",
    aliases: &[],
    label: "Ridge penalty",
    help: "The surrogate's ridge penalty α (0: weighted least squares)",
    kind: ParamKind::Real { default: 1.0, min: 0.0, max: 1e6 },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "lime",
    aliases: &[],
    label: "LIME",
    title: "LIME",
    paper: "Ribeiro et al. 2016, \"Why Should I Trust You?\": Explaining the Predictions of Any Classifier",
    family: Family::Perturbation,
    params: &[&PERTURBATIONS, &FEATURES, &PATCH, &BASELINE, &KERNEL_WIDTH, &RIDGE],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| Ok(Box::new(Lime { settings: s.clone(), given: None })),
};

pub struct Lime {
    /// The samples (`perturbations`), the features, the baseline, the kernel, the penalty, the seed and the batch.
    pub settings: Settings,
    /// Features and samples (rows of 0/1) given instead of drawn, for comparisons with a reference.
    pub given: Option<(Features, Vec<u8>)>,
}

impl Lime {
    /// `count` samples of `m` features drawn from `seed`: each feature kept with probability ½.
    pub fn samples(m: usize, count: usize, seed: u64) -> Vec<u8> {
        let mut rng = perturbation::rng(seed);
        (0..m * count).map(|_| rng.random::<bool>() as u8).collect()
    }
}

impl Perturbation for Lime {
    fn design(&self, image: &[f32], shape: (usize, usize, usize)) -> Result<Box<dyn Design>> {
        let (features, samples) =
            perturbation::surrogate_samples(&self.given, &self.settings, image, shape, |m, k, seed| {
                Ok(Self::samples(m, k, seed))
            })?;
        Ok(Box::new(Surrogate {
            image: image.to_vec(),
            shape,
            features,
            samples,
            baseline: self.settings.params.real(&BASELINE) as f32,
            weighing: Weighing::Cosine { width: self.settings.params.real(&KERNEL_WIDTH) },
            ridge: self.settings.params.real(&RIDGE),
        }))
    }
}

impl Attribution for Lime {
    fn name(&self) -> String {
        "LIME".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        perturbation::attribute(self, model, x, targets, score, self.settings.batch)
    }

    fn inputs_per_image(&self) -> usize {
        perturbation::surrogate_count(&self.given, &self.settings)
    }

    fn perturbation(&self) -> Option<&dyn Perturbation> {
        Some(self)
    }
}
