//! Convolutional Block Attention Module (Woo, Park, Lee & Kweon 2018), as the seed defines it: channel attention
//! (average- and max-pooled descriptors through one shared MLP with reduction 16, summed, sigmoid) followed by
//! spatial attention (7×7 convolution over the channel-wise max and mean, BatchNorm, ReLU, sigmoid).
//!
//! The seed's spatial branch has a ReLU before the sigmoid (so the spatial gate is at least 0.5); it is kept so
//! that weights move between the seed and whitebox unchanged.

use crate::graph::{Builder, Conv as GraphConv, NodeId, Scope};
use crate::nn::{self, BatchNorm2d, Conv2d, Linear, Pass};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct Cbam {
    pub(crate) mlp_in: Linear,
    pub(crate) mlp_out: Linear,
    pub(crate) spatial_conv: Conv2d,
    pub(crate) spatial_bn: BatchNorm2d,
}

/// Keys: `CA.mlp.0`, `CA.mlp.2`, `SA.conv_block.0`, `SA.conv_block.1`.
pub fn cbam(channels: usize, vb: VarBuilder) -> Result<Cbam> {
    let hidden = channels / 16;
    let ca = vb.pp("CA").pp("mlp");
    let sa = vb.pp("SA").pp("conv_block");
    Ok(Cbam {
        mlp_in: nn::linear(channels, hidden, ca.pp(0))?,
        mlp_out: nn::linear(hidden, channels, ca.pp(2))?,
        spatial_conv: nn::conv2d(2, 1, 7, 3, sa.pp(0))?,
        spatial_bn: nn::batch_norm2d(1, sa.pp(1))?,
    })
}

impl Cbam {
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let mlp = |v: &Tensor| self.mlp_out.forward(&pass.relu(&self.mlp_in.forward(v)?)?);
        let channel_logits = (mlp(&nn::global_avg_pool(x)?)? + mlp(&nn::global_max_pool(x)?)?)?;
        let channel_gate = candle_nn::ops::sigmoid(&channel_logits)?.reshape((n, c, 1, 1))?;
        let x = x.broadcast_mul(&channel_gate)?;
        let pooled = Tensor::cat(&[crate::ops::max_over(&x, 1)?.unsqueeze(1)?, x.mean_keepdim(1)?], 1)?;
        let spatial = self.spatial_bn.forward(&self.spatial_conv.forward(&pooled)?, pass)?;
        let spatial_gate = candle_nn::ops::sigmoid(&pass.relu(&spatial)?)?;
        x.broadcast_mul(&spatial_gate)
    }
}

/// CBAM on `x` as graph layers, with the candle module's parameter names under `scope`.
pub(crate) fn graph(g: &mut Builder, x: NodeId, scope: &Scope) -> crate::Result<NodeId> {
    let c = g.shape(x).0;
    let mlp = scope.at("CA").at("mlp");
    let branch = |g: &mut Builder, v: NodeId| -> crate::Result<NodeId> {
        let hidden = g.linear(v, &mlp.at(0), c / 16, true)?;
        let hidden = g.relu(hidden);
        g.linear(hidden, &mlp.at(2), c, true)
    };
    let (avg, max) = (g.global_avg_pool(x), g.global_max_pool(x));
    let (a, m) = (branch(g, avg)?, branch(g, max)?);
    let logits = g.add(a, m)?;
    let gate = g.sigmoid(logits);
    let x1 = g.mul(x, gate)?;
    let (cmax, cmean) = (g.channel_max(x1), g.channel_mean(x1));
    let pooled = g.concat(&[cmax, cmean])?;
    let sa = scope.at("SA").at("conv_block");
    let s = g.conv(pooled, &sa.at(0), GraphConv::new(1, 7, 3))?;
    let s = g.batch_norm(s, &sa.at(1))?;
    let s = g.relu(s);
    let spatial = g.sigmoid(s);
    g.mul(x1, spatial)
}
