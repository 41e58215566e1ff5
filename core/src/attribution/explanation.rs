//! A request for attributions (a method, optionally inside an ensemble, with its settings), as the CLI and the web
//! page make it, and [`Job`]: the same computation split into steps, so that an interactive caller can report
//! progress and drop stale work between steps. A job's result equals the one-call result.

use super::noise_tunnel::{samples_per_chunk, EnsembleSums};
use super::perturbation::Run;
use super::{input_gradient, Attribution, Ensemble, IntegralSums, Method, NoiseTunnel, Score, Settings};
use crate::models::Classifier;
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;
use std::sync::Arc;

/// What to compute: a method, optionally inside an ensemble.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    pub method: Method,
    pub ensemble: Option<Ensemble>,
    /// Ensemble samples.
    pub samples: usize,
    /// Ensemble noise level (σ = level × the image's value range).
    pub noise_level: f64,
    pub settings: Settings,
    pub score: Score,
}

/// The largest request the CLI and the page accept (the page's controls read these through the engine).
pub mod limits {
    /// Ensemble samples: 1..=SAMPLES.
    pub const SAMPLES: usize = 1000;
    /// Ensemble noise level: a finite number in [0, NOISE].
    pub const NOISE: f64 = 10.0;
}

impl Explanation {
    /// Checks every number of the request: a clear error for what no computation could use (NaN or infinite
    /// noise, zero or too many samples or steps, an empty batch).
    pub fn validate(&self) -> Result<()> {
        if self.ensemble.is_some() && !(1..=limits::SAMPLES).contains(&self.samples) {
            crate::invalid!("ensemble samples must be within 1..={}, got {}", limits::SAMPLES, self.samples);
        }
        if !(self.noise_level.is_finite() && (0.0..=limits::NOISE).contains(&self.noise_level)) {
            crate::invalid!("noise level must be a number within [0, {}], got {}", limits::NOISE, self.noise_level);
        }
        self.settings.params.validate()?;
        if self.settings.batch == 0 {
            crate::invalid!("the batch size must be at least 1");
        }
        Ok(())
    }

    /// A plain method with default settings.
    pub fn of(method: Method) -> Self {
        Explanation {
            method,
            ensemble: None,
            samples: 50,
            noise_level: 0.15,
            settings: Settings::default(),
            score: Score::Logit,
        }
    }

    pub fn label(&self) -> String {
        match self.ensemble {
            Some(e) => format!("{}-{}", e.label(), self.method.label()),
            None => self.method.label().to_string(),
        }
    }

    /// Model inputs per image of the whole computation (an ensemble's samples × its method's own inputs).
    pub fn inputs_per_image(&self, model: &dyn Classifier) -> Result<usize> {
        let own = self.method.build(&self.settings, model)?.inputs_per_image();
        Ok(own * if self.ensemble.is_some() { self.samples.max(1) } else { 1 })
    }

    /// Images per call such that one call holds at most `settings.batch` model inputs.
    fn images_per_call(&self, base: &dyn Attribution) -> usize {
        let per_image = match self.ensemble {
            Some(_) => self.samples.max(1),
            None => base.inputs_per_image(),
        };
        (self.settings.batch / per_image).max(1)
    }

    /// Attributions of `x` for `targets`, in chunks of images, calling `on_chunk` with each chunk's size.
    pub fn run(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        on_chunk: &mut dyn FnMut(usize),
    ) -> Result<Tensor> {
        self.validate()?;
        let base = self.method.build(&self.settings, model)?;
        let tunnel;
        let attribution: &dyn Attribution = match self.ensemble {
            Some(kind) => {
                tunnel = self.tunnel(base.as_ref(), kind);
                &tunnel
            }
            None => base.as_ref(),
        };
        let n = x.dim(0)?;
        if targets.len() != n {
            crate::invalid!("{} targets for {n} images", targets.len());
        }
        let per_call = self.images_per_call(base.as_ref());
        let mut parts = Vec::with_capacity(n.div_ceil(per_call));
        for start in (0..n).step_by(per_call) {
            let len = per_call.min(n - start);
            parts.push(attribution.attribute(
                model,
                &x.narrow(0, start, len)?,
                &targets[start..start + len],
                self.score,
            )?);
            on_chunk(len);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    fn tunnel<'a>(&self, base: &'a dyn Attribution, kind: Ensemble) -> NoiseTunnel<'a> {
        NoiseTunnel {
            base,
            kind,
            samples: self.samples,
            noise_level: self.noise_level,
            batch: self.settings.batch,
            seed: self.settings.seed,
            noise: None,
        }
    }

    /// The computation for `x` (all images at once) as a [`Job`] of steps of at most `settings.batch` model inputs.
    pub fn job(&self, model: Arc<dyn Classifier>, x: &Tensor, targets: &[u32]) -> Result<Job> {
        self.validate()?;
        let n = x.dim(0)?;
        if targets.len() != n {
            crate::invalid!("{} targets for {n} images", targets.len());
        }
        let base = self.method.build(&self.settings, model.as_ref())?;
        // Model inputs per sample or step: an ensemble of IG runs all of IG's steps for each sample.
        let inputs_per_unit = if self.ensemble.is_some() { base.inputs_per_image() } else { 1 };
        let per_chunk = samples_per_chunk(self.settings.batch, n * inputs_per_unit);
        let integral = base.integral().cloned();
        let plan = match (self.ensemble, integral) {
            (None, None) if base.perturbation().is_some() => {
                let method = base.perturbation().expect("checked");
                Plan::Perturbed { run: Run::new(method, model.as_ref(), x, targets, self.score)? }
            }
            (Some(kind), _) => {
                let noisy = self.tunnel(base.as_ref(), kind).noisy_inputs(x)?;
                Plan::Ensemble { base, noisy, sums: Some(EnsembleSums::new(kind, n)) }
            }
            (None, Some(ig)) => {
                let (scaled, weights) = ig.scaled_inputs(x)?;
                Plan::Integrated { scaled, steps: ig.steps, sums: Some(IntegralSums::new(weights, n)) }
            }
            _ => Plan::Once { base },
        };
        let units = match plan {
            Plan::Ensemble { .. } => self.samples,
            Plan::Integrated { steps, .. } => steps,
            Plan::Once { .. } => 1,
            Plan::Perturbed { ref run } => run.total(),
        };
        let per_chunk = match plan {
            Plan::Perturbed { .. } => self.settings.batch,
            _ if units == 1 => 1,
            _ => per_chunk,
        };
        Ok(Job {
            model,
            x: x.clone(),
            targets: targets.to_vec(),
            score: self.score,
            plan,
            per_chunk,
            done: 0,
            units,
            result: None,
        })
    }
}

enum Plan {
    Once {
        base: Box<dyn Attribution>,
    },
    Integrated {
        scaled: Tensor,
        steps: usize,
        sums: Option<IntegralSums>,
    },
    Ensemble {
        base: Box<dyn Attribution>,
        noisy: Tensor,
        sums: Option<EnsembleSums>,
    },
    /// Perturbed copies scored `per_chunk` at a time.
    Perturbed {
        run: Run,
    },
}

/// An attribution computed in steps: call [`Job::step`] until it returns `true`, then [`Job::finish`].
pub struct Job {
    model: Arc<dyn Classifier>,
    x: Tensor,
    targets: Vec<u32>,
    score: Score,
    plan: Plan,
    per_chunk: usize,
    done: usize,
    units: usize,
    result: Option<Tensor>,
}

impl Job {
    /// Fraction of the work done, in [0, 1].
    pub fn progress(&self) -> f64 {
        self.done as f64 / self.units.max(1) as f64
    }

    /// Runs the next step; `true` once the result is ready.
    pub fn step(&mut self) -> Result<bool> {
        if self.done >= self.units {
            return Ok(true);
        }
        let n = self.targets.len();
        let k = self.per_chunk.min(self.units - self.done);
        let chunk_targets: Vec<u32> = (0..k).flat_map(|_| self.targets.iter().copied()).collect();
        match &mut self.plan {
            Plan::Once { base } => {
                self.result = Some(base.attribute(self.model.as_ref(), &self.x, &self.targets, self.score)?)
            }
            Plan::Integrated { scaled, sums, .. } => {
                let rows = scaled.narrow(0, self.done * n, k * n)?;
                let grads = input_gradient(self.model.as_ref(), &rows, &chunk_targets, self.score, ReluRule::Standard)?;
                sums.as_mut().expect("not finished").add(&grads)?;
            }
            Plan::Perturbed { run } => {
                run.step(self.model.as_ref(), k)?;
            }
            Plan::Ensemble { base, noisy, sums } => {
                let rows = noisy.narrow(0, self.done * n, k * n)?;
                sums.as_mut().expect("not finished").add(&base.attribute(
                    self.model.as_ref(),
                    &rows,
                    &chunk_targets,
                    self.score,
                )?)?;
            }
        }
        self.done += k;
        if self.done == self.units {
            match &mut self.plan {
                Plan::Once { .. } => {}
                Plan::Perturbed { run } => {
                    self.result = Some(Tensor::from_vec(run.finish()?, self.x.shape(), self.x.device())?)
                }
                Plan::Integrated { sums, .. } => {
                    self.result = Some(sums.take().expect("finished once").finish(&self.x)?)
                }
                Plan::Ensemble { sums, .. } => self.result = Some(sums.take().expect("finished once").finish()?),
            }
        }
        Ok(self.done == self.units)
    }

    /// Runs the remaining steps and returns the attributions.
    pub fn finish(mut self) -> Result<Tensor> {
        while !self.step()? {}
        Ok(self.result.take().expect("a finished job has a result"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;
    use crate::models::{Arch, ModelSpec};
    use crate::params::init_model;
    use crate::testing::{random, rel_error};
    use candle_core::Device;

    /// Stepwise jobs (small steps) equal the one-call attributions of every method, plain and in every ensemble.
    #[test]
    fn jobs_in_small_steps_equal_one_call() -> Result<()> {
        let (_, m) = init_model(ModelSpec { arch: Arch::Cam, dataset: DatasetKind::Mnist }, 4, &Device::Cpu)?;
        let m: Arc<dyn Classifier> = Arc::from(m);
        let x = (random(&[2, 1, 28, 28], 3)? * 2.0)?;
        let t = [3u32, 8];
        let mut requests = Vec::new();
        // DeepLIFT and LRP need constant weights (the graph's engine); these are a training model's variables.
        for &method in Method::all().iter().filter(|k| k.applies_to(m.as_ref())) {
            requests.push(Explanation {
                settings: Settings { batch: 4, ..Settings::default() }
                    .with("steps", 7)
                    .with("perturbations", 10)
                    .with("window", 14)
                    .with("stride", 7)
                    .with("patch", 14),
                ..Explanation::of(method)
            });
        }
        for e in [Ensemble::SmoothGrad, Ensemble::SmoothGradSquared, Ensemble::VarGrad] {
            requests.push(Explanation {
                ensemble: Some(e),
                samples: 5,
                settings: Settings { batch: 4, ..Settings::default() },
                ..Explanation::of(Method::GB)
            });
        }
        for r in requests {
            // One call for both images (the noise of an ensemble is drawn for the images of one call).
            let one_call = Explanation { settings: Settings { batch: 1000, ..r.settings.clone() }, ..r.clone() };
            let whole = one_call.run(m.as_ref(), &x, &t, &mut |_| {})?;
            let mut job = r.job(m.clone(), &x, &t)?;
            let mut steps = 0;
            while !job.step()? {
                steps += 1;
                assert!(job.progress() < 1.0);
            }
            assert_eq!(job.progress(), 1.0);
            let stepped = job.finish()?;
            assert!(rel_error(&whole, &stepped, 1.0)? < 1e-5, "{}", r.label());
            // 7 IG steps of 2 images in chunks of 2 steps: 4 steps; 5 samples: 3 steps.
            // Perturbation methods: their copies of both images, 4 at a time (occlusion: 3×3 windows, feature
            // ablation: 2×2 patches, the others 10 copies).
            let want = match r.ensemble {
                Some(_) => 2,
                None if r.method == Method::IG => 3,
                None => match r.method.id() {
                    "occlusion" => 4,
                    "ablation" => 1,
                    "rise" | "kernelshap" | "lime" => 4,
                    _ => 0,
                },
            };
            assert_eq!(steps, want, "{}", r.label());
        }
        Ok(())
    }
}
