//! Evaluation-mode engines: what every gradient-based attribution method asks of a model — logits, and the
//! gradient of a class score with respect to the input or to one layer under a ReLU backward rule — computed
//! directly on `f32` buffers instead of through candle's autograd.
//!
//! - [`Plan`] (`cpu.rs`): the CPU engine, read from a model's own parameters;
//! - `gpu::GpuPlan` (feature `gpu`): the same plan as WGSL compute kernels on WebGPU, Vulkan, Metal or DX12;
//! - [`Scripted`] (a recorder, then a replay): run a method twice around an asynchronous engine (the browser's GPU cannot be
//!   waited for synchronously): the first run records the gradient requests, the GPU answers them all, the second
//!   run replays the answers. The methods themselves stay written once, synchronously.
//!
//! [`EngineModel`] puts any engine under a model, so that the attribution methods use it.

mod cnn_step;
mod cpu;
pub mod executor;
mod model;
mod simple_cnn;

pub use cpu::{CbamParams, Layer, Plan, Shape};
pub use executor::{Executor, GraphEngine};
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

/// One gradient request, as [`Engine::gradient`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub x: Vec<f32>,
    pub n: usize,
    pub targets: Vec<u32>,
    pub score: Score,
    pub rule: ReluRule,
    pub layer: Option<usize>,
}

/// A scripted engine: [`Scripted::recorder`] records the gradient requests of a run and answers each with zeros of
/// the right shape (checked by the CPU plan, so a bad request fails here already); [`Scripted::replay`] answers a
/// run's requests with answers computed elsewhere, in order, and fails when the run asks for anything other than
/// what was recorded. Logits come from the CPU plan.
pub struct Scripted {
    plan: Arc<Plan>,
    script: Mutex<Script>,
}

enum Script {
    Recording(Vec<Request>),
    Replaying(std::collections::VecDeque<(Request, Gradient)>),
}

impl Scripted {
    pub fn recorder(plan: Arc<Plan>) -> Self {
        Scripted { plan, script: Mutex::new(Script::Recording(Vec::new())) }
    }

    pub fn replay(plan: Arc<Plan>, answers: Vec<(Request, Gradient)>) -> Self {
        Scripted { plan, script: Mutex::new(Script::Replaying(answers.into())) }
    }

    /// The requests recorded so far, in order (none for a replay).
    pub fn take(&self) -> Vec<Request> {
        match &mut *self.script.lock().expect("not poisoned") {
            Script::Recording(requests) => std::mem::take(requests),
            Script::Replaying(_) => Vec::new(),
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
        self.plan.forward(x, n)
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
        let asked = Request { x: x.to_vec(), n, targets: targets.to_vec(), score, rule, layer };
        match &mut *self.script.lock().expect("not poisoned") {
            Script::Recording(requests) => {
                self.plan.check_request(x, n, targets, layer)?;
                let len = match layer {
                    Some(l) => {
                        let (c, h, w) = self.plan.layer_shape(l);
                        n * c * h * w
                    }
                    None => x.len(),
                };
                requests.push(asked);
                Ok(Gradient { grad: vec![0.0; len], activation: layer.map(|_| vec![0.0; len]) })
            }
            Script::Replaying(answers) => match answers.pop_front() {
                Some((request, answer)) if request == asked => Ok(answer),
                _ => crate::invalid!("the replayed run asked for a gradient that was not recorded"),
            },
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

    /// Recording a run, answering the requests with the CPU plan and replaying gives the direct result, for every
    /// method (plain and in an ensemble); a replay that is asked something else fails.
    #[test]
    fn record_then_replay_equals_direct() -> Result<()> {
        let m: Arc<dyn Classifier> = Arc::from(constant_model(Arch::Cam, DatasetKind::Mnist, 4));
        let plan = Arc::new(crate::engine::plan_of(m.engine().expect("constant weights")).expect("a CPU plan").clone());
        let x = (random(&[2, 1, 28, 28], 3)? * 2.0)?;
        let t = [3u32, 8];
        let mut requests: Vec<Explanation> = Method::all()
            .iter()
            .map(|&m| Explanation { settings: Settings::default().with("steps", 5), ..Explanation::of(m) })
            .collect();
        requests.push(Explanation { ensemble: Some(Ensemble::VarGrad), samples: 4, ..Explanation::of(Method::GBGC) });
        for e in requests {
            let direct = e.run(m.as_ref(), &x, &t, &mut |_| {})?;
            let recorder = Arc::new(Scripted::recorder(plan.clone()));
            e.run(&EngineModel { model: m.clone(), engine: recorder.clone() }, &x, &t, &mut |_| {})?;
            let answers = recorder
                .take()
                .into_iter()
                .map(|r| Ok((r.clone(), plan.gradient(&r.x, r.n, &r.targets, r.score, r.rule, r.layer)?)))
                .collect::<Result<Vec<_>>>()?;
            let replay = EngineModel { model: m.clone(), engine: Arc::new(Scripted::replay(plan.clone(), answers)) };
            let replayed = e.run(&replay, &x, &t, &mut |_| {})?;
            assert_eq!(
                direct.flatten_all()?.to_vec1::<f32>()?,
                replayed.flatten_all()?.to_vec1::<f32>()?,
                "{}",
                e.label()
            );
        }
        let empty = EngineModel { model: m.clone(), engine: Arc::new(Scripted::replay(plan, Vec::new())) };
        assert!(Explanation::of(Method::VBP)
            .run(&empty, &x, &t, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("not recorded"));
        Ok(())
    }
}
