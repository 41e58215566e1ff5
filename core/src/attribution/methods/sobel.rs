//! The Sobel edge magnitude of the image, the ROAR paper's edge-detector baseline (Hooker et al. 2019): a map that
//! uses no model.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "sobel",
    aliases: &[],
    label: "Sobel",
    title: "Sobel edges",
    paper: "Hooker et al. 2019, A Benchmark for Interpretability Methods in Deep Neural Networks",
    family: Family::Control,
    params: &[],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |_: &Settings, _: &dyn Classifier| Ok(Box::new(Sobel)),
};

pub struct Sobel;

impl Attribution for Sobel {
    fn name(&self) -> String {
        "Sobel".into()
    }

    /// √(G_x² + G_y²) per channel, with the 3×3 Sobel kernels and zero padding.
    fn attribute(&self, _model: &dyn Classifier, x: &Tensor, _targets: &[u32], _score: Score) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let kx = Tensor::new(&[[-1f32, 0., 1.], [-2., 0., 2.], [-1., 0., 1.]], x.device())?;
        let ky = kx.t()?.contiguous()?;
        let planes = x.reshape((n * c, 1, h, w))?;
        let gx = crate::ops::conv2d(&planes, &kx.reshape((1, 1, 3, 3))?, None, 1, 1)?;
        let gy = crate::ops::conv2d(&planes, &ky.reshape((1, 1, 3, 3))?, None, 1, 1)?;
        Ok((gx.sqr()? + gy.sqr()?)?.sqrt()?.reshape((n, c, h, w))?)
    }
}
