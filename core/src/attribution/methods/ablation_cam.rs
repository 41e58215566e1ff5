//! Ablation-CAM (Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
//! Gradient-free Localization"): each channel k of a layer is set to zero and the network run on from the layer;
//! the drop of the target's logit, w_k = (S − S_k)/S, weighs the channel in ReLU(Σ_k w_k A^k). No gradient: one
//! forward pass from the layer per channel and image, in batches of at most `batch` — as pytorch-grad-cam's
//! `AblationCAM` computes it at a ReLU layer, except that whitebox runs only the layers after the ablated one. (Where
//! a layer has negative values the library ablates with min − 1e7 instead of zero, growing with the position in its
//! batch; whitebox keeps the paper's zero everywhere.)

use crate::attribution::class_activation::weighted_sum;
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::attribution::{check_targets, layer_activation, to_input, Attribution, Interpolation, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "ablationcam",
    aliases: &["ablation-cam"],
    label: "AblationCAM",
    title: "Ablation-CAM",
    paper: "Desai & Ramaswamy 2020, Ablation-CAM: Visual Explanations for Deep Convolutional Network via \
            Gradient-free Localization",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Graph,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| {
        Ok(Box::new(AblationCam {
            layer: s.params.layer(&LAYER).unwrap_or(model.default_gradcam_layer()),
            batch: s.batch,
        }))
    },
};

pub struct AblationCam {
    pub layer: usize,
    /// Ablated copies per forward pass.
    pub batch: usize,
}

impl AblationCam {
    /// The ReLU'd map at the layer, before up-sampling (`N×1×h×w`), for the targets' logits.
    pub fn coarse(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let (n, c_in, height, width) = x.dims4()?;
        check_targets(model, n, targets)?;
        let Some(engine) = model.propagator() else {
            crate::invalid!("Ablation-CAM needs the graph executor (constant weights on the CPU)");
        };
        let act = layer_activation(model, x, self.layer)?;
        let (_, c, h, w) = act.dims4()?;
        let act = act.flatten_all()?.to_vec1::<f32>()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        // The scores without ablation from the same activations as the ablated ones, so that S − S_k is the
        // ablation's effect alone (where the activations come from another engine, a GPU's, they differ in the last
        // bits from a forward pass on this one).
        let logits = engine.forward_from(&xs, n, self.layer, &act)?;
        let classes = logits.len() / n.max(1);
        let (per_x, per, hw) = (c_in * height * width, c * h * w, h * w);
        let batch = self.batch.max(1);
        let mut maps = Vec::with_capacity(n * hw);
        for i in 0..n {
            let t = targets[i] as usize;
            let original = logits[i * classes + t];
            if original == 0.0 || !original.is_finite() {
                crate::invalid!("Ablation-CAM divides by the target's logit, which is {original} for image {i}");
            }
            // The image once per ablated copy of a full batch (the last batch takes a prefix).
            let copies = xs[i * per_x..(i + 1) * per_x].repeat(batch.min(c));
            let a = &act[i * per..(i + 1) * per];
            let mut weights = Vec::with_capacity(c);
            for start in (0..c).step_by(batch) {
                let len = batch.min(c - start);
                let mut ablated = Vec::with_capacity(len * per);
                for k in start..start + len {
                    let from = ablated.len();
                    ablated.extend_from_slice(a);
                    ablated[from + k * hw..from + (k + 1) * hw].fill(0.0);
                }
                let out = engine.forward_from(&copies[..len * per_x], len, self.layer, &ablated)?;
                let per_out = out.len() / len;
                weights.extend((0..len).map(|j| ((original - out[j * per_out + t]) / original) as f64));
            }
            maps.extend(weighted_sum(a, &weights, hw).into_iter().map(|v| v.max(0.0)));
        }
        Ok(Tensor::from_vec(maps, (n, 1, h, w), x.device())?)
    }
}

impl Attribution for AblationCam {
    fn name(&self) -> String {
        "AblationCAM".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], _score: Score) -> Result<Tensor> {
        to_input(&self.coarse(model, x, targets)?, x, Interpolation::Bilinear)
    }
}
