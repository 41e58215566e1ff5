//! Evaluation-mode engines: what every gradient-based attribution method asks of a model — logits, and the
//! gradient of a class score with respect to the input or to one layer under a ReLU backward rule — computed
//! directly on `f32` buffers instead of through candle's autograd.
//!
//! - [`Plan`] (`cpu.rs`): the CPU engine, lowered from a model's graph (`lower.rs`);
//! - `gpu::GpuPlan` (feature `gpu`): the same plan as WGSL compute kernels on WebGPU, Vulkan, Metal or DX12;
//! - [`Scripted`] (a recorder, then a replay): run a method twice around an asynchronous engine (the browser's GPU cannot be
//!   waited for synchronously): the first run records the gradient requests, the GPU answers them all, the second
//!   run replays the answers. The methods themselves stay written once, synchronously.
//!
//! [`EngineModel`] puts any engine under a model, so that the attribution methods use it.

mod cnn_step;
mod cpu;
pub mod executor;
mod local;
mod lower;
mod model;

pub use cpu::{CbamParams, Layer, Plan, Shape};
pub use executor::{Executor, GraphEngine};
pub use local::Rect;
pub use model::{build, graph_model, GraphModel};

pub use crate::graph::{Engine, Gradient, Score};
use crate::models::{Classifier, ModelSpec, Tapped};
use crate::nn::{Linear, Pass};
use crate::ops::ReluRule;
use crate::Result;
use candle_core::Tensor;
use std::sync::{Arc, Mutex};

/// The CPU plan behind an engine: the engine itself, or the one a graph engine serves with (a GPU engine is built
/// from it).
pub fn plan_of(engine: &dyn Engine) -> Option<&Plan> {
    let any = engine.as_any();
    any.downcast_ref::<Plan>().or_else(|| any.downcast_ref::<GraphEngine>().and_then(GraphEngine::plan))
}

/// One request a run makes of an engine: logits ([`Engine::forward`]) or a gradient ([`Engine::gradient`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub x: Vec<f32>,
    pub n: usize,
    pub ask: Ask,
}

/// What a [`Request`] asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Ask {
    Logits,
    Gradient { targets: Vec<u32>, score: Score, rule: ReluRule, layer: Option<usize> },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Logits(Vec<f32>),
    Gradient(Gradient),
}

impl Request {
    /// The answer of a synchronous `engine`.
    pub fn answer(&self, engine: &dyn Engine) -> Result<Answer> {
        Ok(match &self.ask {
            Ask::Logits => Answer::Logits(engine.forward(&self.x, self.n)?),
            Ask::Gradient { targets, score, rule, layer } => {
                Answer::Gradient(engine.gradient(&self.x, self.n, targets, *score, *rule, *layer)?)
            }
        })
    }
}

/// A scripted engine, which lets a method whose logits and gradients are computed elsewhere (on a GPU, awaited) run
/// as if they were at hand: it answers a run's requests with `answers`, in order, and fails when the run asks for
/// anything other than what they answer. The first request beyond them is kept ([`Scripted::finish`]) and stops the
/// run; its answer, appended, lets the next run go one request further. A method whose requests do not depend on
/// earlier answers (IG, the ensembles: one batched request) needs two runs; Guided IG, one run per step; a
/// perturbation method, one for the images' logits and one for all their perturbed copies.
pub struct Scripted {
    plan: Arc<Plan>,
    script: Mutex<Script>,
}

#[derive(Default)]
struct Script {
    answers: Vec<(Request, Answer)>,
    next: usize,
    pending: Option<Request>,
}

impl Scripted {
    pub fn new(plan: Arc<Plan>, answers: Vec<(Request, Answer)>) -> Self {
        Scripted { plan, script: Mutex::new(Script { answers, next: 0, pending: None }) }
    }

    /// The answers given, and the request that stopped the run (None when the run needed no more).
    pub fn finish(&self) -> (Vec<(Request, Answer)>, Option<Request>) {
        let script = std::mem::take(&mut *self.script.lock().expect("not poisoned"));
        (script.answers, script.pending)
    }

    /// The recorded answer to `asked`, or an error that stops the run and keeps the request.
    fn replay(&self, asked: Request) -> Result<Answer> {
        let mut script = self.script.lock().expect("not poisoned");
        if script.pending.is_some() {
            crate::invalid!("the run went on after a request it had to wait for");
        }
        let next = script.next;
        match script.answers.get(next) {
            Some((request, answer)) if *request == asked => {
                let answer = answer.clone();
                script.next += 1;
                Ok(answer)
            }
            Some(_) => crate::invalid!("the replayed run asked for a gradient that was not recorded"),
            None => {
                match &asked.ask {
                    Ask::Logits => self.plan.check_input(&asked.x, asked.n)?,
                    Ask::Gradient { targets, layer, .. } => {
                        self.plan.check_request(&asked.x, asked.n, targets, *layer)?
                    }
                }
                script.pending = Some(asked);
                crate::invalid!("this request is answered elsewhere: run again with its answer")
            }
        }
    }
}

impl Engine for Scripted {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn classes(&self) -> usize {
        self.plan.classes()
    }

    fn layer_shape(&self, layer: usize) -> (usize, usize, usize) {
        self.plan.layer_shape(layer)
    }

    fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        match self.replay(Request { x: x.to_vec(), n, ask: Ask::Logits })? {
            Answer::Logits(l) => Ok(l),
            Answer::Gradient(_) => crate::invalid!("the replayed run asked for logits where a gradient was recorded"),
        }
    }

    fn gradient(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        score: Score,
        rule: ReluRule,
        layer: Option<usize>,
    ) -> Result<Gradient> {
        let ask = Ask::Gradient { targets: targets.to_vec(), score, rule, layer };
        match self.replay(Request { x: x.to_vec(), n, ask })? {
            Answer::Gradient(g) => Ok(g),
            Answer::Logits(_) => crate::invalid!("the replayed run asked for a gradient where logits were recorded"),
        }
    }
}

/// A model whose evaluation-mode computations go through `engine` (everything else through `model`).
pub struct EngineModel {
    pub model: Arc<dyn Classifier>,
    pub engine: Arc<dyn Engine>,
}

impl Classifier for EngineModel {
    fn spec(&self) -> ModelSpec {
        self.model.spec()
    }

    fn tap_names(&self) -> Vec<String> {
        self.model.tap_names()
    }

    fn last_feature_index(&self) -> usize {
        self.model.last_feature_index()
    }

    fn default_gradcam_layer(&self) -> usize {
        self.model.default_gradcam_layer()
    }

    fn cam_head(&self) -> Option<&Linear> {
        self.model.cam_head()
    }

    fn engine(&self) -> Option<&dyn Engine> {
        Some(self.engine.as_ref())
    }

    fn propagator(&self) -> Option<&dyn Engine> {
        self.model.propagator()
    }

    fn layer_names(&self) -> Vec<(usize, String)> {
        self.model.layer_names()
    }

    fn forward_tapped(
        &self,
        x: &Tensor,
        pass: &Pass,
        tap: Option<usize>,
    ) -> candle_core::Result<(Tensor, Option<Tapped>)> {
        self.model.forward_tapped(x, pass, tap)
    }
}

/// A model with constant (checkpoint) weights, and non-trivial BatchNorm statistics (tests).
#[cfg(test)]
pub(crate) fn constant_model(
    arch: crate::models::Arch,
    dataset: crate::data::DatasetKind,
    seed: u64,
) -> Box<dyn Classifier> {
    use crate::params::{init_model, Checkpoint};
    let spec = ModelSpec { arch, dataset };
    let (map, _) = init_model(spec, seed, &candle_core::Device::Cpu).unwrap();
    for (k, v) in map.data().lock().unwrap().iter() {
        if k.contains("features.1") || k.contains("features.5") || k.contains("features.9") {
            let r = crate::testing::random(v.dims(), k.len() as u64).unwrap();
            v.set(&(r.abs().unwrap() + 0.5).unwrap()).unwrap();
        }
    }
    Checkpoint::from_varmap(spec, &map, Default::default()).unwrap().model().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{Ensemble, Explanation, Method, Settings};
    use crate::data::DatasetKind;
    use crate::models::Arch;
    use crate::testing::random;

    /// Running a method request by request, answering each with the CPU plan, gives the direct result, for every
    /// method (plain and in an ensemble); a replay that is asked something else fails.
    #[test]
    fn scripted_runs_equal_direct() -> Result<()> {
        let m: Arc<dyn Classifier> = Arc::from(constant_model(Arch::Cam, DatasetKind::Mnist, 4));
        let plan = Arc::new(crate::engine::plan_of(m.engine().expect("constant weights")).expect("a CPU plan").clone());
        let x = (random(&[2, 1, 28, 28], 3)? * 2.0)?;
        let t = [3u32, 8];
        let mut requests: Vec<Explanation> = Method::all()
            .iter()
            .map(|&m| Explanation {
                settings: Settings::default()
                    .with("steps", 5)
                    .with("gig-steps", 4)
                    .with("blur-steps", 3)
                    .with("perturbations", 12)
                    .with("stride", 6)
                    .with("patch", 14),
                ..Explanation::of(m)
            })
            .collect();
        requests.push(Explanation { ensemble: Some(Ensemble::VarGrad), samples: 4, ..Explanation::of(Method::GBGC) });
        for e in requests {
            let direct = e.run(m.as_ref(), &x, &t, &mut |_| {})?;
            let mut answers = Vec::new();
            let replayed = loop {
                let script = Arc::new(Scripted::new(plan.clone(), answers));
                let result = e.run(&EngineModel { model: m.clone(), engine: script.clone() }, &x, &t, &mut |_| {});
                let (given, pending) = script.finish();
                answers = given;
                match pending {
                    None => break result?,
                    Some(r) => {
                        let a = r.answer(plan.as_ref())?;
                        answers.push((r, a));
                    }
                }
            };
            if e.method.descriptor().family == crate::attribution::registry::Family::Perturbation {
                // Directly, occlusion and feature ablation recompute only what each change reaches (the CPU plan's
                // local passes); the replay answers with whole forward passes: equal up to the order of sums.
                let d = crate::testing::rel_error(&direct, &replayed, 1e-3)?;
                assert!(d < 1e-4, "{}: {d}", e.label());
            } else {
                assert_eq!(
                    direct.flatten_all()?.to_vec1::<f32>()?,
                    replayed.flatten_all()?.to_vec1::<f32>()?,
                    "{}",
                    e.label()
                );
            }
        }
        let other = Request {
            x: vec![0.0; 784],
            n: 1,
            ask: Ask::Gradient { targets: vec![1], score: Score::Logit, rule: ReluRule::Standard, layer: None },
        };
        let answer = other.answer(plan.as_ref())?;
        let wrong = EngineModel { model: m.clone(), engine: Arc::new(Scripted::new(plan, vec![(other, answer)])) };
        assert!(Explanation::of(Method::VBP)
            .run(&wrong, &x, &t, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("not recorded"));
        Ok(())
    }
}
