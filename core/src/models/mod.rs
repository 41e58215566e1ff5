//! The model zoo. Each architecture is defined once, here, and used by training, the CLI and the browser.

mod cbam;
mod simple_cnn;

pub use cbam::{cbam, Cbam};
pub use simple_cnn::{simple_cnn, SimpleCnn};

use crate::data::DatasetKind;
use crate::nn::Pass;
use crate::{Error, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// The architectures whitebox defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    SimpleCnn,
    Cam,
    Cbam,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::SimpleCnn, Arch::Cam, Arch::Cbam];

    pub fn name(self) -> &'static str {
        match self {
            Arch::SimpleCnn => "simple-cnn",
            Arch::Cam => "cam",
            Arch::Cbam => "cbam",
        }
    }

    /// The seed's name for the architecture, as in its result tables.
    pub fn title(self) -> &'static str {
        match self {
            Arch::SimpleCnn => "Simple CNN",
            Arch::Cam => "Simple CNN + CAM",
            Arch::Cbam => "Simple CNN + CBAM",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "simple-cnn" | "simplecnn" | "cnn" => Ok(Arch::SimpleCnn),
            "cam" => Ok(Arch::Cam),
            "cbam" => Ok(Arch::Cbam),
            other => Err(Error::InvalidArgument(format!("unknown model '{other}' (expected simple-cnn, cam or cbam)"))),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An architecture for a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub dataset: DatasetKind,
}

/// An intermediate activation captured during a forward pass, with the zero "probe" variable that was added to it:
/// the gradient of any output with respect to `probe` is its gradient with respect to the activation.
#[derive(Clone, Debug)]
pub struct Tapped {
    pub activation: Tensor,
    pub probe: Var,
}

/// An image classifier: input batch `N×C×H×W` (normalised) → logits `N×classes`.
pub trait Classifier: Send + Sync {
    fn spec(&self) -> ModelSpec;

    /// Number of blocks whose output can be tapped (`0..blocks()`).
    fn blocks(&self) -> usize;

    /// The logits, and the output of block `tap` when asked for.
    fn forward_tapped(&self, x: &Tensor, pass: &Pass, tap: Option<usize>) -> candle_core::Result<(Tensor, Option<Tapped>)>;

    fn forward(&self, x: &Tensor, pass: &Pass) -> candle_core::Result<Tensor> {
        Ok(self.forward_tapped(x, pass, None)?.0)
    }
}

/// Builds the model of `spec` with parameters from `vb` (a checkpoint, or a seeded initialiser for training).
pub fn build(spec: ModelSpec, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
    Ok(match spec.arch {
        Arch::SimpleCnn | Arch::Cam | Arch::Cbam => Box::new(simple_cnn(spec, vb)?),
    })
}

fn check_input(spec: ModelSpec, x: &Tensor) -> candle_core::Result<()> {
    let (c, s) = (spec.dataset.channels(), spec.dataset.side());
    match x.dims() {
        &[_, xc, xh, xw] if (xc, xh, xw) == (c, s, s) => Ok(()),
        d => candle_core::bail!("{} for {} expects N×{c}×{s}×{s} input, got {d:?}", spec.arch, spec.dataset),
    }
}
