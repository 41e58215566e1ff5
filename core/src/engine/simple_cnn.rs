//! The SimpleCNN family's own fast paths, kept until the graph executor is as fast: the fused evaluation plan
//! (`cpu.rs`) built from the model's parameters, and the glue of the hand-written training step (`cnn_step.rs`) for
//! SimpleCNN and CAM. The model itself (`models/simple_cnn.rs`) knows nothing of either.

use super::cnn_step::{Block, Head, Net, Values, Workspace};
use super::cpu::{CbamParams, Layer, Plan};
use crate::graph::Gradients;
use crate::models::cbam::Cbam;
use crate::models::simple_cnn::SimpleCnn;
use crate::models::{Classifier, TrainingStep};
use crate::nn::Linear;
use crate::ops::{self, BatchStats};
use candle_core::{Storage, Tensor};
use std::sync::Mutex;

/// A tensor's values as `f32`, in order.
fn flat(t: &Tensor) -> Option<Vec<f32>> {
    t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F32)).and_then(|t| t.to_vec1::<f32>()).ok()
}

/// The evaluation-mode plan of a SimpleCNN-family model: not for weights being trained (variables) or off the CPU.
pub(super) fn plan(m: &SimpleCnn) -> Option<Plan> {
    let weight = m.convs[0].weight();
    if weight.is_variable() || !weight.device().is_cpu() {
        return None;
    }
    let mut layers = Vec::new();
    let mut taps = Vec::new();
    for (i, (conv, bn)) in m.convs.iter().zip(&m.bns).enumerate() {
        let (c_out, c_in, k, _) = conv.weight().dims4().ok()?;
        if conv.stride() != 1 {
            return None;
        }
        let bias = match conv.bias() {
            Some(b) => flat(b)?,
            None => vec![0.0; c_out],
        };
        layers.push(Layer::Conv { weight: flat(conv.weight())?, bias, c_in, c_out, k, pad: conv.padding() });
        taps.push(layers.len() - 1);
        if let Some(cbam) = m.cbams.get(i) {
            layers.push(Layer::Cbam(Box::new(cbam_params(cbam)?)));
        }
        let (scale, shift) = bn.eval_affine().ok()?;
        for layer in [Layer::Affine { scale: flat(&scale)?, shift: flat(&shift)? }, Layer::Relu, Layer::MaxPool2] {
            layers.push(layer);
            taps.push(layers.len() - 1);
        }
    }
    let linear = |l: &Linear| -> Option<Layer> {
        let (out, inp) = l.weight().dims2().ok()?;
        Some(Layer::Linear { weight: flat(l.weight())?, bias: flat(l.bias()?)?, inp, out })
    };
    match m.cam_head() {
        Some(head) => {
            layers.push(Layer::GlobalAvgPool);
            layers.push(linear(head)?);
        }
        None => {
            layers.push(linear(&m.fc1)?);
            layers.push(Layer::Relu);
            layers.push(linear(&m.fc2)?);
        }
    }
    let kind = m.spec.dataset;
    Plan::new((kind.channels(), kind.side(), kind.side()), layers, taps).ok()
}

/// A CBAM module's parameters as the evaluation-mode plan takes them.
fn cbam_params(c: &Cbam) -> Option<CbamParams> {
    let (hidden, _) = c.mlp_in.weight().dims2().ok()?;
    let (_, _, k, _) = c.spatial_conv.weight().dims4().ok()?;
    let (scale, shift) = c.spatial_bn.eval_affine().ok()?;
    Some(CbamParams {
        w1: flat(c.mlp_in.weight())?,
        b1: flat(c.mlp_in.bias()?)?,
        w2: flat(c.mlp_out.weight())?,
        b2: flat(c.mlp_out.bias()?)?,
        hidden,
        conv: flat(c.spatial_conv.weight())?,
        conv_bias: flat(c.spatial_conv.bias()?)?[0],
        k,
        scale: flat(&scale)?[0],
        shift: flat(&shift)?[0],
    })
}

/// The tensors the training step reads, in the order [`step_net`] takes their values: per block the
/// convolution's weight and bias (when it has one) and the BatchNorm's weight and bias, then the head's weights and
/// biases.
fn step_tensors(m: &SimpleCnn) -> Vec<&Tensor> {
    let mut out = Vec::new();
    for (conv, bn) in m.convs.iter().zip(&m.bns) {
        out.push(conv.weight());
        out.extend(conv.bias());
        out.extend([bn.weight(), bn.bias()]);
    }
    for layer in step_head(m) {
        out.push(layer.weight());
        out.extend(layer.bias());
    }
    out
}

/// The linear layers of the head the training step runs.
fn step_head(m: &SimpleCnn) -> Vec<&Linear> {
    match m.cam_head() {
        Some(h) => vec![h],
        None => vec![&m.fc1, &m.fc2],
    }
}

/// The network of the training step (SimpleCNN and CAM; CBAM has no such step) on `values`, the contents of
/// [`step_tensors`] in order.
fn step_net<'a>(m: &SimpleCnn, values: &[&'a [f32]]) -> crate::Result<Net<'a>> {
    let mut values = values.iter().map(|&v| Values::Borrowed(v));
    let mut next =
        || values.next().ok_or_else(|| crate::Error::InvalidArgument("training step: too few parameters".into()));
    let mut blocks = Vec::with_capacity(m.convs.len());
    for (conv, bn) in m.convs.iter().zip(&m.bns) {
        let (c_out, c_in, k, _) = conv.weight().dims4()?;
        let weight = next()?;
        let bias = if conv.bias().is_some() { next()? } else { Values::Owned(vec![0.0; c_out]) };
        let (gamma, beta) = (next()?, next()?);
        blocks.push(Block { weight, bias, gamma, beta, c_in, c_out, k, pad: conv.padding(), eps: bn.eps() as f32 });
    }
    let mut linear = |l: &Linear| -> crate::Result<(Values<'a>, Values<'a>)> {
        let w = next()?;
        let b = if l.bias().is_some() { next()? } else { Values::Owned(vec![0.0; l.weight().dim(0)?]) };
        Ok((w, b))
    };
    let head = match m.cam_head() {
        Some(h) => {
            let (w, b) = linear(h)?;
            Head::Cam { w, b }
        }
        None => {
            let ((w1, b1), (w2, b2)) = (linear(&m.fc1)?, linear(&m.fc2)?);
            Head::Mlp { w1, b1, w2, b2 }
        }
    };
    let kind = m.spec.dataset;
    Ok(Net { blocks, head, input: (kind.channels(), kind.side(), kind.side()), classes: kind.num_classes() })
}

/// The training step of SimpleCNN and CAM on the CPU's own buffers (`cnn_step.rs`).
pub(super) fn buffer_step(
    m: &SimpleCnn,
    workspace: &Mutex<Workspace>,
    x: &Tensor,
    labels: &Tensor,
) -> crate::Result<TrainingStep> {
    crate::models::check_input(m.spec, x)?;
    let n = x.dim(0)?;
    let mut workspace =
        workspace.lock().map_err(|_| crate::Error::InvalidArgument("an earlier training step panicked".into()))?;
    // The parameters are read in place (a read lock on each tensor's storage for the step's duration).
    let tensors = step_tensors(m);
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let values = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(cpu) => Ok(ops::slice_f32(cpu, layout)?),
            _ => Err(crate::Error::InvalidArgument("training step: parameters must be on the CPU".into())),
        })
        .collect::<crate::Result<Vec<&[f32]>>>()?;
    let step = step_net(m, &values)?.step(
        &x.flatten_all()?.to_vec1::<f32>()?,
        &labels.to_vec1::<u32>()?,
        n,
        &mut workspace,
    )?;
    drop(guards);
    let dev = x.device();
    let mut grads = Gradients::default();
    let mut put = |param: Option<&Tensor>, grad: Vec<f32>| -> crate::Result<()> {
        if let Some(p) = param {
            grads.insert(p, Tensor::from_vec(grad, p.shape(), dev)?);
        }
        Ok(())
    };
    for ((conv, bn), g) in m.convs.iter().zip(&m.bns).zip(step.blocks) {
        put(Some(conv.weight()), g.weight)?;
        put(conv.bias(), g.bias)?;
        put(Some(bn.weight()), g.gamma)?;
        put(Some(bn.bias()), g.beta)?;
        bn.update_running(&BatchStats { mean: g.batch_mean, var: g.batch_var, count: g.count })?;
    }
    let mut head_grads = step.head.into_iter();
    for layer in step_head(m) {
        let (w, b) = (head_grads.next(), head_grads.next());
        put(Some(layer.weight()), w.unwrap_or_default())?;
        put(layer.bias(), b.unwrap_or_default())?;
    }
    let logits = Tensor::from_vec(step.logits, (n, m.spec.dataset.num_classes()), dev)?;
    Ok(TrainingStep { logits, loss: step.loss, grads })
}
