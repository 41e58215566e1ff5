//! Training on the GPU: the network graph's training pass as WGSL kernels through wgpu (WebGPU in the browser,
//! Vulkan, Metal or DX12 natively). The same [`Graph`] the CPU executor trains is walked once to lay out one
//! command buffer per step: the forward pass with batch statistics (BatchNorm, Ioffe & Szegedy 2015), the mean
//! cross-entropy, the backward pass to every parameter, SGD with momentum and weight decay in place (PyTorch's rule)
//! and BatchNorm's running statistics. Nothing is read back but the loss and hit totals, when asked.
//!
//! Every reduction runs in a fixed order (a workgroup tree or one invocation's loop; no float atomics), so a run is
//! deterministic on one adapter. A value read by two layers gets its gradients summed in the backward pass's order.
//!
//! Every layer of the graph runs: convolution (any stride), BatchNorm (shared between layers too), ReLU, sigmoid,
//! tanh, 2×2 max-pooling (floor and ceil), global average and max pooling, channel max and mean, concatenation, sum,
//! product (broadcast per channel or per position), the attention gate `(1 + M)·T`, aligned bilinear up-sampling,
//! spatial and channel softmax, attention-head pooling and mixing, grouped log-softmax, linear — and WARN's
//! head-overlap penalty in the loss. So SimpleCNN, CAM (Zhou et al. 2016), CBAM (Woo et al. 2018), the Residual
//! Attention Networks (Wang et al. 2017) and WARN (Rodríguez et al. 2018) all train here.
//!
//! The same walk in evaluation mode ([`GpuTrainer::for_evaluation`], `evaluate`: BatchNorm from the running
//! statistics, the score's gradient in place of the loss, a ReLU backward rule, no parameter gradients) is the GPU's
//! graph engine, `gpu::GpuGraph`, which explains every model.

use super::kernels::{blocks4, encode, u, Dispatch, Kernel, Params, WORKGROUP};
use super::{gpu_error, Gpu};
use crate::graph::{self, Graph, Op};
use crate::{Error, Result};
use std::sync::Arc;

/// Convolutions with at least this many weights add their weight gradient over the images in one invocation per
/// weight (parallel enough already); smaller ones compute one partial per image and weight first.
const DIRECT_WEIGHT_GRAD: usize = 1 << 16;

/// The running totals of [`GpuTrainer::tally`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Σ per-image loss since the last reset.
    pub loss_sum: f64,
    /// Images whose first largest logit was the label.
    pub hits: usize,
    /// The last step's mean loss.
    pub last_loss: f32,
    /// Steps since the last reset.
    pub steps: usize,
}

/// A model being trained on the GPU: its parameters, gradients, momentum buffers and the work buffers of a batch.
pub struct GpuTrainer {
    gpu: Arc<Gpu>,
    graph: Arc<Graph>,
    max_batch: usize,
    momentum: f32,
    weight_decay: f32,
    /// Every graph parameter (running statistics too), in `graph.params` order.
    params: Vec<wgpu::Buffer>,
    /// Trainable parameters: their gradient and momentum buffer.
    grads: Vec<Option<wgpu::Buffer>>,
    velocity: Vec<Option<wgpu::Buffer>>,
    /// Whether the momentum buffers hold a previous step's values (else the next step starts them, `b = g`).
    velocity_started: bool,
    /// Each node's value and gradient for `max_batch` images.
    values: Vec<wgpu::Buffer>,
    node_grads: Vec<wgpu::Buffer>,
    /// Per node: BatchNorm's batch statistics (mean, variance) or max-pooling's positions.
    aux: Vec<Option<wgpu::Buffer>>,
    /// Per loss penalty: the Gram matrices of its masks.
    grams: Vec<wgpu::Buffer>,
    scratch: wgpu::Buffer,
    /// A convolution's weight gradient per image, before the images are added.
    per_image: wgpu::Buffer,
    /// Gradients of a parameter used by two layers (CBAM's shared MLP), before they are added: weight, bias.
    param_scratch: [wgpu::Buffer; 2],
    ones: wgpu::Buffer,
    zeros: wgpu::Buffer,
    labels: wgpu::Buffer,
    loss: wgpu::Buffer,
    tally: wgpu::Buffer,
    /// One [`Params`] slot per kernel launch of a step.
    uniforms: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Evaluation only ([`GpuTrainer::for_evaluation`]): each BatchNorm's running statistics as `x·scale + shift`.
    eval_bn: Vec<Option<(wgpu::Buffer, wgpu::Buffer)>>,
}

/// What a pass computes: a training step, or evaluation mode (running statistics, no parameter gradients, no loss)
/// with a ReLU backward rule (`relu_back` in `common.wgsl`: 0 vanilla, 1 guided, 2 deconv).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Train,
    Eval { rule: u32 },
}

/// How a product's second factor is broadcast over its first (`train_elementwise`'s `p.k`): 0 the same shape, 1 one
/// value per channel, 2 one value per position.
fn broadcast_mode(graph: &Graph, node: &graph::Node) -> Option<u32> {
    let [a, b] = node.inputs[..] else { return None };
    let ((c, h, w), shape) = (graph.nodes[a].shape, graph.nodes[b].shape);
    match shape {
        s if s == (c, h, w) => Some(0),
        s if s == (c, 1, 1) => Some(1),
        s if s == (1, h, w) => Some(2),
        _ => None,
    }
}

/// Rows of a softmax layer's `n` images (each row contiguous) and `train_softmax`'s forward switch.
fn softmax_rows(op: &Op, (c, _, _): graph::Shape, n: usize) -> (usize, u32) {
    match *op {
        Op::SpatialSoftmax => (n * c, 0),
        Op::LogSoftmaxGroups { groups } => (n * groups, 2),
        _ => (n, 0),
    }
}

fn penalty_node(penalty: &graph::Penalty) -> usize {
    let graph::Penalty::HeadOverlap { node, .. } = penalty;
    *node
}

/// Whether the GPU trainer runs every layer of `graph` as it stands; the first it does not, as an error.
pub fn check_graph(graph: &Graph) -> Result<()> {
    for node in &graph.nodes {
        let ok = match &node.op {
            Op::Mul => broadcast_mode(graph, node).is_some(),
            Op::Gate => node.inputs.len() == 2 && graph.nodes[node.inputs[1]].shape == node.shape,
            Op::MaxPool2 { .. } => {
                let (_, h, w) = graph.nodes[node.inputs[0]].shape;
                h > 0 && w > 0
            }
            _ => true,
        };
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "the GPU trainer does not run {:?} on inputs of shapes {:?}",
                node.op,
                node.inputs.iter().map(|&i| graph.nodes[i].shape).collect::<Vec<_>>()
            )));
        }
    }
    for penalty in &graph.penalties {
        let graph::Penalty::HeadOverlap { node, .. } = penalty;
        if graph.nodes.get(*node).is_none() {
            crate::invalid!("a penalty on node {node}, beyond the graph's {}", graph.nodes.len());
        }
    }
    Ok(())
}

impl GpuTrainer {
    /// A trainer for `graph` with parameter `values` (in `graph.params` order) and, when resuming, the momentum
    /// buffers of the trainable ones; batches of at most `max_batch` images.
    pub fn new(
        gpu: Arc<Gpu>,
        graph: Arc<Graph>,
        values: &[Vec<f32>],
        velocity: Option<&[Option<Vec<f32>>]>,
        max_batch: usize,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<GpuTrainer> {
        Self::build(gpu, graph, values, velocity, max_batch, (momentum, weight_decay), true)
    }

    /// Evaluation-mode buffers for `graph` with parameter `values`, for batches of at most `max_batch` images: no
    /// gradients or momentum buffers of the parameters; BatchNorm from its running statistics (see `gpu::GpuGraph`).
    pub(super) fn for_evaluation(
        gpu: Arc<Gpu>,
        graph: Arc<Graph>,
        values: &[Vec<f32>],
        max_batch: usize,
    ) -> Result<GpuTrainer> {
        Self::build(gpu, graph, values, None, max_batch, (0.0, 0.0), false)
    }

    fn build(
        gpu: Arc<Gpu>,
        graph: Arc<Graph>,
        values: &[Vec<f32>],
        velocity: Option<&[Option<Vec<f32>>]>,
        max_batch: usize,
        (momentum, weight_decay): (f32, f32),
        train: bool,
    ) -> Result<GpuTrainer> {
        check_graph(&graph)?;
        if values.len() != graph.params.len() {
            crate::invalid!("{} parameter tensors for a graph of {}", values.len(), graph.params.len());
        }
        for (v, p) in values.iter().zip(&graph.params) {
            if v.len() != p.len() {
                crate::invalid!("parameter {} has {} values, expected {}", p.name, v.len(), p.len());
            }
        }
        if max_batch == 0 {
            crate::invalid!("the batch size must be at least 1");
        }
        let device = &gpu.device;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let sized = |label: &str, values: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (4 * values).max(16) as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        let filled = |label: &str, data: &[f32]| {
            let b = sized(label, data.len());
            gpu.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
            b
        };
        let params: Vec<_> = values.iter().zip(&graph.params).map(|(v, p)| filled(&p.name, v)).collect();
        let trainable = |p: &graph::Param| train && !p.buffer;
        let grads = graph.params.iter().map(|p| trainable(p).then(|| sized("gradient", p.len()))).collect();
        let velocity_started = velocity.is_some();
        let velocity = match velocity {
            Some(v) => {
                if v.len() != graph.params.len() {
                    crate::invalid!("{} momentum buffers for a graph of {} parameters", v.len(), graph.params.len());
                }
                graph
                    .params
                    .iter()
                    .zip(v)
                    .map(|(p, v)| match (p.buffer, v) {
                        (true, _) => Ok(None),
                        (false, Some(v)) if v.len() == p.len() => Ok(Some(filled("momentum", v))),
                        (false, Some(_)) => {
                            Err(Error::InvalidArgument(format!("momentum of {}: wrong length", p.name)))
                        }
                        (false, None) => Ok(Some(filled("momentum", &vec![0.0; p.len()]))),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None => graph.params.iter().map(|p| trainable(p).then(|| sized("momentum", p.len()))).collect(),
        };
        let eval_bn = (graph.nodes.iter())
            .map(|node| match node.op {
                Op::BatchNorm { gamma, beta, mean, var, eps, .. } if !train => {
                    let [g, b, m, v] = [gamma, beta, mean, var].map(|p| values[p].as_slice());
                    let (scale, shift) = crate::engine::executor::eval_affine(g, b, m, v, eps);
                    Some((filled("BatchNorm scale", &scale), filled("BatchNorm shift", &shift)))
                }
                _ => None,
            })
            .collect();
        let lens: Vec<usize> = graph.nodes.iter().map(|n| graph::len(n.shape)).collect();
        let largest = lens.iter().copied().max().unwrap_or(1);
        let values = lens.iter().map(|&l| sized("value", max_batch * l)).collect();
        let node_grads = lens.iter().map(|&l| sized("value gradient", max_batch * l)).collect();
        let aux = graph
            .nodes
            .iter()
            .map(|n| match n.op {
                Op::BatchNorm { .. } => Some(sized("batch statistics", 2 * n.shape.0)),
                Op::MaxPool2 { .. } | Op::GlobalMaxPool | Op::ChannelMax | Op::ChannelMean => {
                    Some(sized("pool positions", max_batch * graph::len(n.shape)))
                }
                _ => None,
            })
            .collect();
        let largest_conv = graph
            .nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Conv { weight, .. } => Some(graph.params[weight].len()),
                _ => None,
            })
            .filter(|&l| l < DIRECT_WEIGHT_GRAD)
            .max()
            .unwrap_or(1);
        let grams = graph
            .penalties
            .iter()
            .map(|graph::Penalty::HeadOverlap { node, .. }| {
                let heads = graph.nodes[*node].shape.0;
                sized("Gram matrices", max_batch * heads * heads)
            })
            .collect();
        let largest_param = if train { graph.params.iter().map(|p| p.len()).max().unwrap_or(1) } else { 1 };
        // What one read-back holds: a parameter, or in evaluation a node's values for a batch.
        let readable = if train { largest_param } else { max_batch * largest };
        let widest = graph.nodes.iter().map(|n| n.shape.0.max(graph::len(n.shape))).max().unwrap_or(1);
        let align = super::kernels::uniform_slot(&device.limits());
        let uniforms = |device: &wgpu::Device, slots: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: (slots.max(1) * align) as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let mut trainer = GpuTrainer {
            scratch: sized("scratch", max_batch * largest),
            per_image: sized("per-image weight gradients", if train { max_batch * largest_conv } else { 1 }),
            param_scratch: [sized("parameter scratch", largest_param), sized("parameter scratch", largest_param)],
            ones: filled("ones", &vec![1.0; widest]),
            zeros: filled("zeros", &vec![0.0; widest]),
            labels: sized("labels", max_batch),
            loss: sized("loss", 2 * max_batch),
            tally: filled("tally", &[0.0; 4]),
            uniforms: uniforms(device, 1),
            staging: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back"),
                size: (4 * readable.max(4)) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            gpu,
            graph,
            max_batch,
            momentum,
            weight_decay,
            params,
            grads,
            velocity,
            velocity_started,
            values,
            node_grads,
            aux,
            grams,
            eval_bn,
        };
        // The launches of a full batch's step (or evaluation pass, with its score's launch): one uniform slot each.
        let slots = if train {
            let m = Mode::Train;
            trainer.forward(max_batch, m).len() + trainer.backward(max_batch, m, 0).len() + trainer.update(0, 0.0).len()
        } else {
            let m = Mode::Eval { rule: 0 };
            trainer.forward(max_batch, m).len() + 1 + trainer.backward(max_batch, m, 0).len()
        };
        trainer.uniforms = uniforms(&trainer.gpu.device, slots);
        Ok(trainer)
    }

    /// The device it trains on.
    pub fn device(&self) -> Arc<Gpu> {
        self.gpu.clone()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// One SGD step at learning rate `lr` on `n` images `x` (`n × c × h × w`) with `labels`.
    pub async fn step(&mut self, x: &[f32], labels: &[u32], lr: f32) -> Result<()> {
        let n = labels.len();
        let len = graph::len(self.graph.input_shape());
        if n == 0 || n > self.max_batch {
            crate::invalid!("a batch of {n} images (the trainer holds 1 to {})", self.max_batch);
        }
        if x.len() != n * len {
            crate::invalid!("{} input values for {n} images of {len}", x.len());
        }
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            crate::invalid!("the batch holds a non-finite value ({v})");
        }
        let classes = self.graph.classes();
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            crate::invalid!("label {l} is not below the {classes} classes");
        }
        if !lr.is_finite() || lr < 0.0 {
            crate::invalid!("learning rate {lr}");
        }
        self.gpu.queue.write_buffer(&self.values[0], 0, bytemuck::cast_slice(x));
        self.gpu.queue.write_buffer(&self.labels, 0, bytemuck::cast_slice(labels));
        let mut d = self.forward(n, Mode::Train);
        d.extend(self.backward(n, Mode::Train, 0));
        d.extend(self.update(n, lr));
        self.submit(&d, None).await?;
        self.velocity_started = self.momentum > 0.0;
        Ok(())
    }

    /// The forward pass of `n` images; in training, with the loss, penalties and tally after it.
    fn forward(&self, n: usize, mode: Mode) -> Vec<Dispatch<'_>> {
        let k = &self.gpu.kernels;
        let g = &self.graph;
        let mut d = Vec::new();
        for (id, node) in g.nodes.iter().enumerate() {
            let (c, h, w) = node.shape;
            let Some(&input) = node.inputs.first() else { continue };
            let (ci, hi, wi) = g.nodes[input].shape;
            let x = &self.values[input];
            let y = &self.values[id];
            let base =
                Params { n: u(n), c: u(ci), h: u(hi), w: u(wi), co: u(c), ho: u(h), wo: u(w), ..Default::default() };
            match node.op {
                Op::Conv { weight, bias, k: size, stride, pad } => d.push(Dispatch {
                    kernel: &k.conv_forward,
                    params: Params {
                        total: blocks4(n, c, h, w),
                        k: u(size),
                        pad: u(pad),
                        spare: [0, 0, 0, u(stride)],
                        ..base
                    },
                    buffers: vec![
                        x,
                        &self.params[weight],
                        bias.map_or(&self.zeros, |b| &self.params[b]),
                        y,
                        &self.ones,
                        &self.zeros,
                    ],
                }),
                Op::BatchNorm { .. } if mode != Mode::Train => {
                    let (scale, shift) = self.eval_bn[id].as_ref().expect("evaluation statistics");
                    d.push(Dispatch {
                        kernel: &k.affine_forward,
                        params: Params { total: u(n * c * h * w), ..base },
                        buffers: vec![x, scale, shift, y],
                    });
                }
                Op::BatchNorm { gamma, beta, eps, .. } => {
                    let stats = self.aux[id].as_ref().expect("batch statistics");
                    let p = Params { spare: [eps.to_bits(), 0, 0, 0], ..base };
                    d.push(Dispatch {
                        kernel: &k.train_bn_stats,
                        params: Params { total: u(c) * WORKGROUP, ..p },
                        buffers: vec![x, stats],
                    });
                    d.push(Dispatch {
                        kernel: &k.train_bn_forward,
                        params: Params { total: u(n * c * h * w), ..p },
                        buffers: vec![x, stats, &self.params[gamma], &self.params[beta], y],
                    });
                }
                Op::Relu => d.push(Dispatch {
                    kernel: &k.relu_forward,
                    params: Params { total: u(n * c * h * w), ..base },
                    buffers: vec![x, y],
                }),
                Op::MaxPool2 { .. } => d.push(Dispatch {
                    kernel: &k.pool_forward,
                    params: Params { total: u(n * c * h * w), ..base },
                    buffers: vec![x, y, self.aux[id].as_ref().expect("pool positions")],
                }),
                Op::GlobalAvgPool => d.push(Dispatch {
                    kernel: &k.gap_forward,
                    params: Params { total: u(n * c), ..base },
                    buffers: vec![x, y],
                }),
                Op::Sigmoid | Op::Tanh => d.push(Dispatch {
                    kernel: &k.train_activation,
                    params: Params { total: u(n * c * h * w), flag: if node.op == Op::Tanh { 2 } else { 0 }, ..base },
                    buffers: vec![x, x, y],
                }),
                Op::Gate => d.push(Dispatch {
                    kernel: &k.train_elementwise,
                    params: Params { total: u(n * c * h * w), flag: 3, ..base },
                    buffers: vec![&self.values[node.inputs[1]], x, y],
                }),
                Op::Upsample { .. } => d.push(Dispatch {
                    kernel: &k.train_upsample,
                    params: Params { total: u(n * c * h * w), ..base },
                    buffers: vec![x, y],
                }),
                Op::SpatialSoftmax | Op::Softmax | Op::LogSoftmaxGroups { .. } => {
                    let (rows, flag) = softmax_rows(&node.op, node.shape, n);
                    d.push(Dispatch {
                        kernel: &k.train_softmax,
                        params: Params { total: u(rows), k: u(n * graph::len(node.shape) / rows), flag, ..base },
                        buffers: vec![x, x, y],
                    })
                }
                Op::HeadPool { heads } => d.push(Dispatch {
                    kernel: &k.train_heads,
                    params: Params { total: u(n * ci), k: u(ci / heads), ..base },
                    buffers: vec![x, &self.values[node.inputs[1]], y],
                }),
                Op::HeadMix { .. } => d.push(Dispatch {
                    kernel: &k.train_heads,
                    params: Params { total: u(n * c), c: u(ci), k: u(c), flag: 3, ..base },
                    buffers: vec![x, &self.values[node.inputs[1]], y],
                }),
                Op::GlobalMaxPool => d.push(Dispatch {
                    kernel: &k.train_global_max,
                    params: Params { total: u(n * c), ..base },
                    buffers: vec![x, self.aux[id].as_ref().expect("positions"), y],
                }),
                Op::ChannelMax | Op::ChannelMean => d.push(Dispatch {
                    kernel: &k.train_channel_pool,
                    params: Params { total: u(n * h * w), k: u(matches!(node.op, Op::ChannelMean) as usize), ..base },
                    buffers: vec![x, self.aux[id].as_ref().expect("positions"), y],
                }),
                Op::Concat => {
                    let mut offset = 0;
                    for &j in &node.inputs {
                        let (cj, _, _) = g.nodes[j].shape;
                        d.push(Dispatch {
                            kernel: &k.train_concat,
                            params: Params { total: u(n * cj * h * w), c: u(cj), k: u(offset), ..base },
                            buffers: vec![&self.values[j], y],
                        });
                        offset += cj;
                    }
                }
                Op::Add | Op::Mul => d.push(Dispatch {
                    kernel: &k.train_elementwise,
                    params: Params {
                        total: u(n * c * h * w),
                        k: broadcast_mode(g, node).expect("checked"),
                        flag: u(matches!(node.op, Op::Mul) as usize),
                        ..base
                    },
                    buffers: vec![x, &self.values[node.inputs[1]], y],
                }),
                Op::Linear { weight, bias } => {
                    let (fan_in, out) = (ci * hi * wi, c * h * w);
                    d.push(Dispatch {
                        kernel: &k.linear_forward,
                        params: Params { total: u(n.div_ceil(4) * out.div_ceil(4)), c: u(fan_in), co: u(out), ..base },
                        buffers: vec![x, &self.params[weight], bias.map_or(&self.zeros, |b| &self.params[b]), y],
                    })
                }
                Op::Input => {}
            }
        }
        if mode != Mode::Train {
            return d;
        }
        let out = g.output;
        d.push(Dispatch {
            kernel: &k.train_softmax_xent,
            params: Params { total: u(n), n: u(n), co: u(g.classes()), ..Default::default() },
            buffers: vec![&self.values[out], &self.labels, &self.node_grads[out], &self.loss],
        });
        for (i, penalty) in g.penalties.iter().enumerate() {
            d.push(Dispatch {
                kernel: &k.train_head_overlap,
                params: Params { total: u(n), ..self.penalty_params(penalty, n) },
                buffers: vec![&self.values[penalty_node(penalty)], &self.grams[i], &self.loss],
            });
        }
        d.push(Dispatch {
            kernel: &k.train_tally,
            params: Params { total: 1, n: u(n), ..Default::default() },
            buffers: vec![&self.loss, &self.tally],
        });
        d
    }

    /// [`Params`] of a penalty's kernel for `n` images (`total` left to the caller).
    fn penalty_params(&self, penalty: &graph::Penalty, n: usize) -> Params {
        let graph::Penalty::HeadOverlap { node, weight } = penalty;
        let (heads, h, w) = self.graph.nodes[*node].shape;
        Params { n: u(n), c: u(heads), h: u(h), w: u(w), spare: [weight.to_bits(), 0, 0, 0], ..Default::default() }
    }

    /// The backward pass of `n` images from the output's gradient down to the input of node `stop + 1` (`stop` 0:
    /// the network's input); in training, with every parameter's gradient.
    fn backward(&self, n: usize, mode: Mode, stop: usize) -> Vec<Dispatch<'_>> {
        let k = &self.gpu.kernels;
        let g = &self.graph;
        let mut d = Vec::new();
        let mut written = vec![false; g.nodes.len()];
        let mut param_written = vec![false; g.params.len()];
        let train = mode == Mode::Train;
        // In evaluation the score's gradient starts the output's.
        written[g.output] = !train;
        // The penalties' gradients start their masks' gradients (the cross-entropy's starts the output's).
        for (i, penalty) in g.penalties.iter().enumerate().filter(|_| train) {
            let node = penalty_node(penalty);
            let len = n * graph::len(g.nodes[node].shape);
            let (target, add) = self.node_target(&mut written, node, n);
            d.push(Dispatch {
                kernel: &k.train_head_overlap,
                params: Params { total: u(len), flag: 1, ..self.penalty_params(penalty, n) },
                buffers: vec![&self.values[node], &self.grams[i], target],
            });
            d.extend(add);
        }
        for id in (stop + 1..g.nodes.len()).rev() {
            // In evaluation a node that no later node reads (only a training penalty) has no gradient to pass on.
            if !train && !written[id] {
                continue;
            }
            let node = &g.nodes[id];
            let (c, h, w) = node.shape;
            let input = node.inputs[0];
            let (ci, hi, wi) = g.nodes[input].shape;
            let gy = &self.node_grads[id];
            let x = &self.values[input];
            let base =
                Params { n: u(n), c: u(ci), h: u(hi), w: u(wi), co: u(c), ho: u(h), wo: u(w), ..Default::default() };
            // Parameter gradients: written by the first layer using the parameter in this order, added by others
            // (after the layer's input gradients, which BatchNorm computes from its own sums).
            let mut adds = Vec::new();
            let mut bn_sums = None;
            match node.op {
                _ if !train => {}
                Op::Conv { weight, bias, k: size, stride, pad } => {
                    let p = Params { k: u(size), pad: u(pad), spare: [0, 0, 0, u(stride)], ..base };
                    let (dw, add_w) = self.param_target(&mut param_written, weight, 0);
                    let weights = c * ci * size * size;
                    if weights >= DIRECT_WEIGHT_GRAD {
                        d.push(Dispatch {
                            kernel: &k.train_conv_weight_grad,
                            params: Params { total: u(weights), flag: 1, ..p },
                            buffers: vec![gy, x, dw],
                        });
                    } else {
                        d.push(Dispatch {
                            kernel: &k.train_conv_weight_grad,
                            params: Params { total: u(n * weights), ..p },
                            buffers: vec![gy, x, &self.per_image],
                        });
                        d.push(Dispatch {
                            kernel: &k.train_sum_rows,
                            params: Params { total: u(weights), n: u(n), ..Default::default() },
                            buffers: vec![&self.per_image, dw],
                        });
                    }
                    d.extend(add_w.then(|| self.add_param(weight, 0)));
                    if let Some(b) = bias {
                        let (db, add_b) = self.param_target(&mut param_written, b, 1);
                        d.push(Dispatch {
                            kernel: &k.train_channel_sum,
                            params: Params { total: u(c) * WORKGROUP, c: u(c), h: u(h), w: u(w), ..p },
                            buffers: vec![gy, db],
                        });
                        d.extend(add_b.then(|| self.add_param(b, 1)));
                    }
                }
                Op::BatchNorm { gamma, beta, eps, .. } => {
                    let (dg, add_g) = self.param_target(&mut param_written, gamma, 0);
                    let (db, add_b) = self.param_target(&mut param_written, beta, 1);
                    d.push(Dispatch {
                        kernel: &k.train_bn_backward_sums,
                        params: Params { total: u(c) * WORKGROUP, spare: [eps.to_bits(), 0, 0, 0], ..base },
                        buffers: vec![gy, x, self.aux[id].as_ref().expect("batch statistics"), dg, db],
                    });
                    bn_sums = Some((dg, db));
                    adds.extend(add_g.then(|| self.add_param(gamma, 0)));
                    adds.extend(add_b.then(|| self.add_param(beta, 1)));
                }
                Op::Linear { weight, bias } => {
                    let (fan_in, out) = (ci * hi * wi, c * h * w);
                    let (dw, add_w) = self.param_target(&mut param_written, weight, 0);
                    let (db, add_b) = match bias {
                        Some(b) => self.param_target(&mut param_written, b, 1),
                        None => (&self.param_scratch[1], false),
                    };
                    d.push(Dispatch {
                        kernel: &k.train_linear_weight_grad,
                        params: Params { total: u(out * fan_in + out), c: u(fan_in), co: u(out), ..base },
                        buffers: vec![gy, x, dw, db],
                    });
                    d.extend(add_w.then(|| self.add_param(weight, 0)));
                    d.extend(bias.filter(|_| add_b).map(|b| self.add_param(b, 1)));
                }
                _ => {}
            }
            // Each input's gradient: written directly by its first reader in this order, added by the others.
            for (slot, &input) in node.inputs.iter().enumerate() {
                // Training needs no gradient of the images; evaluation asks for it.
                if train && matches!(g.nodes[input].op, Op::Input) {
                    continue;
                }
                let (dx, add) = self.node_target(&mut written, input, n);
                d.push(self.input_grad(n, id, slot, dx, bn_sums, mode));
                d.extend(add);
            }
            d.extend(adds);
        }
        d
    }

    /// Where a gradient of node `node` goes: the node's gradient if nothing wrote it yet in this backward pass, else
    /// the scratch buffer, with the launch that then adds it in (push it after the launch that writes it).
    fn node_target(&self, written: &mut [bool], node: usize, n: usize) -> (&wgpu::Buffer, Option<Dispatch<'_>>) {
        if !std::mem::replace(&mut written[node], true) {
            return (&self.node_grads[node], None);
        }
        let add = Dispatch {
            kernel: &self.gpu.kernels.train_add,
            params: Params { total: u(n * graph::len(self.graph.nodes[node].shape)), ..Default::default() },
            buffers: vec![&self.scratch, &self.node_grads[node]],
        };
        (&self.scratch, Some(add))
    }

    /// Where a layer writes parameter `p`'s gradient: the gradient itself if no later layer (in the backward order)
    /// wrote it yet, else spare buffer `spare`, to be added (`true`).
    fn param_target(&self, written: &mut [bool], p: usize, spare: usize) -> (&wgpu::Buffer, bool) {
        let add = std::mem::replace(&mut written[p], true);
        (if add { &self.param_scratch[spare] } else { self.grads[p].as_ref().expect("a trainable parameter") }, add)
    }

    /// Adds spare buffer `spare` into parameter `p`'s gradient.
    fn add_param(&self, p: usize, spare: usize) -> Dispatch<'_> {
        Dispatch {
            kernel: &self.gpu.kernels.train_add,
            params: Params { total: u(self.graph.params[p].len()), ..Default::default() },
            buffers: vec![&self.param_scratch[spare], self.grads[p].as_ref().expect("a trainable parameter")],
        }
    }

    /// The launch that writes the gradient of node `id`'s input number `slot` into `dx` (a BatchNorm's from its
    /// sums of the gradient, `bn_sums`).
    fn input_grad<'a>(
        &'a self,
        n: usize,
        id: usize,
        slot: usize,
        dx: &'a wgpu::Buffer,
        bn_sums: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
        mode: Mode,
    ) -> Dispatch<'a> {
        let k = &self.gpu.kernels;
        let g = &self.graph;
        let node = &g.nodes[id];
        let (c, h, w) = node.shape;
        let first = node.inputs[0];
        let (ci, hi, wi) = g.nodes[first].shape;
        let gy = &self.node_grads[id];
        let x = &self.values[first];
        let base = Params { n: u(n), c: u(ci), h: u(hi), w: u(wi), co: u(c), ho: u(h), wo: u(w), ..Default::default() };
        let all = u(n * graph::len(g.nodes[node.inputs[slot]].shape));
        let aux = || self.aux[id].as_ref().expect("positions or statistics");
        let other = || &self.values[node.inputs[1 - slot]];
        let (kernel, params, buffers): (&Kernel, Params, Vec<&wgpu::Buffer>) = match node.op {
            Op::Conv { weight, k: size, stride, pad, .. } => (
                &k.conv_input_grad,
                Params { total: blocks4(n, ci, hi, wi), k: u(size), pad: u(pad), spare: [0, 0, 0, u(stride)], ..base },
                vec![gy, &self.params[weight], dx],
            ),
            Op::BatchNorm { .. } if mode != Mode::Train => {
                let (scale, _) = self.eval_bn[id].as_ref().expect("evaluation statistics");
                (&k.affine_backward, Params { total: all, ..base }, vec![gy, scale, dx])
            }
            Op::BatchNorm { gamma, eps, .. } => {
                let (dg, db) = bn_sums.expect("the BatchNorm's sums");
                (
                    &k.train_bn_backward,
                    Params { total: all, spare: [eps.to_bits(), 0, 0, 0], ..base },
                    vec![gy, x, aux(), &self.params[gamma], dg, db, dx],
                )
            }
            Op::Relu => {
                let rule = match mode {
                    Mode::Eval { rule } => rule,
                    Mode::Train => 0,
                };
                (&k.relu_backward, Params { total: all, rule, ..base }, vec![gy, x, dx])
            }
            Op::Sigmoid | Op::Tanh => (
                &k.train_activation,
                Params { total: all, flag: if node.op == Op::Tanh { 3 } else { 1 }, ..base },
                vec![gy, &self.values[id], dx],
            ),
            // (1 + M)·T: dM = g·T, dT = g·(1 + M).
            Op::Gate => {
                (&k.train_elementwise, Params { total: all, flag: 1 + 2 * u(slot), ..base }, vec![gy, other(), dx])
            }
            Op::Upsample { .. } => (&k.train_upsample, Params { total: all, flag: 1, ..base }, vec![gy, dx]),
            Op::SpatialSoftmax | Op::Softmax | Op::LogSoftmaxGroups { .. } => {
                let (rows, flag) = softmax_rows(&node.op, node.shape, n);
                (
                    &k.train_softmax,
                    Params { total: u(rows), k: u(n * graph::len(node.shape) / rows), flag: flag + 1, ..base },
                    vec![gy, &self.values[id], dx],
                )
            }
            Op::HeadPool { heads } => (
                &k.train_heads,
                Params { total: all, k: u(ci / heads), flag: 1 + u(slot), ..base },
                vec![gy, other(), dx],
            ),
            Op::HeadMix { .. } => (
                &k.train_heads,
                Params { total: all, c: u(ci), k: u(c), flag: 4 + u(slot), ..base },
                vec![gy, other(), dx],
            ),
            Op::MaxPool2 { .. } => (&k.pool_backward, Params { total: all, ..base }, vec![gy, aux(), dx]),
            Op::GlobalAvgPool => (&k.gap_backward, Params { total: all, ..base }, vec![gy, dx]),
            Op::GlobalMaxPool => (&k.train_global_max, Params { total: all, flag: 1, ..base }, vec![gy, aux(), dx]),
            Op::ChannelMax | Op::ChannelMean => (
                &k.train_channel_pool,
                Params { total: all, flag: 1, k: u(matches!(node.op, Op::ChannelMean) as usize), ..base },
                vec![gy, aux(), dx],
            ),
            Op::Concat => {
                let offset: usize = node.inputs[..slot].iter().map(|&j| g.nodes[j].shape.0).sum();
                let cj = g.nodes[node.inputs[slot]].shape.0;
                (&k.train_concat, Params { total: all, c: u(cj), k: u(offset), flag: 1, ..base }, vec![gy, dx])
            }
            Op::Add => (&k.train_elementwise, Params { total: all, flag: 2, ..base }, vec![gy, gy, dx]),
            Op::Mul => {
                let mode = broadcast_mode(g, node).expect("checked");
                if slot == 0 {
                    let b = &self.values[node.inputs[1]];
                    (&k.train_elementwise, Params { total: all, k: mode, flag: 1, ..base }, vec![gy, b, dx])
                } else {
                    (&k.train_mul_backward_b, Params { total: all, k: mode, ..base }, vec![gy, x, dx])
                }
            }
            Op::Linear { weight, .. } => {
                let (fan_in, out) = (ci * hi * wi, c * h * w);
                (
                    &k.linear_backward,
                    Params { total: u(n.div_ceil(4) * fan_in.div_ceil(4)), c: u(fan_in), co: u(out), ..base },
                    vec![gy, &self.params[weight], dx],
                )
            }
            Op::Input => unreachable!("the input has no inputs"),
        };
        Dispatch { kernel, params, buffers }
    }

    /// SGD on every trainable parameter, then BatchNorm's running statistics.
    fn update(&self, n: usize, lr: f32) -> Vec<Dispatch<'_>> {
        let k = &self.gpu.kernels;
        let mut d = Vec::new();
        let first = u((!self.velocity_started || self.momentum == 0.0) as usize);
        for (i, p) in self.graph.params.iter().enumerate() {
            let (Some(grad), Some(b)) = (&self.grads[i], &self.velocity[i]) else { continue };
            d.push(Dispatch {
                kernel: &k.train_sgd,
                params: Params {
                    total: u(p.len()),
                    flag: first,
                    spare: [lr.to_bits(), self.momentum.to_bits(), self.weight_decay.to_bits(), 0],
                    ..Default::default()
                },
                buffers: vec![&self.params[i], grad, b],
            });
        }
        for (id, node) in self.graph.nodes.iter().enumerate() {
            let Op::BatchNorm { mean, var, momentum, .. } = node.op else { continue };
            let (c, h, w) = node.shape;
            let count = n * h * w;
            let unbias = count as f64 / (count.max(2) - 1) as f64;
            d.push(Dispatch {
                kernel: &k.train_running_stats,
                params: Params {
                    total: u(c),
                    c: u(c),
                    spare: [momentum.to_bits(), (unbias as f32).to_bits(), 0, 0],
                    ..Default::default()
                },
                buffers: vec![self.aux[id].as_ref().expect("batch statistics"), &self.params[mean], &self.params[var]],
            });
        }
        d
    }

    /// Evaluation (buffers from [`GpuTrainer::for_evaluation`]) of `n` images `x`: their logits, or for `seed`
    /// (targets, the score's switch — 1 for the probability —, the ReLU rule, node `stop`) the gradient of each
    /// image's target score at node `stop` (0: the images) and, for a later node, its value. Image-major, one
    /// command buffer.
    pub(super) async fn evaluate(
        &self,
        x: &[f32],
        n: usize,
        seed: Option<(&[u32], u32, u32, usize)>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let g = &self.graph;
        let (out, classes) = (g.output, g.classes());
        self.gpu.queue.write_buffer(&self.values[0], 0, bytemuck::cast_slice(x));
        let Some((targets, prob, rule, stop)) = seed else {
            let d = self.forward(n, Mode::Eval { rule: 0 });
            let logits = self.submit(&d, Some((&self.values[out], n * classes))).await?;
            return Ok((logits.unwrap_or_default(), None));
        };
        self.gpu.queue.write_buffer(&self.labels, 0, bytemuck::cast_slice(targets));
        let mode = Mode::Eval { rule };
        let mut d = self.forward(n, mode);
        d.push(Dispatch {
            kernel: &self.gpu.kernels.score_seed,
            params: Params { total: u(n), c: u(classes), flag: prob, ..Default::default() },
            buffers: vec![&self.values[out], &self.labels, &self.node_grads[out]],
        });
        d.extend(self.backward(n, mode, stop));
        let len = n * graph::len(g.nodes[stop].shape);
        let grad = self.submit(&d, Some((&self.node_grads[stop], len))).await?.unwrap_or_default();
        let value = if stop > 0 { Some(self.read(&self.values[stop], len).await?) } else { None };
        Ok((grad, value))
    }

    /// The loss and hit totals since the last [`reset_tally`](Self::reset_tally).
    pub async fn tally(&self) -> Result<Tally> {
        let t = self.read(&self.tally, 4).await?;
        Ok(Tally { loss_sum: t[0] as f64, hits: t[1] as usize, last_loss: t[2], steps: t[3] as usize })
    }

    pub fn reset_tally(&self) {
        self.gpu.queue.write_buffer(&self.tally, 0, bytemuck::cast_slice(&[0f32; 4]));
    }

    /// Every parameter's values (running statistics too), in `graph.params` order.
    pub async fn parameters(&self) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (b, p) in self.params.iter().zip(&self.graph.params) {
            out.push(self.read(b, p.len()).await?);
        }
        Ok(out)
    }

    /// The momentum buffers of the trainable parameters (`None` for buffers, or before the first step).
    pub async fn velocity(&self) -> Result<Vec<Option<Vec<f32>>>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (b, p) in self.velocity.iter().zip(&self.graph.params) {
            out.push(match b {
                Some(b) if self.velocity_started => Some(self.read(b, p.len()).await?),
                _ => None,
            });
        }
        Ok(out)
    }

    /// The trainable parameters' gradients from the last step (tests).
    pub async fn gradients(&self) -> Result<Vec<Option<Vec<f32>>>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (b, p) in self.grads.iter().zip(&self.graph.params) {
            out.push(match b {
                Some(b) => Some(self.read(b, p.len()).await?),
                None => None,
            });
        }
        Ok(out)
    }

    async fn read(&self, buffer: &wgpu::Buffer, values: usize) -> Result<Vec<f32>> {
        self.submit(&[], Some((buffer, values))).await.map(Option::unwrap_or_default)
    }

    /// Encodes `dispatches` in one compute pass, optionally copies `result` into the read-back buffer, submits,
    /// and reads it back, turning GPU errors into [`crate::Error`]s.
    async fn submit(
        &self,
        dispatches: &[Dispatch<'_>],
        result: Option<(&wgpu::Buffer, usize)>,
    ) -> Result<Option<Vec<f32>>> {
        let device = &self.gpu.device;
        let slots = self.uniforms.size() as usize / super::kernels::uniform_slot(&device.limits());
        if dispatches.len() > slots {
            crate::invalid!(
                "a training step needs {} kernel launches, more than the {slots} laid out",
                dispatches.len()
            );
        }
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train") });
        encode(device, &self.gpu.queue, &self.uniforms, &mut encoder, dispatches);
        if let Some((buffer, values)) = result {
            encoder.copy_buffer_to_buffer(buffer, 0, &self.staging, 0, 4 * values as u64);
        }
        self.gpu.queue.submit([encoder.finish()]);
        let values = match result {
            None => None,
            Some((_, values)) => {
                let slice = self.staging.slice(0..4 * values as u64);
                let (tx, rx) = futures_channel::oneshot::channel();
                slice.map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
                device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("poll", e))?;
                rx.await.map_err(|e| gpu_error("read-back", e))?.map_err(|e| gpu_error("read-back", e))?;
                let out = {
                    let view = slice.get_mapped_range().map_err(|e| gpu_error("read-back", e))?;
                    bytemuck::cast_slice::<u8, f32>(&view).to_vec()
                };
                self.staging.unmap();
                Some(out)
            }
        };
        if let Some(e) = validation.pop().await {
            return Err(gpu_error("validation", e));
        }
        if let Some(e) = oom.pop().await {
            return Err(gpu_error("out of memory", e));
        }
        Ok(values)
    }
}
