//! Blur IG (Xu, Venugopalan, Sundararajan, Sarkar & Taly 2020, "Attribution in Scale and Space"): integrated
//! gradients along the path that blurs the image away, from the image (σ = 0) to a Gaussian blur of σ_max:
//! −Σ_i (σ_{i+1} − σ_i) · ∂x(σ_i)/∂σ ⊙ ∂S_c/∂x(σ_i), with ∂x/∂σ a forward difference of step `grad_step`. Computed
//! as PAIR's `saliency` 0.2.1 (`BlurIG`) computes it — the blur is SciPy's `gaussian_filter` (kernel radius
//! ⌊4σ + ½⌋, zeros outside the image), the sums in step order — but in float64 where PAIR's float32 loses digits:
//! its forward difference of two nearly equal blurs puts PAIR's own float32 maps 1e-3–8e-3 (at their largest value)
//! from its float64 ones on the shipped models. The blur works on the model's (normalised) input, whose zero is the data set's mean, as IG's
//! baseline. All steps of all images run as batches of at most `batch` inputs.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{check_targets, input_gradient, samples_per_chunk, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// Points of the blur path.
pub static BLUR_STEPS: ParamSpec = ParamSpec {
    key: "blur-steps",
    aliases: &[],
    label: "Steps",
    help: "Points of the blur path (Blur IG)",
    kind: ParamKind::Count { default: 100, min: 1, max: 1000 },
};

/// The blur at the end of the path.
pub static MAX_SIGMA: ParamSpec = ParamSpec {
    key: "max-sigma",
    aliases: &[],
    label: "σ max",
    help: "σ of the Gaussian blur at the end of the path, in pixels (Blur IG)",
    kind: ParamKind::Real { default: 50.0, min: 0.01, max: 1000.0 },
};

/// The step of the forward difference ∂x/∂σ.
pub static GRAD_STEP: ParamSpec = ParamSpec {
    key: "blur-grad-step",
    aliases: &[],
    label: "dσ",
    help: "Step in σ of the blur's forward difference (Blur IG)",
    kind: ParamKind::Real { default: 0.01, min: 1e-4, max: 1.0 },
};

/// How the σ of the path's points are spaced.
pub static SPACING: ParamSpec = ParamSpec {
    key: "blur-spacing",
    aliases: &[],
    label: "Spacing",
    help: "Spacing of σ along the path: even, or even in σ² (Blur IG; PAIR's sqrt)",
    kind: ParamKind::Choice { values: &["linear", "sqrt"], default: "linear" },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "blurig",
    aliases: &["blur-ig", "blur-integrated-gradients"],
    label: "BlurIG",
    title: "Blur IG",
    paper: "Xu, Venugopalan, Sundararajan, Sarkar & Taly 2020, Attribution in Scale and Space",
    family: Family::Gradient,
    params: &[&BLUR_STEPS, &MAX_SIGMA, &GRAD_STEP, &SPACING],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| {
        Ok(Box::new(BlurIg {
            steps: s.params.count(&BLUR_STEPS),
            max_sigma: s.params.real(&MAX_SIGMA),
            grad_step: s.params.real(&GRAD_STEP),
            sqrt: s.params.choice(&SPACING) == "sqrt",
            batch: s.batch,
        }))
    },
};

#[derive(Clone, Debug)]
pub struct BlurIg {
    pub steps: usize,
    pub max_sigma: f64,
    pub grad_step: f64,
    /// σ_i = √(i·σ_max/steps) instead of i·σ_max/steps.
    pub sqrt: bool,
    /// Model inputs per internal batch.
    pub batch: usize,
}

impl BlurIg {
    /// σ_0 … σ_steps, as PAIR computes them.
    pub fn sigmas(&self) -> Vec<f64> {
        (0..=self.steps)
            .map(|i| {
                let s = i as f64 * self.max_sigma / self.steps as f64;
                if self.sqrt {
                    s.sqrt()
                } else {
                    s
                }
            })
            .collect()
    }
}

/// SciPy's `gaussian_filter(image, sigma=[σ, σ, 0], mode="constant")` of each `h×w` plane of `x`, the vertical
/// pass first, in float64 throughout (SciPy rounds each pass to the input's float32); σ = 0 returns `x`.
pub fn gaussian_blur(x: &[f32], h: usize, w: usize, sigma: f64) -> Vec<f64> {
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    if sigma == 0.0 {
        return x;
    }
    let kernel = gaussian_kernel(sigma);
    let r = kernel.len() / 2;
    let mut out = vec![0f64; x.len()];
    let mut tmp = vec![0f64; h * w];
    for (plane, dst) in x.chunks(h * w).zip(out.chunks_mut(h * w)) {
        // Along the first image axis (down the columns), then along the rows.
        for col in 0..w {
            correlate(|i| plane[i * w + col], h, &kernel, r, |i, v| tmp[i * w + col] = v);
        }
        for row in 0..h {
            correlate(|j| tmp[row * w + j], w, &kernel, r, |j, v| dst[row * w + j] = v);
        }
    }
    out
}

/// SciPy's `_gaussian_kernel1d(σ, 0, ⌊4σ + ½⌋)`: exp((−½/σ²·x)·x), normalised to sum 1.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let c = -0.5 / (sigma * sigma);
    let phi: Vec<f64> = (-radius..=radius).map(|x| (c * x as f64 * x as f64).exp()).collect();
    let total: f64 = phi.iter().sum();
    phi.into_iter().map(|p| p / total).collect()
}

/// One line of SciPy's `correlate1d` with a symmetric kernel and zeros outside (`NI_Correlate1D`'s order:
/// the centre, then the pairs from the outermost in).
fn correlate(get: impl Fn(usize) -> f64, len: usize, kernel: &[f64], r: usize, mut put: impl FnMut(usize, f64)) {
    let at = |i: isize| if i >= 0 && (i as usize) < len { get(i as usize) } else { 0.0 };
    for i in 0..len {
        let c = i as isize;
        let mut acc = at(c) * kernel[r];
        // Pairs wholly outside the line add zeros: start at the outermost pair that reaches into it.
        let reach = r.min(i.max(len - 1 - i)) as isize;
        for j in (1..=reach).rev() {
            acc += (at(c - j) + at(c + j)) * kernel[r - j as usize];
        }
        put(i, acc);
    }
}

impl Attribution for BlurIg {
    fn name(&self) -> String {
        format!("BlurIG-{}", self.steps)
    }

    fn inputs_per_image(&self) -> usize {
        self.steps.max(1)
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        check_targets(model, x.dim(0)?, targets)?;
        self.integrate(x, targets, |rows, t| input_gradient(model, rows, t, score, ReluRule::Standard))
    }
}

impl BlurIg {
    /// The map of `x`, with `gradient(rows, targets)` giving ∂S/∂x at rows of blurred images (the model's gradient,
    /// or another field in tests).
    pub fn integrate(
        &self,
        x: &Tensor,
        targets: &[u32],
        mut gradient: impl FnMut(&Tensor, &[u32]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.steps == 0 {
            crate::invalid!("Blur IG needs at least one step");
        }
        if !(self.max_sigma.is_finite() && self.max_sigma > 0.0 && self.grad_step.is_finite() && self.grad_step > 0.0) {
            crate::invalid!("Blur IG needs a positive σ max and σ step, got {} and {}", self.max_sigma, self.grad_step);
        }
        let (n, c, h, w) = x.dims4()?;
        if targets.len() != n {
            crate::invalid!("{} targets for {n} images", targets.len());
        }
        let per = c * h * w;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        if let Some(v) = xs.iter().find(|v| !v.is_finite()) {
            crate::invalid!("Blur IG needs finite inputs, got {v}");
        }
        let sigmas = self.sigmas();
        let mut total = vec![0f64; n * per];
        let per_chunk = samples_per_chunk(self.batch, n);
        for first in (0..self.steps).step_by(per_chunk) {
            let k = per_chunk.min(self.steps - first);
            // Step-major rows: the blurred images x(σ_i), rounded for the model, and the forward differences ∂x/∂σ
            // at σ_i, in float64 (in float32 the difference of two nearly equal blurs loses about three digits).
            let mut blurred = vec![0f32; k * n * per];
            let mut slopes = vec![0f64; k * n * per];
            blurred.par_chunks_mut(per).zip(slopes.par_chunks_mut(per)).enumerate().for_each(|(row, (b, sl))| {
                let (sigma, image) = (sigmas[first + row / n], &xs[(row % n) * per..(row % n + 1) * per]);
                let at = gaussian_blur(image, h, w, sigma);
                let next = gaussian_blur(image, h, w, sigma + self.grad_step);
                for ((b, sl), (a, nx)) in b.iter_mut().zip(sl.iter_mut()).zip(at.iter().zip(&next)) {
                    *b = *a as f32;
                    *sl = (nx - a) / self.grad_step;
                }
            });
            let chunk = Tensor::from_vec(blurred, (k * n, c, h, w), x.device())?;
            let chunk_targets: Vec<u32> = (0..k).flat_map(|_| targets.iter().copied()).collect();
            let grads = gradient(&chunk, &chunk_targets)?;
            let grads = grads.flatten_all()?.to_vec1::<f32>()?;
            for s in 0..k {
                let d = sigmas[first + s + 1] - sigmas[first + s];
                let g = &grads[s * n * per..(s + 1) * n * per];
                let slope = &slopes[s * n * per..(s + 1) * n * per];
                for ((t, &gg), &sl) in total.iter_mut().zip(g).zip(slope) {
                    *t += d * sl * gg as f64;
                }
            }
        }
        Ok(Tensor::from_vec(total.into_iter().map(|t| -t as f32).collect::<Vec<f32>>(), x.shape(), x.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blur keeps a constant plane constant away from the border, and its kernel sums to 1 and is symmetric.
    #[test]
    fn kernel_and_blur_identities() {
        let k = gaussian_kernel(1.3);
        assert_eq!(k.len(), 2 * 5 + 1);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((0..k.len()).all(|i| k[i] == k[k.len() - 1 - i]));
        let plane = vec![2.0f32; 30 * 30];
        let b = gaussian_blur(&plane, 30, 30, 1.0);
        assert!((b[15 * 30 + 15] - 2.0).abs() < 1e-12);
        assert!(b[0] < 2.0, "zeros outside the image darken the corner");
        // A single bright pixel spreads as the kernel's outer product.
        let mut dot = vec![0f32; 11 * 11];
        dot[5 * 11 + 5] = 1.0;
        let s = 0.7;
        let k = gaussian_kernel(s);
        let r = k.len() / 2;
        let b = gaussian_blur(&dot, 11, 11, s);
        for i in 0..11usize {
            for j in 0..11usize {
                let (di, dj) = (i.abs_diff(5), j.abs_diff(5));
                let want = if di <= r && dj <= r { k[r + di] * k[r + dj] } else { 0.0 };
                assert!((b[i * 11 + j] - want).abs() < 1e-15, "({i}, {j})");
            }
        }
    }
}
