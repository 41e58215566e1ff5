//! Bilinear up-sampling with aligned corners, PyTorch's `UpsamplingBilinear2d(size)` (`align_corners=True`), as used
//! by the soft-mask branch of the Residual Attention Network (Wang et al. 2017).
//!
//! Written as two matrix products `A_h · X · A_wᵀ` with fixed interpolation matrices, so candle's autograd gives
//! its exact backward (the transposed interpolation) on every device.

use candle_core::{Result, Tensor};

/// The `out × inp` matrix of 1-d linear interpolation with aligned corners: output `i` samples the input at
/// `i · (inp − 1)/(out − 1)`.
pub(crate) fn interpolation_matrix(out: usize, inp: usize) -> Vec<f32> {
    let scale = if out > 1 { (inp as f32 - 1.0) / (out as f32 - 1.0) } else { 0.0 };
    let mut m = vec![0f32; out * inp];
    for i in 0..out {
        let src = scale * i as f32;
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let frac = src - i0 as f32;
        m[i * inp + i0] += 1.0 - frac;
        m[i * inp + i1] += frac;
    }
    m
}

/// Resizes `N×C×H×W` to `N×C×h×w` by bilinear interpolation with aligned corners.
pub fn upsample_bilinear_aligned(x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (_, _, in_h, in_w) = x.dims4()?;
    if in_h == 0 || in_w == 0 || h == 0 || w == 0 {
        candle_core::bail!("upsample: cannot resize {in_h}×{in_w} to {h}×{w}");
    }
    if (in_h, in_w) == (h, w) {
        return Ok(x.clone());
    }
    let a_w = Tensor::from_vec(interpolation_matrix(w, in_w), (w, in_w), x.device())?.to_dtype(x.dtype())?;
    let a_h = Tensor::from_vec(interpolation_matrix(h, in_h), (h, in_h), x.device())?.to_dtype(x.dtype())?;
    let rows = x.contiguous()?.broadcast_matmul(&a_w.t()?)?;
    a_h.broadcast_matmul(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// 2×2 → 3×3 with aligned corners keeps the corners and averages in between (by hand).
    #[test]
    fn two_by_two_to_three_by_three_by_hand() -> Result<()> {
        let x = Tensor::new(&[[[[0f32, 4.], [8., 12.]]]], &Device::Cpu)?;
        let y = upsample_bilinear_aligned(&x, (3, 3))?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, vec![0., 2., 4., 4., 6., 8., 8., 10., 12.]);
        Ok(())
    }

    /// 2 → 4 samples at 0, 1/3, 2/3, 1; 7 → 4 samples at 0, 2, 4, 6 (exact rows of the input). The backward is the
    /// transposed interpolation: each input receives the weights it was given.
    #[test]
    fn sampling_positions_and_backward_by_hand() -> Result<()> {
        let m = interpolation_matrix(4, 2);
        let want = [1., 0., 2. / 3., 1. / 3., 1. / 3., 2. / 3., 0., 1.];
        assert!(m.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{m:?}");
        let m = interpolation_matrix(4, 7);
        for (i, row) in m.chunks(7).enumerate() {
            assert!((row[2 * i] - 1.0).abs() < 1e-6 && row.iter().sum::<f32>() == 1.0, "{row:?}");
        }
        let x = Var::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        let g = upsample_bilinear_aligned(&x, (4, 4))?.sum_all()?.backward()?;
        // Each input pixel gets the column sums of A_h times those of A_w: 2 × 2.
        assert_eq!(g.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?, vec![4.; 4]);
        Ok(())
    }
}
