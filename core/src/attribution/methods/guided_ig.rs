//! Guided Integrated Gradients (Kapishnikov, Venugopalan, Avci, Wedin, Terry & Birdal 2021, "Guided Integrated
//! Gradients: an Adaptive Path Method for Removing Noise"): a path from the baseline to the input chosen as it goes —
//! at each of `steps` steps the features of smallest |gradient| move first, until the path's L1 distance to the
//! input has shrunk by 1/steps, no feature straying more than `max_dist` (in α) from the straight line — and the
//! gradient integrated along it. Computed as PAIR's `saliency` 0.2.1 (`guided_ig_impl`) computes it, in float64 on
//! the path and with the model's float32 gradients; the baseline is zero (the normalised image's zero, as IG's). The
//! steps are sequential (each depends on the last gradient); the images of a batch go through each step together.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, ParamKind, ParamSpec, Settings};
use crate::attribution::{check_targets, input_gradient, Attribution, Score};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;

/// Steps of the path.
pub static GIG_STEPS: ParamSpec = ParamSpec {
    key: "gig-steps",
    aliases: &[],
    label: "Steps",
    help: "Steps of the guided path, one gradient each (Guided IG)",
    kind: ParamKind::Count { default: 200, min: 1, max: 1000 },
};

/// The share of features moved at each inner step.
pub static FRACTION: ParamSpec = ParamSpec {
    key: "gig-fraction",
    aliases: &[],
    label: "Fraction",
    help: "Share of the features, those of smallest |gradient|, moved at once (Guided IG)",
    kind: ParamKind::Real { default: 0.25, min: 0.0, max: 1.0 },
};

/// How far from the straight line a feature may be, in α.
pub static MAX_DIST: ParamSpec = ParamSpec {
    key: "gig-max-dist",
    aliases: &[],
    label: "Max distance",
    help: "How far, in α, a feature may stray from the straight-line path: 0 is IG, 1 unbounded (Guided IG)",
    kind: ParamKind::Real { default: 0.02, min: 0.0, max: 1.0 },
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "guidedig",
    aliases: &["guided-ig", "gig", "guided-integrated-gradients"],
    label: "GuidedIG",
    title: "Guided IG",
    paper: "Kapishnikov et al. 2021, Guided Integrated Gradients: an Adaptive Path Method for Removing Noise",
    family: Family::Gradient,
    params: &[&GIG_STEPS, &FRACTION, &MAX_DIST],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| {
        Ok(Box::new(GuidedIg {
            steps: s.params.count(&GIG_STEPS),
            fraction: s.params.real(&FRACTION),
            max_dist: s.params.real(&MAX_DIST),
        }))
    },
};

#[derive(Clone, Debug)]
pub struct GuidedIg {
    pub steps: usize,
    pub fraction: f64,
    pub max_dist: f64,
}

/// PAIR's tolerance for "the L1 distance has reached its target".
const EPSILON: f64 = 1e-9;

/// One image's path and attribution (`guided_ig_impl`'s state), baseline zero.
#[derive(Clone, Debug)]
pub struct GuidedPath {
    input: Vec<f64>,
    x: Vec<f64>,
    attr: Vec<f64>,
    l1_total: f64,
}

impl GuidedPath {
    pub fn new(input: &[f32]) -> Self {
        let input: Vec<f64> = input.iter().map(|&v| v as f64).collect();
        let l1_total = input.iter().map(|v| v.abs()).sum();
        GuidedPath { x: vec![0.0; input.len()], attr: vec![0.0; input.len()], input, l1_total }
    }

    /// The point where the next gradient is taken.
    pub fn point(&self) -> &[f64] {
        &self.x
    }

    pub fn attribution(&self) -> &[f64] {
        &self.attr
    }

    /// Step `step` (0-based) of `steps`, given the gradient at [`GuidedPath::point`]. (Index loops over the
    /// parallel arrays, as PAIR's masks read.)
    #[allow(clippy::needless_range_loop)]
    pub fn step(&mut self, step: usize, steps: usize, fraction: f64, max_dist: f64, grad_actual: &[f64]) {
        if self.l1_total == 0.0 {
            return;
        }
        let d = self.input.len();
        let alpha = (step as f64 + 1.0) / steps as f64;
        let alpha_min = (alpha - max_dist).max(0.0);
        let alpha_max = (alpha + max_dist).min(1.0);
        // translate_alpha_to_x with a zero baseline: 0 + (input − 0)·α.
        let x_min: Vec<f64> = self.input.iter().map(|&v| v * alpha_min).collect();
        let x_max: Vec<f64> = self.input.iter().map(|&v| v * alpha_max).collect();
        let l1_target = self.l1_total * (1.0 - (step as f64 + 1.0) / steps as f64);
        let mut grad = grad_actual.to_vec();
        let mut abs = vec![0f64; d];
        let mut selected = vec![false; d];
        // PAIR loops while γ > 1; a pass that moves nothing would loop for ever, so the loop also ends there.
        loop {
            let x_old = self.x.clone();
            for i in 0..d {
                let a = if self.input[i] != 0.0 { self.x[i] / self.input[i] } else { alpha_max };
                if a < alpha_min {
                    self.x[i] = x_min[i];
                }
            }
            let l1_current: f64 = self.x.iter().zip(&self.input).map(|(a, b)| (a - b).abs()).sum();
            if is_close(l1_target, l1_current) {
                self.accumulate(&x_old, grad_actual);
                return;
            }
            for i in 0..d {
                if self.x[i] == x_max[i] {
                    grad[i] = f64::INFINITY;
                }
                abs[i] = grad[i].abs();
            }
            let threshold = quantile_lower(&abs, fraction);
            let mut l1_s = 0.0;
            for i in 0..d {
                selected[i] = abs[i] <= threshold && grad[i] != f64::INFINITY;
                if selected[i] {
                    l1_s += (self.x[i] - x_max[i]).abs();
                }
            }
            let gamma = if l1_s > 0.0 { (l1_current - l1_target) / l1_s } else { f64::INFINITY };
            for i in (0..d).filter(|&i| selected[i]) {
                self.x[i] = if gamma > 1.0 { x_max[i] } else { self.x[i] + (x_max[i] - self.x[i]) * gamma };
            }
            self.accumulate(&x_old, grad_actual);
            if gamma <= 1.0 || self.x == x_old {
                return;
            }
        }
    }

    fn accumulate(&mut self, x_old: &[f64], grad: &[f64]) {
        for ((a, (x, o)), g) in self.attr.iter_mut().zip(self.x.iter().zip(x_old)).zip(grad) {
            *a += (x - o) * g;
        }
    }
}

/// Python's `math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)`.
fn is_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= (EPSILON * a.abs().max(b.abs())).max(EPSILON)
}

/// `np.quantile(v, q, method="lower")`: the ⌊(n − 1)·q⌋-th smallest value.
fn quantile_lower(v: &[f64], q: f64) -> f64 {
    let mut sorted = v.to_vec();
    let k = (((sorted.len() - 1) as f64) * q).floor() as usize;
    let (_, kth, _) = sorted.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *kth
}

impl Attribution for GuidedIg {
    fn name(&self) -> String {
        format!("GuidedIG-{}", self.steps)
    }

    fn attribute(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], score: Score) -> Result<Tensor> {
        if self.steps == 0 {
            crate::invalid!("Guided IG needs at least one step");
        }
        if !((0.0..=1.0).contains(&self.fraction) && (0.0..=1.0).contains(&self.max_dist)) {
            crate::invalid!(
                "Guided IG's fraction and max distance lie in [0, 1], got {} and {}",
                self.fraction,
                self.max_dist
            );
        }
        let n = x.dim(0)?;
        check_targets(model, n, targets)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        if let Some(v) = xs.iter().find(|v| !v.is_finite()) {
            crate::invalid!("Guided IG needs finite inputs, got {v}");
        }
        let per = xs.len() / n.max(1);
        let mut paths: Vec<GuidedPath> = xs.chunks(per.max(1)).map(GuidedPath::new).collect();
        for step in 0..self.steps {
            let points: Vec<f32> = paths.iter().flat_map(|p| p.point().iter().map(|&v| v as f32)).collect();
            let points = Tensor::from_vec(points, x.shape(), x.device())?;
            let grads = input_gradient(model, &points, targets, score, ReluRule::Standard)?;
            let grads = grads.flatten_all()?.to_vec1::<f32>()?;
            for (path, g) in paths.iter_mut().zip(grads.chunks(per.max(1))) {
                let g: Vec<f64> = g.iter().map(|&v| v as f64).collect();
                path.step(step, self.steps, self.fraction, self.max_dist, &g);
            }
        }
        let attr: Vec<f32> = paths.iter().flat_map(|p| p.attribution().iter().map(|&v| v as f32)).collect();
        Ok(Tensor::from_vec(attr, x.shape(), x.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a constant gradient the path ends at the input whatever its order, so the attribution is
    /// (x − 0) ⊙ g exactly (completeness of a linear score); with max distance 0 the path is IG's straight line.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn linear_scores_and_the_straight_line() {
        let input = [0.5f32, -1.0, 2.0, 0.0, 0.25, -0.75];
        let g = [0.3, -0.2, 0.05, 1.0, 0.0, 0.7];
        for max_dist in [0.0, 0.02, 0.5, 1.0] {
            let mut path = GuidedPath::new(&input);
            for s in 0..10 {
                path.step(s, 10, 0.25, max_dist, &g);
            }
            for i in 0..input.len() {
                assert!((path.point()[i] - input[i] as f64).abs() < 1e-12, "ends at the input ({max_dist})");
                assert!((path.attribution()[i] - input[i] as f64 * g[i]).abs() < 1e-12);
            }
        }
        // Max distance 0: after step s every feature sits at α = (s + 1)/steps.
        let mut path = GuidedPath::new(&input);
        path.step(0, 4, 0.25, 0.0, &g);
        for i in 0..input.len() {
            assert!((path.point()[i] - input[i] as f64 * 0.25).abs() < 1e-12);
        }
        assert_eq!(quantile_lower(&[4.0, 1.0, 3.0, 2.0, f64::INFINITY], 0.25), 2.0);
        assert_eq!(quantile_lower(&[4.0, 1.0, 3.0, 2.0], 0.25), 1.0);
    }
}
