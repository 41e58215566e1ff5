//! Explanations of any network graph on the GPU: the logits and the gradient of a class score (logit or
//! probability) with respect to the input or to any tapped layer, under the vanilla, guided (Springenberg et al.
//! 2015) or deconvnet (Zeiler & Fergus 2014) ReLU rule — what every gradient-based method asks of a model.
//!
//! It runs the same [`Graph`] and the same WGSL kernels as GPU training (`train.rs`), in evaluation mode: BatchNorm
//! from its running statistics, no loss, no parameter gradients. So every model the trainer trains — the Residual
//! Attention Networks and WARN too — is explained on the GPU without a network spelled again. [`GpuPlan`] stays
//! the faster engine of the SimpleCNN family (fused convolution and BatchNorm, CBAM as one block).
//!
//! [`GpuPlan`]: super::GpuPlan

use super::train::GpuTrainer;
use super::{gpu_error, Gpu};
use crate::engine::Gradient;
use crate::graph::{self, Graph, Score};
use crate::ops::ReluRule;
use crate::Result;
use std::sync::{Arc, Mutex};

/// Bytes of values and gradients the work buffers may take (the batch is cut to fit).
const WORK_BYTES: u64 = 1 << 30;

/// At most this many images per command buffer.
const MAX_ROWS: usize = 32;

/// A network graph's parameters on the GPU, answering logit and gradient requests as the CPU's graph engine does.
pub struct GpuGraph {
    graph: Arc<Graph>,
    /// The evaluation-mode buffers for `max_rows` images; one request at a time.
    work: Mutex<GpuTrainer>,
    max_rows: usize,
    adapter: String,
}

impl GpuGraph {
    /// Uploads `values` (the parameters in `graph.params` order, running statistics too) to `gpu`.
    pub fn new(gpu: Arc<Gpu>, graph: Arc<Graph>, values: &[Vec<f32>]) -> Result<GpuGraph> {
        let lens: Vec<u64> = graph.nodes.iter().map(|n| graph::len(n.shape) as u64).collect();
        let per_image = 8 * lens.iter().sum::<u64>().max(1);
        let largest = 4 * lens.iter().copied().max().unwrap_or(1).max(1);
        let max_rows = (WORK_BYTES / per_image).min(gpu.max_binding() / largest).clamp(1, MAX_ROWS as u64) as usize;
        let adapter = gpu.name.clone();
        let work = GpuTrainer::for_evaluation(gpu, graph.clone(), values, max_rows)?;
        Ok(GpuGraph { graph, work: Mutex::new(work), max_rows, adapter })
    }

    /// Caps the images per command buffer (tests split small requests this way).
    #[cfg(test)]
    pub(crate) fn set_max_rows(&mut self, rows: usize) {
        self.max_rows = rows.clamp(1, self.max_rows);
    }

    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Logits of `n` images (`x`: `n × C×H×W`, image-major).
    pub async fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check(x, n, &vec![0; n], None)?;
        let mut logits = Vec::with_capacity(n * self.graph.classes());
        for (start, m) in super::batches(n, self.max_rows) {
            logits.extend(self.run(&x[start * self.input_len()..][..m * self.input_len()], m, None).await?.0);
        }
        Ok(logits)
    }

    /// The gradient of each image's target `score` with respect to the input (`layer` None) or to
    /// `features[layer]`, with the ReLU backward `rule`; for a layer, also its activation. Both image-major.
    pub async fn gradient(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        score: Score,
        rule: ReluRule,
        layer: Option<usize>,
    ) -> Result<Gradient> {
        self.check(x, n, targets, layer)?;
        let stop = layer.map_or(0, |l| self.graph.taps[l].1);
        let (prob, rule) = (u32::from(score == Score::Prob), super::plan::rule_id(rule));
        let mut all = Gradient::empty(layer.is_some());
        for (start, m) in super::batches(n, self.max_rows) {
            let seed = (&targets[start..start + m], prob, rule, stop);
            let (grad, activation) =
                self.run(&x[start * self.input_len()..][..m * self.input_len()], m, Some(seed)).await?;
            all.append(Gradient { grad, activation });
        }
        Ok(all)
    }

    /// One command buffer for at most `max_rows` images.
    // The work buffers stay locked until their read-back is done: a second request at the same time gets "busy"
    // (`try_lock`), never another request's values.
    #[allow(clippy::await_holding_lock)]
    async fn run(
        &self,
        x: &[f32],
        n: usize,
        seed: Option<(&[u32], u32, u32, usize)>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let work = self.work.try_lock().map_err(|_| gpu_error("busy", "one request at a time"))?;
        work.evaluate(x, n, seed).await
    }

    fn input_len(&self) -> usize {
        graph::len(self.graph.input_shape())
    }

    /// The graph's request check ([`Graph::check_request`]), and finite images (a non-finite value would spread
    /// through the GPU's buffers without an error).
    fn check(&self, x: &[f32], n: usize, targets: &[u32], layer: Option<usize>) -> Result<()> {
        self.graph.check_request(x, n, targets, layer)?;
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            crate::invalid!("the images hold a non-finite value ({v})");
        }
        Ok(())
    }
}

/// Natively the GPU answers synchronously, so this engine serves the attribution methods directly.
#[cfg(not(target_arch = "wasm32"))]
impl crate::engine::Engine for GpuGraph {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn classes(&self) -> usize {
        self.graph.classes()
    }

    fn layer_shape(&self, layer: usize) -> (usize, usize, usize) {
        self.graph.tap_shape(layer)
    }

    fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        super::block_on(GpuGraph::forward(self, x, n))
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
        super::block_on(GpuGraph::gradient(self, x, n, targets, score, rule, layer))
    }
}
