//! The comparison helpers every test of the workspace uses (core's unit tests, the end-to-end tests, the WebAssembly
//! tests), so that "relative error" means one thing everywhere: the largest absolute difference over the largest
//! magnitude of the reference, that magnitude floored where the caller says.

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};

/// How far gradient `got` is from `want`, relative to `want`'s largest entry. A gradient that is zero in exact
/// arithmetic (a convolution bias before BatchNorm, what a spatial softmax's shift cannot see) holds rounding noise
/// on both sides: where `want`'s largest entry is below 1e-6, `got`'s must be too — the gap is then 0, else
/// infinite.
pub fn gradient_gap(got: &[f32], want: &[f32]) -> f32 {
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, v| m.max(v.abs()));
    if largest(want) < 1e-6 {
        return if largest(got) < 1e-6 { 0.0 } else { f32::INFINITY };
    }
    max_rel_error(got, want, 0.0)
}

/// `max |a − b| / max(floor, max |b|)`; `b` is the reference. Panics when the lengths differ (a test's mistake).
pub fn max_rel_error(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// `mean |a − b| / max(floor, max |b|)`: for results where a few values may flip (near-ties) but the bulk may not.
pub fn mean_rel_error(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / (a.len().max(1) as f32 * scale)
}

/// [`max_rel_error`] of two tensors of one shape.
pub fn rel_error(a: &Tensor, b: &Tensor, floor: f32) -> Result<f32> {
    assert_eq!(a.dims(), b.dims(), "compared tensors differ in shape");
    Ok(max_rel_error(&values(a)?, &values(b)?, floor))
}

/// [`mean_rel_error`] of two tensors of one shape.
pub fn mean_rel_error_t(a: &Tensor, b: &Tensor, floor: f32) -> Result<f32> {
    assert_eq!(a.dims(), b.dims(), "compared tensors differ in shape");
    Ok(mean_rel_error(&values(a)?, &values(b)?, floor))
}

/// A tensor's values as f32, flattened.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()
}

/// Values uniform in [-1, 1) from `seed`.
pub fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        assert_eq!(max_rel_error(&[1.0, 2.5], &[1.0, 2.0], 1.0), 0.25);
        assert_eq!(max_rel_error(&[0.1], &[0.2], 1.0), 0.1);
        assert_eq!(max_rel_error(&[0.1], &[0.2], 0.0), 0.5);
        assert_eq!(mean_rel_error(&[1.0, 3.0], &[1.0, 4.0], 0.0), 0.125);
    }
}
