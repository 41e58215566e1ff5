//! A model with its graph: the candle modules (autograd, other devices, the test oracle) and the graph of the same
//! network over the same parameter tensors, which the CPU executor runs for training steps and, for constant
//! weights, as the evaluation engine.

use super::cnn_step::Workspace;
use super::executor::{Executor, GraphEngine};
use super::lower::{self, StepLayout};
use super::{Engine, Plan};
use crate::graph::{Gradients, Graph, NodeId, Op, ParamId};
use crate::models::{self, Arch, Classifier, ModelSpec, Tapped, TrainingStep};
use crate::nn::{Linear, Pass};
use crate::ops::slice_f32;
use crate::{Error, Result};
use candle_core::{DType, Storage, Tensor, Var};
use candle_nn::VarBuilder;
use std::sync::{Arc, Mutex, OnceLock};

/// A model: candle modules and the graph over the same tensors.
pub struct GraphModel {
    network: Box<dyn Classifier>,
    graph: Arc<Graph>,
    /// The tensors of `graph.params`, in order.
    params: Vec<Tensor>,
    engine: OnceLock<Option<GraphEngine>>,
    /// The SimpleCNN family's fused plan, lowered from the graph on first use for constant weights on the CPU.
    plan: OnceLock<Option<Plan>>,
    /// SimpleCNN's and CAM's hand-written training step, lowered from the graph on first use.
    step: OnceLock<Option<StepLayout>>,
    /// The hand-written training step's buffers, kept between steps.
    workspace: Mutex<Workspace>,
}

/// Builds the model of `spec` with parameters from `vb` (a checkpoint, or a seeded initialiser for training).
pub fn build(spec: ModelSpec, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
    Ok(Box::new(graph_model(spec, vb)?))
}

/// [`build`], as the concrete type.
pub fn graph_model(spec: ModelSpec, vb: VarBuilder) -> Result<GraphModel> {
    let network = models::build(spec, vb.clone())?;
    let graph = Arc::new(models::graph(spec)?);
    let params =
        graph.params.iter().map(|p| vb.get(p.shape.as_slice(), &p.name)).collect::<candle_core::Result<_>>()?;
    Ok(GraphModel {
        network,
        graph,
        params,
        engine: OnceLock::new(),
        plan: OnceLock::new(),
        step: OnceLock::new(),
        workspace: Default::default(),
    })
}

impl GraphModel {
    /// The candle modules.
    fn inner(&self) -> &dyn Classifier {
        self.network.as_ref()
    }

    /// The SimpleCNN family's fused plan, lowered from the graph.
    fn own_plan(&self) -> Option<&Plan> {
        if !self.keeps_own_engine() {
            return None;
        }
        self.plan.get_or_init(|| lower::plan(&self.graph, &self.constant_values()?)).as_ref()
    }

    /// The parameters' values in the graph's order, for constant weights (not being trained) on the CPU.
    fn constant_values(&self) -> Option<Vec<Vec<f32>>> {
        if !self.on_cpu() || self.params.iter().any(|t| t.is_variable()) {
            return None;
        }
        self.params.iter().map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok()).collect()
    }

    /// Whether the executor can read the parameters: `f32` on the CPU.
    fn on_cpu(&self) -> bool {
        self.params.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
    }

    fn build_engine(&self) -> Option<GraphEngine> {
        let values = self.constant_values()?;
        // The plan from the same values (read once), unless it was made already.
        let plan = if self.keeps_own_engine() {
            self.plan.get_or_init(|| lower::plan(&self.graph, &values)).clone()
        } else {
            None
        };
        GraphEngine::new(self.graph.clone(), values, plan).ok()
    }

    /// The graph's training step on the parameters' own storage, then the running-statistics update.
    pub fn graph_step(&self, x: &Tensor, labels: &Tensor) -> Result<TrainingStep> {
        let n = x.dim(0)?;
        models::check_input_shape(self.inner().spec(), x)?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let labels: Vec<u32> = labels.to_dtype(DType::U32)?.to_vec1()?;
        let out = self.with_values(|v| Executor::new(&self.graph, v.to_vec())?.train_step(&xv, &labels, n))?;
        let mut grads = Gradients::default();
        for (id, g) in out.grads.into_iter().enumerate() {
            self.put_grad(&mut grads, Some(id), g)?;
        }
        for s in &out.stats {
            self.update_running(s.node, &s.mean, &s.var, s.count)?;
        }
        let logits = Tensor::from_vec(out.logits, (n, self.graph.classes()), x.device())?;
        Ok(TrainingStep { logits, loss: out.loss, grads })
    }

    /// SimpleCNN's and CAM's hand-written training step (`cnn_step.rs`) on the parameters' own storage, then the
    /// running-statistics update.
    fn buffer_step(&self, layout: &StepLayout, x: &Tensor, labels: &Tensor) -> Result<TrainingStep> {
        let n = x.dim(0)?;
        models::check_input_shape(self.inner().spec(), x)?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let labels: Vec<u32> = labels.to_dtype(DType::U32)?.to_vec1()?;
        let mut workspace =
            self.workspace.lock().map_err(|_| Error::InvalidArgument("an earlier training step panicked".into()))?;
        let step = self.with_values(|values| layout.net(values).step(&xv, &labels, n, &mut workspace))?;
        let mut grads = Gradients::default();
        for (b, g) in layout.blocks.iter().zip(step.blocks) {
            self.put_grad(&mut grads, Some(b.weight), Some(g.weight))?;
            self.put_grad(&mut grads, b.bias, Some(g.bias))?;
            self.put_grad(&mut grads, Some(b.gamma), Some(g.gamma))?;
            self.put_grad(&mut grads, Some(b.beta), Some(g.beta))?;
            self.update_running(b.norm, &g.batch_mean, &g.batch_var, g.count)?;
        }
        // The head's gradients come as weight, bias per layer.
        let mut head = step.head.into_iter();
        for &(w, b, _) in &layout.head {
            let (gw, gb) = (head.next(), head.next());
            self.put_grad(&mut grads, Some(w), gw)?;
            self.put_grad(&mut grads, b, gb)?;
        }
        let logits = Tensor::from_vec(step.logits, (n, self.graph.classes()), x.device())?;
        Ok(TrainingStep { logits, loss: step.loss, grads })
    }

    /// `f` on the parameters' values, read in place (a read lock on each tensor's storage meanwhile).
    fn with_values<T>(&self, f: impl FnOnce(&[&[f32]]) -> Result<T>) -> Result<T> {
        let guards: Vec<_> = self.params.iter().map(|t| t.storage_and_layout()).collect();
        let values = guards
            .iter()
            .map(|(s, l)| match &**s {
                Storage::Cpu(cpu) => Ok(slice_f32(cpu, l)?),
                _ => Err(Error::InvalidArgument("the CPU's training steps need the parameters on the CPU".into())),
            })
            .collect::<Result<Vec<&[f32]>>>()?;
        f(&values)
    }

    /// Parameter `id`'s gradient `g` into `grads`, where both are given.
    fn put_grad(&self, grads: &mut Gradients, id: Option<ParamId>, g: Option<Vec<f32>>) -> Result<()> {
        if let (Some(id), Some(g)) = (id, g) {
            let t = &self.params[id];
            grads.insert(t, Tensor::from_vec(g, t.shape(), t.device())?);
        }
        Ok(())
    }

    /// BatchNorm node `node`'s running statistics moved toward a batch's (`var` biased, over `count` values), as
    /// PyTorch does: `r ← (1 − m)·r + m·batch`, the variance unbiased by `count / (count − 1)`. Constant
    /// statistics (a frozen model) stay.
    fn update_running(&self, node: NodeId, mean: &[f32], var: &[f32], count: usize) -> Result<()> {
        let Op::BatchNorm { mean: rm, var: rv, momentum, .. } = self.graph.nodes[node].op else { return Ok(()) };
        let (rm, rv) = (&self.params[rm], &self.params[rv]);
        if !rm.is_variable() {
            return Ok(());
        }
        let m = momentum as f64;
        let unbias = count as f64 / (count.max(2) - 1) as f64;
        let dev = rm.device();
        let batch_mean = Tensor::from_slice(mean, mean.len(), dev)?;
        let batch_var = Tensor::from_slice(var, var.len(), dev)?;
        let new_mean = ((rm.detach() * (1.0 - m))? + (batch_mean * m)?)?;
        let new_var = ((rv.detach() * (1.0 - m))? + (batch_var * (m * unbias))?)?;
        Var::from_tensor(rm)?.set(&new_mean)?;
        Var::from_tensor(rv)?.set(&new_var)?;
        Ok(())
    }

    /// The hand-written step's network, lowered from the graph (SimpleCNN and CAM).
    fn step_layout(&self) -> Option<&StepLayout> {
        if !self.keeps_own_step() {
            return None;
        }
        self.step.get_or_init(|| lower::step_layout(&self.graph)).as_ref()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// SimpleCNN and CAM keep their hand-written training step (`cnn_step.rs`) and the SimpleCNN family its
    /// fused evaluation plan (`engine/cpu.rs`) until the executor is as fast: at batch 128 on MNIST the graph's step
    /// (with Winograd) takes 0.079–0.088 s for SimpleCNN (hand-written 0.055–0.058) and 0.074–0.075 for CAM
    /// (0.047–0.052; `results/bench/graph-vs-own-step-2026-12-03.txt`).
    fn keeps_own_step(&self) -> bool {
        matches!(self.inner().spec().arch, Arch::SimpleCnn | Arch::Cam)
    }

    fn keeps_own_engine(&self) -> bool {
        Arch::SMALL.contains(&self.inner().spec().arch)
    }

    /// The graph's evaluation engine, whatever [`Classifier::engine`] serves (tests).
    pub fn graph_engine(&self) -> Option<&GraphEngine> {
        self.engine.get_or_init(|| self.build_engine()).as_ref()
    }
}

impl Classifier for GraphModel {
    fn spec(&self) -> ModelSpec {
        self.inner().spec()
    }

    fn tap_names(&self) -> Vec<String> {
        self.graph.taps.iter().map(|(name, _)| name.clone()).collect()
    }

    fn last_feature_index(&self) -> usize {
        self.inner().last_feature_index()
    }

    fn default_gradcam_layer(&self) -> usize {
        self.inner().default_gradcam_layer()
    }

    fn cam_head(&self) -> Option<&Linear> {
        self.inner().cam_head()
    }

    fn engine(&self) -> Option<&dyn Engine> {
        if self.keeps_own_engine() {
            return self.own_plan().map(|p| p as &dyn Engine);
        }
        self.engine.get_or_init(|| self.build_engine()).as_ref().map(|e| e as &dyn Engine)
    }

    /// The graph's engine, also for the SimpleCNN family (whose gradients come from its fused plan).
    fn propagator(&self) -> Option<&dyn Engine> {
        self.graph_engine().map(|e| e as &dyn Engine)
    }

    fn layer_names(&self) -> Vec<(usize, String)> {
        self.inner().layer_names()
    }

    /// Through the graph for constant weights on the CPU, else through candle.
    fn attention_maps(&self, x: &Tensor) -> candle_core::Result<Vec<(String, Tensor)>> {
        let Some(engine) = self.graph_engine() else {
            return self.inner().attention_maps(x);
        };
        models::check_input_shape(self.inner().spec(), x).map_err(candle_core::Error::wrap)?;
        let n = x.dim(0)?;
        let maps = engine.maps(&x.flatten_all()?.to_vec1::<f32>()?, n).map_err(candle_core::Error::wrap)?;
        maps.into_iter().map(|(name, (h, w), m)| Ok((name, Tensor::from_vec(m, (n, h, w), x.device())?))).collect()
    }

    fn training_loss(&self, x: &Tensor, labels: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        self.inner().training_loss(x, labels)
    }

    /// On the CPU in `f32`, through the graph; elsewhere through candle's autograd.
    fn training_step(&self, x: &Tensor, labels: &Tensor) -> Result<TrainingStep> {
        if self.on_cpu() && x.device().is_cpu() && x.dtype() == DType::F32 {
            if let Some(layout) = self.step_layout() {
                return self.buffer_step(layout, x, labels);
            }
            return self.graph_step(x, labels);
        }
        models::autograd_step(self.inner(), x, labels)
    }

    fn forward_tapped(
        &self,
        x: &Tensor,
        pass: &Pass,
        tap: Option<usize>,
    ) -> candle_core::Result<(Tensor, Option<Tapped>)> {
        self.inner().forward_tapped(x, pass, tap)
    }
}
