//! A model with its graph: the candle modules (autograd, other devices, the test oracle) and the graph of the same
//! network over the same parameter tensors, which the CPU executor runs for training steps and, for constant
//! weights, as the evaluation engine.

use super::cnn_step::Workspace;
use super::executor::{Executor, GraphEngine};
use super::{simple_cnn, Engine, Plan};
use crate::graph::{Gradients, Graph, Op};
use crate::models::simple_cnn::SimpleCnn;
use crate::models::{self, Arch, Classifier, ModelSpec, Tapped, TrainingStep};
use crate::nn::{Linear, Pass};
use crate::ops::slice_f32;
use crate::{Error, Result};
use candle_core::{DType, Storage, Tensor, Var};
use candle_nn::VarBuilder;
use std::sync::{Arc, Mutex, OnceLock};

/// A model: candle modules and the graph over the same tensors.
pub struct GraphModel {
    network: Network,
    graph: Arc<Graph>,
    /// The tensors of `graph.params`, in order.
    params: Vec<Tensor>,
    engine: OnceLock<Option<GraphEngine>>,
    /// The SimpleCNN family's fused evaluation plan, built on first use for constant weights on the CPU.
    plan: OnceLock<Option<Plan>>,
    /// The hand-written training step's buffers, kept between steps.
    workspace: Mutex<Workspace>,
}

/// The candle modules: the SimpleCNN family by type (for its own plan and step), the others as classifiers.
enum Network {
    Simple(SimpleCnn),
    Other(Box<dyn Classifier>),
}

/// Builds the model of `spec` with parameters from `vb` (a checkpoint, or a seeded initialiser for training).
pub fn build(spec: ModelSpec, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
    Ok(Box::new(graph_model(spec, vb)?))
}

/// [`build`], as the concrete type.
pub fn graph_model(spec: ModelSpec, vb: VarBuilder) -> Result<GraphModel> {
    let network = match spec.arch {
        Arch::SimpleCnn | Arch::Cam | Arch::Cbam => Network::Simple(models::simple_cnn::simple_cnn(spec, vb.clone())?),
        _ => Network::Other(models::build(spec, vb.clone())?),
    };
    let graph = Arc::new(models::graph(spec)?);
    let params =
        graph.params.iter().map(|p| vb.get(p.shape.as_slice(), &p.name)).collect::<candle_core::Result<_>>()?;
    Ok(GraphModel {
        network,
        graph,
        params,
        engine: OnceLock::new(),
        plan: OnceLock::new(),
        workspace: Default::default(),
    })
}

impl GraphModel {
    /// The candle modules.
    fn inner(&self) -> &dyn Classifier {
        match &self.network {
            Network::Simple(m) => m,
            Network::Other(m) => m.as_ref(),
        }
    }

    /// The SimpleCNN family's fused plan.
    fn own_plan(&self) -> Option<&Plan> {
        let Network::Simple(m) = &self.network else { return None };
        self.plan.get_or_init(|| simple_cnn::plan(m)).as_ref()
    }

    /// Whether the executor can read the parameters: `f32` on the CPU.
    fn on_cpu(&self) -> bool {
        self.params.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
    }

    fn build_engine(&self) -> Option<GraphEngine> {
        if !self.on_cpu() || self.params.iter().any(|t| t.is_variable()) {
            return None;
        }
        let values: Option<Vec<Vec<f32>>> =
            self.params.iter().map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok()).collect();
        let plan = self.own_plan().cloned();
        GraphEngine::new(self.graph.clone(), values?, plan).ok()
    }

    /// The graph's training step on the parameters' own storage, then the running-statistics update.
    pub fn graph_step(&self, x: &Tensor, labels: &Tensor) -> Result<TrainingStep> {
        let n = x.dim(0)?;
        models::check_input_shape(self.inner().spec(), x)?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let labels: Vec<u32> = labels.to_dtype(DType::U32)?.to_vec1()?;
        let out = {
            let guards: Vec<_> = self.params.iter().map(|t| t.storage_and_layout()).collect();
            let values = guards
                .iter()
                .map(|(s, l)| match &**s {
                    Storage::Cpu(cpu) => Ok(slice_f32(cpu, l)?),
                    _ => Err(Error::InvalidArgument("the graph executor runs on the CPU".into())),
                })
                .collect::<Result<Vec<&[f32]>>>()?;
            Executor::new(&self.graph, values)?.train_step(&xv, &labels, n)?
        };
        let mut grads = Gradients::default();
        for (t, g) in self.params.iter().zip(out.grads) {
            if let Some(g) = g {
                grads.insert(t, Tensor::from_vec(g, t.shape(), t.device())?);
            }
        }
        for s in &out.stats {
            let Op::BatchNorm { mean, var, momentum, .. } = self.graph.nodes[s.node].op else { continue };
            let (rm, rv) = (&self.params[mean], &self.params[var]);
            if !rm.is_variable() {
                continue;
            }
            let m = momentum as f64;
            let unbias = s.count as f64 / (s.count.max(2) - 1) as f64;
            let dev = rm.device();
            let batch_mean = Tensor::from_slice(&s.mean, s.mean.len(), dev)?;
            let batch_var = Tensor::from_slice(&s.var, s.var.len(), dev)?;
            let new_mean = ((rm.detach() * (1.0 - m))? + (batch_mean * m)?)?;
            let new_var = ((rv.detach() * (1.0 - m))? + (batch_var * (m * unbias))?)?;
            Var::from_tensor(rm)?.set(&new_mean)?;
            Var::from_tensor(rv)?.set(&new_var)?;
        }
        let logits = Tensor::from_vec(out.logits, (n, self.graph.classes()), x.device())?;
        Ok(TrainingStep { logits, loss: out.loss, grads })
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
        if let (true, Network::Simple(m)) = (self.keeps_own_step(), &self.network) {
            let weight = m.convs[0].weight();
            if x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
                return simple_cnn::buffer_step(m, &self.workspace, x, labels);
            }
        }
        if self.on_cpu() && x.device().is_cpu() && x.dtype() == DType::F32 {
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
