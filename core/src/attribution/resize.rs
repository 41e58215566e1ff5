//! Up-sampling of coarse maps to the input size with PyTorch's `F.interpolate` semantics: `align_corners=False`
//! as Captum's `LayerAttribution.interpolate`, and `align_corners=True` as `nn.UpsamplingBilinear2d` (Score-CAM's
//! masks in pytorch-grad-cam).

use candle_core::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Nearest,
    Bilinear,
    /// Bilinear with the corners of input and output aligned (`align_corners=True`).
    BilinearAligned,
}

/// Source coordinate and weights along one axis for bilinear interpolation.
fn bilinear_axis(out: usize, inp: usize, aligned: bool) -> Vec<(usize, usize, f32)> {
    let scale = inp as f32 / out as f32;
    let aligned_scale = if out > 1 { (inp - 1) as f32 / (out - 1) as f32 } else { 0.0 };
    (0..out)
        .map(|o| {
            let src = if aligned { o as f32 * aligned_scale } else { ((o as f32 + 0.5) * scale - 0.5).max(0.0) };
            let i0 = (src.floor() as usize).min(inp - 1);
            let i1 = (i0 + 1).min(inp - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// Resizes every `h×w` plane of an `N×C×h×w` tensor to `H×W`.
pub fn resize(x: &Tensor, height: usize, width: usize, mode: Interpolation) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if (h, w) == (height, width) {
        return Ok(x.clone());
    }
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(n * c * height * width);
    let aligned = mode == Interpolation::BilinearAligned;
    let (ys, xs) = (bilinear_axis(height, h, aligned), bilinear_axis(width, w, aligned));
    for plane in data.chunks_exact(h * w) {
        for oy in 0..height {
            for ox in 0..width {
                out.push(match mode {
                    // PyTorch's legacy `nearest`: floor(o · in / out).
                    Interpolation::Nearest => plane[(oy * h / height) * w + ox * w / width],
                    Interpolation::Bilinear | Interpolation::BilinearAligned => {
                        let ((y0, y1, fy), (x0, x1, fx)) = (ys[oy], xs[ox]);
                        let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
                        let bottom = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
                        top * (1.0 - fy) + bottom * fy
                    }
                });
            }
        }
    }
    Tensor::from_vec(out, (n, c, height, width), x.device())
}

/// A coarse map `N×1×h×w` up-sampled to the input `x`'s size and repeated over its channels (`N×C×H×W`).
pub fn to_input(map: &Tensor, x: &Tensor, mode: Interpolation) -> crate::Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let up = resize(map, h, w, mode)?;
    Ok(up.repeat((1, c, 1, 1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_pytorch_by_hand() -> Result<()> {
        // F.interpolate([[1, 2], [3, 4]], size=4, mode="bilinear", align_corners=False) first row:
        // [1.0, 1.25, 1.75, 2.0]; nearest: [1, 1, 2, 2].
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        let b = resize(&x, 4, 4, Interpolation::Bilinear)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(&b[..4], &[1.0, 1.25, 1.75, 2.0]);
        assert_eq!(&b[4..8], &[1.5, 1.75, 2.25, 2.5]);
        let nn = resize(&x, 4, 4, Interpolation::Nearest)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(&nn[..8], &[1., 1., 2., 2., 1., 1., 2., 2.]);
        // 3 → 28 (the MNIST case): the corners are the corner values.
        let x = Tensor::arange(0f32, 9., &Device::Cpu)?.reshape((1, 1, 3, 3))?;
        let b = resize(&x, 28, 28, Interpolation::Bilinear)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!((b[0], b[27], b[28 * 28 - 1]), (0.0, 2.0, 8.0));
        // align_corners=True, 2 → 4: the source points are 0, 1/3, 2/3, 1.
        let x = Tensor::new(&[[[[0f32, 3.], [6., 9.]]]], &Device::Cpu)?;
        let a = resize(&x, 4, 4, Interpolation::BilinearAligned)?.flatten_all()?.to_vec1::<f32>()?;
        let close = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5);
        assert!(close(&a[..4], &[0., 1., 2., 3.]) && close(&a[12..], &[6., 7., 8., 9.]), "{a:?}");
        Ok(())
    }
}
