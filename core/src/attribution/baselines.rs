//! Controls that use no model: a random map (the ROAR paper's random baseline; Hooker et al. 2019) and the Sobel
//! edge magnitude of the image (the ROAR paper's edge-detector baseline).

use super::{Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;
use rand::{Rng, SeedableRng};

pub struct RandomMap {
    pub seed: u64,
}

impl Attribution for RandomMap {
    fn name(&self) -> String {
        "Random".into()
    }

    /// Uniform values in [0, 1), the same for the same seed and shape.
    fn attribute(&self, _model: &dyn Classifier, x: &Tensor, _targets: &[u32], _score: Score) -> Result<Tensor> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let v: Vec<f32> = (0..x.elem_count()).map(|_| rng.random::<f32>()).collect();
        Ok(Tensor::from_vec(v, x.shape(), x.device())?)
    }
}

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
