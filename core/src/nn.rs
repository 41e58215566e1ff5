//! Layers with PyTorch's parameter names and default initialisation, running on the kernels of [`crate::ops`].
//!
//! Constructors follow candle-nn's style (`conv2d(in, out, k, pad, vb)`), naming parameters through `vb.pp(..)` so
//! the keys equal the seed's PyTorch `state_dict` keys.

use crate::ops::{self, BatchStats, ReluRule};
use candle_core::{Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};
use std::sync::{Arc, Mutex};

/// How a forward pass runs: training-mode batch statistics or running statistics, and the ReLU backward rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub train: bool,
    pub relu: ReluRule,
}

impl Pass {
    pub const EVAL: Pass = Pass { train: false, relu: ReluRule::Standard };
    pub const TRAIN: Pass = Pass { train: true, relu: ReluRule::Standard };

    pub fn relu(&self, x: &Tensor) -> Result<Tensor> {
        ops::relu(x, self.relu)
    }
}

/// PyTorch's default for conv and linear layers (`kaiming_uniform_(a = √5)` and the matching bias): U(±1/√fan_in).
fn fan_in_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

/// A square-kernel convolution with bias, parameters `weight` (`out×in×k×k`) and `bias`.
pub fn conv2d(in_c: usize, out_c: usize, k: usize, padding: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d_with(in_c, out_c, k, ConvOptions { padding, ..ConvOptions::default() }, vb)
}

/// How a convolution is built: stride, padding, whether it has a bias, and how its weight starts.
#[derive(Clone, Copy, Debug)]
pub struct ConvOptions {
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
    /// `kaiming_normal_` (std √(2/fan_in)) instead of PyTorch's default uniform initialisation.
    pub kaiming_normal: bool,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions { stride: 1, padding: 0, bias: true, kaiming_normal: false }
    }
}

pub fn conv2d_with(in_c: usize, out_c: usize, k: usize, o: ConvOptions, vb: VarBuilder) -> Result<Conv2d> {
    let fan_in = in_c * k * k;
    let init = fan_in_uniform(fan_in);
    let weight_init = if o.kaiming_normal { kaiming_normal(fan_in) } else { init };
    let weight = vb.get_with_hints((out_c, in_c, k, k), "weight", weight_init)?;
    let bias = if o.bias { Some(vb.get_with_hints(out_c, "bias", init)?) } else { None };
    Ok(Conv2d { weight, bias, stride: o.stride, padding: o.padding })
}

/// `torch.nn.init.kaiming_normal_` with its defaults (fan-in, ReLU gain): N(0, 2/fan_in).
fn kaiming_normal(fan_in: usize) -> Init {
    Init::Randn { mean: 0.0, stdev: (2.0 / fan_in as f64).sqrt() }
}

impl Conv2d {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn padding(&self) -> usize {
        self.padding
    }

    pub fn stride(&self) -> usize {
        self.stride
    }
}

#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

/// A fully connected layer, parameters `weight` (`out×in`) and `bias`.
pub fn linear(in_f: usize, out_f: usize, vb: VarBuilder) -> Result<Linear> {
    let init = fan_in_uniform(in_f);
    let bias = Some(vb.get_with_hints(out_f, "bias", init)?);
    Ok(Linear { weight: vb.get_with_hints((out_f, in_f), "weight", init)?, bias })
}

/// A fully connected layer whose weight starts as `kaiming_normal_` (WARN's), with or without a bias.
pub fn linear_kaiming(in_f: usize, out_f: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((out_f, in_f), "weight", kaiming_normal(in_f))?;
    let bias = if bias { Some(vb.get_with_hints(out_f, "bias", fan_in_uniform(in_f))?) } else { None };
    Ok(Linear { weight, bias })
}

impl Linear {
    /// `x·Wᵀ + b` for `x` of shape `N×in`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::matmul_right(x, &self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
    momentum: f64,
}

/// Batch normalisation with PyTorch's defaults (eps 1e-5, momentum 0.1) and keys `weight`, `bias`,
/// `running_mean`, `running_var`.
pub fn batch_norm2d(c: usize, vb: VarBuilder) -> Result<BatchNorm2d> {
    Ok(BatchNorm2d {
        weight: vb.get_with_hints(c, "weight", Init::Const(1.0))?,
        bias: vb.get_with_hints(c, "bias", Init::Const(0.0))?,
        running_mean: vb.get_with_hints(c, "running_mean", Init::Const(0.0))?,
        running_var: vb.get_with_hints(c, "running_var", Init::Const(1.0))?,
        eps: 1e-5,
        momentum: 0.1,
    })
}

/// Names of the tensors that are state, not trainable parameters.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var") || name.ends_with("num_batches_tracked")
}

impl BatchNorm2d {
    /// Batch normalisation of `N×C` features (PyTorch's `BatchNorm1d`), through the same kernels.
    pub fn forward_flat(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let (n, c) = x.dims2()?;
        self.forward(&x.reshape((n, c, 1, 1))?, pass)?.reshape((n, c))
    }

    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        if !pass.train {
            return ops::batch_norm_eval(x, &self.weight, &self.bias, &self.running_mean, &self.running_var, self.eps);
        }
        let stats = Arc::new(Mutex::new(BatchStats::default()));
        let y = ops::batch_norm_train(x, &self.weight, &self.bias, self.eps, &stats)?;
        let stats = stats.lock().expect("batch-norm stats lock").clone();
        self.update_running(&stats)?;
        Ok(y)
    }

    /// The scale γ.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift β.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The convolution `conv` followed by this normalisation in evaluation mode, as one convolution:
    /// `W' = W·s`, `b' = (b − μ)·s + β` with `s = γ/√(σ² + ε)` per output channel.
    pub fn fold_into(&self, conv: &Conv2d) -> Result<Conv2d> {
        let scale = (&self.weight / (&self.running_var + self.eps)?.sqrt()?)?;
        let o = scale.dim(0)?;
        let weight = conv.weight.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
        let bias = match &conv.bias {
            Some(b) => (b - &self.running_mean)?,
            None => self.running_mean.neg()?,
        };
        let bias = ((bias * &scale)? + &self.bias)?;
        Ok(Conv2d { weight, bias: Some(bias), stride: conv.stride, padding: conv.padding })
    }

    /// `running = (1 − momentum)·running + momentum·batch`, with the unbiased batch variance, as PyTorch does.
    /// Only has an effect when the running statistics are variables (a model being trained).
    pub(crate) fn update_running(&self, stats: &BatchStats) -> Result<()> {
        if !self.running_mean.is_variable() {
            return Ok(());
        }
        let m = self.momentum;
        let unbias = stats.count as f64 / (stats.count.max(2) - 1) as f64;
        let dev = self.running_mean.device();
        let batch_mean = Tensor::from_slice(&stats.mean, stats.mean.len(), dev)?;
        let batch_var = Tensor::from_slice(&stats.var, stats.var.len(), dev)?;
        let mean = ((self.running_mean.detach() * (1.0 - m))? + (batch_mean * m)?)?;
        let var = ((self.running_var.detach() * (1.0 - m))? + (batch_var * (m * unbias))?)?;
        Var::from_tensor(&self.running_mean)?.set(&mean)?;
        Var::from_tensor(&self.running_var)?.set(&var)?;
        Ok(())
    }
}

/// Mean over the spatial dimensions: `N×C×H×W → N×C`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}

/// Maximum over the spatial dimensions: `N×C×H×W → N×C`, the gradient going to the first maximum.
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    ops::max_over(&x.flatten_from(2)?, 2)
}
