//! CPU kernels with their own backward passes, usable from candle's autograd.
//!
//! candle 0.11's own CPU paths are slow (naive transposed convolution for the input gradient, a BatchNorm made of
//! many broadcast ops) or wrong (`max_pool2d`'s backward scales by 1/4 and misroutes odd sizes). Each op here has a
//! fast custom CPU kernel and, for other devices and for tests, a reference formulation made of plain candle ops.

mod batch_norm;
mod conv;
mod matmul;
mod max_pool;
mod relu;
mod upsample;
mod winograd;

pub use batch_norm::{batch_norm_eval, batch_norm_train, BatchStats};
pub(crate) use conv::{col2im_same, im2col_same, transpose_planes, transpose_planes_into, Geometry};
pub use conv::{conv2d, conv2d_reference};
pub use matmul::{matmul_left, matmul_right};
pub(crate) use matmul::{sgemm, sgemm_batched_long, sgemm_batched_wide, sgemm_long, sgemm_wide};
pub(crate) use max_pool::{affine_relu_pool, window_argmax, window_max};
pub use max_pool::{max_over, max_pool2x2, max_pool2x2_ceil, max_pool2x2_reference};

/// Values for which every bit pattern is a valid value (plain `f32`s): [`uninit`] may hand out buffers of them.
///
/// # Safety
/// Only for types made of `f32`s alone, with no padding.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: a float.
unsafe impl Plain for f32 {}

/// A buffer of `len` values whose every element the caller writes before anything reads it (no zero-filling pass:
/// a matrix product's output, a transform's tiles).
pub(crate) fn uninit<T: Plain>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `T` has no invalid bit patterns (`Plain`), and callers write every element before reading it.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// How far (in logits) below its run's largest a softmax input may lie and still get a share: `40 ln 2`, a share
/// below 2⁻⁴⁰ of the largest (under 10⁻⁹ of the run's sum over 1,024 positions, far below float32's rounding)
/// becomes exactly 0. Without it, a peaked attention mask (WARN's spatial softmax) holds values down in float32's
/// subnormal range, and so do the gradients it passes to the heads' convolutions: every product with a subnormal
/// operand or result takes a microcode assist on x86 (about a hundred cycles): the backward product of WARN's
/// 256 → 40 head on one MNIST image took 3.5 ms, 0.24 ms with those values flushed to zero (the trunk's 256 → 256
/// product on the same map, 6.4× the arithmetic, 0.53 ms), and a saliency map 20–25 % longer. The GPU's softmax
/// kernel takes the same floor (`common.wgsl` receives it from here).
pub(crate) const SOFTMAX_FLOOR: f32 = 40.0 * std::f32::consts::LN_2;

/// The exponentials of a row of logits shifted by their maximum, their sum and the maximum: `e[j] / sum` is the
/// softmax, `ln(sum) + max` the log-sum-exp (the shift keeps `exp` finite).
pub(crate) fn shifted_exps(z: &[f32]) -> (Vec<f32>, f32, f32) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let sum = e.iter().sum();
    (e, sum, max)
}

/// `f` on a thread of the rayon pool, the caller waiting (in place when the caller is one), for work on at most
/// [`ON_POOL_IMAGES`] images; larger work runs on the calling thread. The kernels split their work on the pool;
/// called from outside it, each of a pass's several hundred kernels hands its work to the pool and wakes the calling
/// thread afterwards, while on a pool thread a kernel with one piece of work runs it in place: one image's saliency
/// map through RAN-56 took 27 ms from outside the pool and 19 ms on it. Large batches stay off it: their buffers,
/// allocated on pool threads, come from glibc's per-thread arenas, and WARN's training step at batch 128 ran 1.7×
/// slower with 1.8× the peak memory there.
pub(crate) fn on_pool<R: Send>(images: usize, f: impl FnOnce() -> R + Send) -> R {
    if images <= ON_POOL_IMAGES {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// The most images [`on_pool`] moves to the pool.
pub(crate) const ON_POOL_IMAGES: usize = 4;

/// Rows per rayon task when each row holds `len` values: at least 32 k values per task (for one image, the
/// scheduling would otherwise cost more than the work).
pub(crate) fn grain(len: usize) -> usize {
    (1usize << 15).div_ceil(len.max(1))
}
pub use relu::{relu, ReluRule};
pub(crate) use upsample::interpolation_matrix;
pub use upsample::upsample_bilinear_aligned;
pub(crate) use winograd::Winograd;

use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor};

/// Runs `f` on the contiguous f32 data of `t` (copying only when `t` is not contiguous).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(slice_f32(cpu, layout)?)),
        _ => candle_core::bail!("whitebox CPU kernel called on a non-CPU tensor"),
    }
}

/// The f32 elements of a contiguous CPU storage viewed through `layout`.
pub(crate) fn slice_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("whitebox CPU kernel needs a contiguous input, got strides {:?}", layout.stride()),
    }
}

/// [`slice_f32`], writable (for in-place ops).
pub(crate) fn slice_f32_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&mut data[start..end]),
        _ => candle_core::bail!(
            "whitebox in-place CPU kernel needs a contiguous f32 tensor, got strides {:?}",
            layout.stride()
        ),
    }
}

/// Wraps a freshly computed buffer as the result of a custom op.
pub(crate) fn output(data: Vec<f32>, shape: impl Into<Shape>) -> (CpuStorage, Shape) {
    (CpuStorage::F32(data), shape.into())
}

/// A tensor on `like`'s device from a buffer computed on the CPU.
pub(crate) fn tensor_like(data: Vec<f32>, shape: impl Into<Shape>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(data, shape, like.device())
}

/// Dimensions of an `N×C×H×W` tensor, with a clear error otherwise.
pub(crate) fn dims4(layout: &Layout, op: &str) -> Result<(usize, usize, usize, usize)> {
    match layout.shape().dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        d => candle_core::bail!("{op} expects an N×C×H×W tensor, got shape {d:?}"),
    }
}
