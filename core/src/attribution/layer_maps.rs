//! Maps computed on a feature layer and up-sampled to the input:
//! - Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_k α_k A^k) with α_k the spatial mean of ∂S_c/∂A^k;
//! - Guided Grad-CAM (same paper): Guided Backpropagation ⊙ Grad-CAM (nearest up-sampling, as Captum);
//! - CAM (Zhou et al. 2016): Σ_k w_{c,k} A^k for models whose head is global average pooling + linear;
//! - ConvOutput, the seed's control: the channel mean of a layer's feature maps.
//!
//! Coarse maps are up-sampled bilinearly (Captum's `LayerAttribution.interpolate`) and repeated over the input's
//! channels, so every map has the input's shape.

use super::{input_gradient, layer_gradient, resize, Attribution, Interpolation, Score};
use crate::models::Classifier;
use crate::nn::Pass;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

/// `N×1×h×w` → `N×C×H×W` of the input `x`.
fn to_input(map: &Tensor, x: &Tensor, mode: Interpolation) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let up = resize(map, h, w, mode)?;
    Ok(up.repeat((1, c, 1, 1))?)
}

/// The Grad-CAM map at `layer`, before up-sampling (`N×1×h×w`), from the engine's buffers when the model has an
/// engine, else from autograd.
fn grad_cam_coarse(model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score, layer: usize) -> Result<Tensor> {
    let n = x.dim(0)?;
    let (act, grad, (c, h, w)) = match model.engine() {
        Some(engine) => {
            let g = engine.gradient(
                &x.flatten_all()?.to_vec1::<f32>()?,
                n,
                targets,
                score,
                ReluRule::Standard,
                Some(layer),
            )?;
            (g.activation.expect("a layer was asked for"), g.grad, engine.layer_shape(layer))
        }
        None => {
            let (act, grad) = layer_gradient(model, x, targets, score, ReluRule::Standard, layer)?;
            let (_, c, h, w) = act.dims4()?;
            (act.flatten_all()?.to_vec1::<f32>()?, grad.flatten_all()?.to_vec1::<f32>()?, (c, h, w))
        }
    };
    Ok(Tensor::from_vec(grad_cam_formula(&act, &grad, c, h * w), (n, 1, h, w), x.device())?)
}

/// ReLU(Σ_k α_k A^k) with α_k the spatial mean of ∂S/∂A^k, over images of `c` planes of `hw` values each.
fn grad_cam_formula(act: &[f32], grad: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let n = act.len() / (c * hw);
    let mut map = vec![0f32; n * hw];
    for (i, m) in map.chunks_mut(hw).enumerate() {
        for k in 0..c {
            let plane = (i * c + k) * hw;
            let alpha = grad[plane..plane + hw].iter().sum::<f32>() / hw as f32;
            m.iter_mut().zip(&act[plane..plane + hw]).for_each(|(v, a)| *v += alpha * a);
        }
        m.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    map
}

fn activation(model: &dyn Classifier, x: &Tensor, layer: usize) -> Result<Tensor> {
    if layer >= model.tap_points() {
        crate::invalid!("layer {layer} does not exist (the model has features 0..{})", model.tap_points());
    }
    if let Some(engine) = model.engine() {
        let n = x.dim(0)?;
        let (c, h, w) = engine.layer_shape(layer);
        return Ok(Tensor::from_vec(
            engine.activation(&x.flatten_all()?.to_vec1::<f32>()?, n, layer)?,
            (n, c, h, w),
            x.device(),
        )?);
    }
    let (_, tapped) = model.forward_tapped(x, &Pass::EVAL, Some(layer))?;
    Ok(tapped.expect("a tapped layer was asked for").activation)
}

pub struct GradCam {
    pub layer: usize,
}

impl Attribution for GradCam {
    fn name(&self) -> String {
        "GC".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        to_input(&grad_cam_coarse(model, x, targets, score, self.layer)?, x, Interpolation::Bilinear)
    }
}

pub struct GuidedGradCam {
    pub layer: usize,
    pub interpolation: Interpolation,
}

impl Attribution for GuidedGradCam {
    fn name(&self) -> String {
        "GB-GC".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        let cam = to_input(&grad_cam_coarse(model, x, targets, score, self.layer)?, x, self.interpolation)?;
        let guided = input_gradient(model, x, targets, score, ReluRule::Guided)?;
        Ok((guided * cam)?)
    }
}

pub struct Cam;

impl Attribution for Cam {
    fn name(&self) -> String {
        "CAM".into()
    }

    /// Needs a model with a CAM head; the score setting does not apply (CAM reads the head's weights).
    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], _score: Score) -> Result<Tensor> {
        let Some(head) = model.cam_head() else {
            crate::invalid!(
                "CAM needs a model with a CAM head (global average pooling + linear), not {}",
                model.spec().arch
            );
        };
        let act = activation(model, x, model.last_feature_index())?;
        let idx = Tensor::from_slice(targets, targets.len(), x.device())?;
        let w = head.weight().index_select(&idx, 0)?; // N×K
        let (n, k) = w.dims2()?;
        let map = act.broadcast_mul(&w.reshape((n, k, 1, 1))?)?.sum_keepdim(1)?;
        to_input(&map, x, Interpolation::Bilinear)
    }
}

pub struct ConvOutput {
    pub layer: usize,
}

impl Attribution for ConvOutput {
    fn name(&self) -> String {
        "CO".into()
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, _targets: &[u32], _score: Score) -> Result<Tensor> {
        let map = activation(model, x, self.layer)?.mean_keepdim(1)?;
        to_input(&map, x, Interpolation::Bilinear)
    }
}
