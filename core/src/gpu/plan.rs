//! A model's [`Plan`] on the GPU: its weights uploaded once, work buffers kept between calls, and each request
//! encoded as one command buffer (forward, score, backward) with one read-back.

use super::kernels::{blocks4, encode, u, uniform_slot, Dispatch, Kernel, Kernels, Params};
use super::{gpu_error, Gpu};
use crate::engine::{Gradient, Layer, Plan};
use crate::graph::Score;
use crate::ops::ReluRule;
use crate::Result;
use std::sync::{Arc, Mutex, MutexGuard};
use wgpu::util::DeviceExt;

/// Uniform slots: one set of [`Params`] per dispatch of one command buffer.
const MAX_DISPATCHES: usize = 160;

/// A model's weights on the GPU, ready to answer gradient requests as [`Plan`] does on the CPU.
pub struct GpuPlan {
    gpu: Arc<Gpu>,
    plan: Arc<Plan>,
    weights: Vec<Weights>,
    work: Mutex<Option<Work>>,
    /// Images per command buffer: every work buffer of that many images fits one storage binding.
    max_rows: usize,
}

/// One layer's parameters. A convolution carries the affine epilogue of its forward kernel: scale 1 and shift 0, and
/// for a convolution directly followed by BatchNorm also that BatchNorm's (used unless the convolution's own output
/// is asked for), with `w · scale` for the fused backward pass.
enum Weights {
    None,
    Conv {
        w: wgpu::Buffer,
        b: wgpu::Buffer,
        identity: (wgpu::Buffer, wgpu::Buffer),
        bn: Option<FusedBn>,
    },
    Affine {
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
    },
    Linear {
        w: wgpu::Buffer,
        b: wgpu::Buffer,
    },
    /// CBAM: the MLP, and the spatial convolution with its BatchNorm (`conv_w_scaled` = weight · BatchNorm scale, for
    /// the backward pass).
    Cbam {
        w1: wgpu::Buffer,
        b1: wgpu::Buffer,
        w2: wgpu::Buffer,
        b2: wgpu::Buffer,
        conv_w: wgpu::Buffer,
        conv_b: wgpu::Buffer,
        bn_scale: wgpu::Buffer,
        bn_shift: wgpu::Buffer,
        conv_w_scaled: wgpu::Buffer,
        hidden: u32,
        k: u32,
    },
}

/// The BatchNorm fused into the convolution before it.
struct FusedBn {
    scale: wgpu::Buffer,
    shift: wgpu::Buffer,
    /// The convolution's weight times the scale of its output channel.
    w_scaled: wgpu::Buffer,
}

/// Buffers for `rows` images: every layer's output, max-pooling positions, CBAM's intermediate values, two
/// gradient buffers used in turn, the targets, the uniform parameters and the read-back buffer.
struct Work {
    rows: usize,
    acts: Vec<wgpu::Buffer>,
    argmax: Vec<Option<wgpu::Buffer>>,
    cbam: Vec<Option<CbamWork>>,
    grads: [wgpu::Buffer; 2],
    targets: wgpu::Buffer,
    params: wgpu::Buffer,
    staging: wgpu::Buffer,
}

struct CbamWork {
    desc: wgpu::Buffer,
    carg: wgpu::Buffer,
    z: wgpu::Buffer,
    gate: wgpu::Buffer,
    x1: wgpu::Buffer,
    pooled: wgpu::Buffer,
    parg: wgpu::Buffer,
    t: wgpu::Buffer,
    dt: wgpu::Buffer,
    dpooled: wgpu::Buffer,
    dx1: wgpu::Buffer,
    dlogit: wgpu::Buffer,
    dv: wgpu::Buffer,
}

/// What a command buffer computes.
#[derive(Clone, Copy)]
enum Output<'a> {
    Logits,
    Gradient { targets: &'a [u32], score: Score, rule: ReluRule, layer: Option<usize> },
}

pub(super) fn rule_id(rule: ReluRule) -> u32 {
    match rule {
        ReluRule::Standard => 0,
        ReluRule::Guided => 1,
        ReluRule::Deconv => 2,
    }
}

impl GpuPlan {
    /// Uploads `plan`'s weights to `gpu`.
    pub fn new(gpu: Arc<Gpu>, plan: &Plan) -> Result<GpuPlan> {
        let (layers, shapes, _) = plan.parts();
        let upload = |label: &str, v: &[f32]| {
            let v = if v.is_empty() { &[0.0][..] } else { v };
            gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(v),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let mut weights = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            weights.push(match layer {
                Layer::Conv { weight, bias, c_out, .. } => {
                    let bn = match layers.get(i + 1) {
                        Some(Layer::Affine { scale, shift }) => {
                            let per_out = weight.len() / c_out;
                            let w: Vec<f32> = weight.iter().enumerate().map(|(j, v)| v * scale[j / per_out]).collect();
                            Some(FusedBn {
                                scale: upload("bn scale", scale),
                                shift: upload("bn shift", shift),
                                w_scaled: upload("conv weight · scale", &w),
                            })
                        }
                        _ => None,
                    };
                    let identity = (upload("unit scale", &vec![1.0; *c_out]), upload("zero shift", &vec![0.0; *c_out]));
                    Weights::Conv { w: upload("conv weight", weight), b: upload("conv bias", bias), identity, bn }
                }
                Layer::Affine { scale, shift } => {
                    Weights::Affine { scale: upload("scale", scale), shift: upload("shift", shift) }
                }
                Layer::Linear { weight, bias, .. } => {
                    Weights::Linear { w: upload("linear weight", weight), b: upload("linear bias", bias) }
                }
                Layer::Cbam(p) => {
                    if p.hidden > 64 {
                        crate::invalid!("the GPU's CBAM kernels take at most 64 hidden units, not {}", p.hidden);
                    }
                    let scaled: Vec<f32> = p.conv.iter().map(|v| v * p.scale).collect();
                    Weights::Cbam {
                        w1: upload("cbam w1", &p.w1),
                        b1: upload("cbam b1", &p.b1),
                        w2: upload("cbam w2", &p.w2),
                        b2: upload("cbam b2", &p.b2),
                        conv_w: upload("cbam spatial weight", &p.conv),
                        conv_b: upload("cbam spatial bias", &[p.conv_bias]),
                        bn_scale: upload("cbam spatial bn scale", &[p.scale]),
                        bn_shift: upload("cbam spatial bn shift", &[p.shift]),
                        conv_w_scaled: upload("cbam spatial weight · scale", &scaled),
                        hidden: u(p.hidden),
                        k: u(p.k),
                    }
                }
                Layer::Relu | Layer::MaxPool2 | Layer::GlobalAvgPool => Weights::None,
            });
        }
        // The read-back buffer holds a gradient and an activation: twice the largest buffer, 4 bytes a value.
        let max_rows = (gpu.max_binding() / (8 * largest_buffer(shapes) as u64)).max(1) as usize;
        Ok(GpuPlan { gpu, plan: Arc::new(plan.clone()), weights, work: Mutex::new(None), max_rows })
    }

    /// Caps the images per command buffer (tests split small requests this way).
    #[cfg(test)]
    pub(crate) fn set_max_rows(&mut self, rows: usize) {
        self.max_rows = rows.max(1);
    }

    /// The CPU plan this was made from.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The adapter's name.
    pub fn adapter(&self) -> &str {
        &self.gpu.name
    }

    /// Logits of `n` images, as [`Plan::forward`].
    pub async fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.plan.check_input(x, n)?;
        let mut logits = Vec::with_capacity(n * self.plan.classes());
        for (start, m) in super::batches(n, self.max_rows) {
            logits.extend(self.run(&x[start * self.input_len()..][..m * self.input_len()], m, Output::Logits).await?.0);
        }
        Ok(logits)
    }

    /// As [`Plan::gradient`].
    pub async fn gradient(
        &self,
        x: &[f32],
        n: usize,
        targets: &[u32],
        score: Score,
        rule: ReluRule,
        layer: Option<usize>,
    ) -> Result<Gradient> {
        self.plan.check_request(x, n, targets, layer)?;
        let mut all = Gradient::empty(layer.is_some());
        for (start, m) in super::batches(n, self.max_rows) {
            let out = Output::Gradient { targets: &targets[start..start + m], score, rule, layer };
            let (grad, activation) = self.run(&x[start * self.input_len()..][..m * self.input_len()], m, out).await?;
            all.append(Gradient { grad, activation });
        }
        Ok(all)
    }

    fn input_len(&self) -> usize {
        let (c, h, w) = self.plan.parts().1[0];
        c * h * w
    }

    /// The work buffers, for at least `rows` images.
    fn work(&self, rows: usize) -> Result<MutexGuard<'_, Option<Work>>> {
        let mut guard = self.work.try_lock().map_err(|_| gpu_error("busy", "one request at a time"))?;
        if guard.as_ref().is_none_or(|w| w.rows < rows) {
            *guard = None; // free the old buffers first
            *guard = Some(self.allocate(rows.next_power_of_two().min(self.max_rows)));
        }
        Ok(guard)
    }

    fn allocate(&self, rows: usize) -> Work {
        let device = &self.gpu.device;
        let storage = |label: &str, values: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (4 * rows * values).max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (layers, shapes, _) = self.plan.parts();
        let len = |(c, h, w): (usize, usize, usize)| c * h * w;
        let max_len = largest_buffer(shapes);
        let acts = shapes.iter().map(|&s| storage("activation", len(s))).collect();
        let argmax = layers
            .iter()
            .zip(&shapes[1..])
            .map(|(l, &s)| matches!(l, Layer::MaxPool2).then(|| storage("argmax", len(s))))
            .collect();
        let cbam = layers
            .iter()
            .zip(shapes)
            .map(|(l, &(c, h, w))| match l {
                Layer::Cbam(p) => {
                    let hw = h * w;
                    Some(CbamWork {
                        desc: storage("cbam desc", 2 * c),
                        carg: storage("cbam channel argmax", c),
                        z: storage("cbam z", 2 * p.hidden),
                        gate: storage("cbam gate", c),
                        x1: storage("cbam x1", c * hw),
                        pooled: storage("cbam pooled", 2 * hw),
                        parg: storage("cbam position argmax", hw),
                        t: storage("cbam t", hw),
                        dt: storage("cbam dt", hw),
                        dpooled: storage("cbam dpooled", 2 * hw),
                        dx1: storage("cbam dx1", c * hw),
                        dlogit: storage("cbam dlogit", c),
                        dv: storage("cbam dv", 2 * c),
                    })
                }
                _ => None,
            })
            .collect();
        let align = uniform_slot(&device.limits()) as u64;
        Work {
            rows,
            acts,
            argmax,
            cbam,
            grads: [storage("gradient a", max_len), storage("gradient b", max_len)],
            targets: storage("targets", 1),
            params: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: MAX_DISPATCHES as u64 * align,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            staging: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back"),
                size: (8 * rows * max_len) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// One command buffer for `n` images (at most `max_rows`): the logits, or a gradient (and the tapped
    /// activation).
    // The work buffers stay locked until their read-back is done: a second request at the same time gets "busy"
    // (`try_lock`), never another request's values.
    #[allow(clippy::await_holding_lock)]
    async fn run(&self, x: &[f32], n: usize, out: Output<'_>) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let guard = self.work(n)?;
        let work = guard.as_ref().expect("allocated");
        let (layers, shapes, taps) = self.plan.parts();
        let len = |i: usize| {
            let (c, h, w) = shapes[i];
            n * c * h * w
        };
        let stop = match out {
            Output::Gradient { layer, .. } => layer.map(|l| taps[l]),
            Output::Logits => None,
        };
        let (mut dispatches, fused) = self.forward_dispatches(work, n, stop);
        // The result: (buffer, values) to read back, gradient first.
        let mut results = vec![];
        match out {
            Output::Logits => results.push((&work.acts[layers.len()], len(layers.len()))),
            Output::Gradient { targets, score, rule, .. } => {
                self.gpu.queue.write_buffer(&work.targets, 0, bytemuck::cast_slice(targets));
                let k = &self.gpu.kernels;
                let classes = u(self.plan.classes());
                let flag = u32::from(score == Score::Prob);
                let p = Params { total: u(n), n: u(n), c: classes, flag, ..Default::default() };
                dispatches.push(Dispatch {
                    kernel: &k.score_seed,
                    params: p,
                    buffers: vec![&work.acts[layers.len()], &work.targets, &work.grads[0]],
                });
                let end = stop.map_or(0, |s| s + 1);
                let cur = self.backward_dispatches(work, n, end, rule, &fused, &mut dispatches);
                results.push((&work.grads[cur], len(end)));
                if let Some(s) = stop {
                    results.push((&work.acts[s + 1], len(s + 1)));
                }
            }
        }
        self.gpu.queue.write_buffer(&work.acts[0], 0, bytemuck::cast_slice(x));
        let mut values = self.submit_and_read(work, &dispatches, &results).await?;
        let second = (values.len() > results[0].1).then(|| values.split_off(results[0].1));
        Ok((values, second))
    }

    /// The forward pass into `work.acts`; `stop` (a layer whose output is asked for) is never fused away. Also
    /// returns, per layer, whether a convolution was fused with the BatchNorm after it.
    fn forward_dispatches<'a>(
        &'a self,
        work: &'a Work,
        n: usize,
        stop: Option<usize>,
    ) -> (Vec<Dispatch<'a>>, Vec<bool>) {
        let k = &self.gpu.kernels;
        let (layers, shapes, _) = self.plan.parts();
        let acts = &work.acts;
        let mut out = Vec::new();
        let mut fused = vec![false; layers.len()];
        let mut i = 0;
        while i < layers.len() {
            let ((c, h, w), (co, ho, wo)) = (shapes[i], shapes[i + 1]);
            let p =
                Params { n: u(n), c: u(c), h: u(h), w: u(w), co: u(co), ho: u(ho), wo: u(wo), ..Default::default() };
            let mut next = i + 1;
            let (kernel, total, buffers): (&Kernel, usize, Vec<&wgpu::Buffer>) = match (&layers[i], &self.weights[i]) {
                (Layer::Conv { k: size, pad, .. }, Weights::Conv { w: cw, b, identity, bn }) => {
                    let p = Params { k: u(*size), pad: u(*pad), ..p };
                    let (scale, shift) = match bn.as_ref().filter(|_| stop != Some(i)) {
                        Some(bn) => {
                            fused[i] = true;
                            next = i + 2;
                            (&bn.scale, &bn.shift)
                        }
                        None => (&identity.0, &identity.1),
                    };
                    out.push(Dispatch {
                        kernel: &k.conv_forward,
                        params: Params { total: blocks4(n, co, ho, wo), ..p },
                        buffers: vec![&acts[i], cw, b, &acts[next], scale, shift],
                    });
                    i = next;
                    continue;
                }
                (Layer::Affine { .. }, Weights::Affine { scale, shift }) => {
                    (&k.affine_forward, n * c * h * w, vec![&acts[i], scale, shift, &acts[i + 1]])
                }
                (Layer::Relu, _) => (&k.relu_forward, n * c * h * w, vec![&acts[i], &acts[i + 1]]),
                (Layer::MaxPool2, _) => (
                    &k.pool_forward,
                    n * co * ho * wo,
                    vec![&acts[i], &acts[i + 1], work.argmax[i].as_ref().expect("pool buffer")],
                ),
                (Layer::Linear { .. }, Weights::Linear { w: lw, b }) => {
                    let p = Params { total: blocks4(1, n, 1, co), c: u(c * h * w), ..p };
                    out.push(Dispatch {
                        kernel: &k.linear_forward,
                        params: p,
                        buffers: vec![&acts[i], lw, b, &acts[i + 1]],
                    });
                    i = next;
                    continue;
                }
                (Layer::GlobalAvgPool, _) => (&k.gap_forward, n * c, vec![&acts[i], &acts[i + 1]]),
                (Layer::Cbam(_), weights) => {
                    cbam_forward(
                        k,
                        weights,
                        work.cbam[i].as_ref().expect("CBAM buffers"),
                        &acts[i],
                        &acts[i + 1],
                        p,
                        &mut out,
                    );
                    i = next;
                    continue;
                }
                _ => unreachable!("weights are made per layer kind"),
            };
            out.push(Dispatch { kernel, params: Params { total: u(total), ..p }, buffers });
            i = next;
        }
        (out, fused)
    }

    /// The backward pass from `grads[0]` (∂S/∂logits) down to the input of layer `end`; returns which of the two
    /// gradient buffers holds the result.
    fn backward_dispatches<'a>(
        &'a self,
        work: &'a Work,
        n: usize,
        end: usize,
        rule: ReluRule,
        fused: &[bool],
        out: &mut Vec<Dispatch<'a>>,
    ) -> usize {
        let k = &self.gpu.kernels;
        let (layers, shapes, _) = self.plan.parts();
        let mut cur = 0;
        let mut i = layers.len();
        while i > end {
            i -= 1;
            let (g, dx) = (&work.grads[cur], &work.grads[1 - cur]);
            cur = 1 - cur;
            // A convolution fused with this BatchNorm: one step back to the convolution's input.
            if i > 0 && fused[i - 1] {
                i -= 1;
                let Weights::Conv { bn: Some(bn), .. } = &self.weights[i] else {
                    unreachable!("fused means a BatchNorm")
                };
                let Layer::Conv { k: size, pad, .. } = &layers[i] else {
                    unreachable!("a fused layer is a convolution")
                };
                out.push(conv_grad(k, &bn.w_scaled, g, dx, n, shapes[i], shapes[i + 1], *size, *pad));
                continue;
            }
            let ((c, h, w), (co, ho, wo)) = (shapes[i], shapes[i + 1]);
            let p = Params {
                n: u(n),
                c: u(c),
                h: u(h),
                w: u(w),
                co: u(co),
                ho: u(ho),
                wo: u(wo),
                rule: rule_id(rule),
                ..Default::default()
            };
            let all = u(n * c * h * w);
            match (&layers[i], &self.weights[i]) {
                (Layer::Conv { k: size, pad, .. }, Weights::Conv { w: cw, .. }) => {
                    out.push(conv_grad(k, cw, g, dx, n, shapes[i], shapes[i + 1], *size, *pad))
                }
                (Layer::Affine { .. }, Weights::Affine { scale, .. }) => out.push(Dispatch {
                    kernel: &k.affine_backward,
                    params: Params { total: all, ..p },
                    buffers: vec![g, scale, dx],
                }),
                (Layer::Relu, _) => out.push(Dispatch {
                    kernel: &k.relu_backward,
                    params: Params { total: all, ..p },
                    buffers: vec![g, &work.acts[i], dx],
                }),
                (Layer::MaxPool2, _) => out.push(Dispatch {
                    kernel: &k.pool_backward,
                    params: Params { total: all, ..p },
                    buffers: vec![g, work.argmax[i].as_ref().expect("pool buffer"), dx],
                }),
                (Layer::Linear { .. }, Weights::Linear { w: lw, .. }) => out.push(Dispatch {
                    kernel: &k.linear_backward,
                    params: Params { total: blocks4(1, n, 1, c * h * w), c: u(c * h * w), ..p },
                    buffers: vec![g, lw, dx],
                }),
                (Layer::GlobalAvgPool, _) => out.push(Dispatch {
                    kernel: &k.gap_backward,
                    params: Params { total: all, ..p },
                    buffers: vec![g, dx],
                }),
                (Layer::Cbam(_), weights) => cbam_backward(
                    k,
                    weights,
                    work.cbam[i].as_ref().expect("CBAM buffers"),
                    &work.acts[i],
                    g,
                    dx,
                    p,
                    out,
                ),
                _ => unreachable!("weights are made per layer kind"),
            }
        }
        cur
    }

    /// Encodes `dispatches` in one compute pass, copies `results` into the read-back buffer, submits, and reads
    /// them back (concatenated), turning GPU errors into [`crate::Error`]s.
    async fn submit_and_read(
        &self,
        work: &Work,
        dispatches: &[Dispatch<'_>],
        results: &[(&wgpu::Buffer, usize)],
    ) -> Result<Vec<f32>> {
        if dispatches.len() > MAX_DISPATCHES {
            crate::invalid!("the GPU plan needs {} dispatches, more than {MAX_DISPATCHES}", dispatches.len());
        }
        let device = &self.gpu.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("whitebox") });
        encode(device, &self.gpu.queue, &work.params, &mut encoder, dispatches);
        let mut offset = 0u64;
        for (buffer, values) in results {
            let bytes = 4 * *values as u64;
            encoder.copy_buffer_to_buffer(buffer, 0, &work.staging, offset, bytes);
            offset += bytes;
        }
        self.gpu.queue.submit([encoder.finish()]);
        let slice = work.staging.slice(0..offset);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        // Natively the callback runs inside poll; in the browser poll does nothing and the promise resolves.
        device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("poll", e))?;
        let mapped = rx.await.map_err(|e| gpu_error("read-back", e))?;
        if let Some(e) = validation.pop().await {
            return Err(gpu_error("validation", e));
        }
        if let Some(e) = oom.pop().await {
            return Err(gpu_error("out of memory", e));
        }
        mapped.map_err(|e| gpu_error("read-back", e))?;
        let values = {
            let view = slice.get_mapped_range().map_err(|e| gpu_error("read-back", e))?;
            view.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        work.staging.unmap();
        Ok(values)
    }
}

/// Values per image of the largest work buffer: the largest activation, or CBAM's two pooled maps at the input's
/// resolution (a bound for any CBAM block's).
fn largest_buffer(shapes: &[crate::engine::Shape]) -> usize {
    let (_, h, w) = shapes[0];
    shapes.iter().map(|(c, h, w)| c * h * w).max().unwrap_or(1).max(2 * h * w)
}

#[allow(clippy::too_many_arguments)]
fn conv_grad<'a>(
    k: &'a Kernels,
    weight: &'a wgpu::Buffer,
    g: &'a wgpu::Buffer,
    dx: &'a wgpu::Buffer,
    n: usize,
    (c, h, w): (usize, usize, usize),
    (co, ho, wo): (usize, usize, usize),
    size: usize,
    pad: usize,
) -> Dispatch<'a> {
    let p = Params {
        total: blocks4(n, c, h, w),
        n: u(n),
        c: u(c),
        h: u(h),
        w: u(w),
        co: u(co),
        ho: u(ho),
        wo: u(wo),
        k: u(size),
        pad: u(pad),
        ..Default::default()
    };
    Dispatch { kernel: &k.conv_input_grad, params: p, buffers: vec![g, weight, dx] }
}

/// CBAM's forward pass (see `models/cbam.rs`): `p` holds the block's shape.
fn cbam_forward<'a>(
    k: &'a Kernels,
    weights: &'a Weights,
    b: &'a CbamWork,
    x: &'a wgpu::Buffer,
    y: &'a wgpu::Buffer,
    p: Params,
    out: &mut Vec<Dispatch<'a>>,
) {
    let Weights::Cbam { w1, b1, w2, b2, conv_w, conv_b, bn_scale, bn_shift, hidden, k: size, .. } = weights else {
        unreachable!("CBAM weights")
    };
    let (n, c, hw) = (p.n, p.c, p.h * p.w);
    let spatial =
        Params { total: n * p.h * p.w.div_ceil(4), c: 2, co: 1, ho: p.h, wo: p.w, k: *size, pad: size / 2, ..p };
    out.extend([
        Dispatch {
            kernel: &k.cbam_channel_pool,
            params: Params { total: n * c, ..p },
            buffers: vec![x, &b.desc, &b.carg],
        },
        Dispatch {
            kernel: &k.cbam_mlp,
            params: Params { total: n, k: *hidden, ..p },
            buffers: vec![&b.desc, w1, b1, w2, b2, &b.z, &b.gate],
        },
        Dispatch {
            kernel: &k.cbam_gate_channels,
            params: Params { total: n * c * hw, ..p },
            buffers: vec![x, &b.gate, &b.x1],
        },
        Dispatch {
            kernel: &k.cbam_spatial_pool,
            params: Params { total: n * hw, ..p },
            buffers: vec![&b.x1, &b.pooled, &b.parg],
        },
        Dispatch {
            kernel: &k.conv_forward,
            params: spatial,
            buffers: vec![&b.pooled, conv_w, conv_b, &b.t, bn_scale, bn_shift],
        },
        Dispatch {
            kernel: &k.cbam_apply_spatial,
            params: Params { total: n * c * hw, ..p },
            buffers: vec![&b.x1, &b.t, y],
        },
    ]);
}

/// CBAM's backward pass from `dy` to `dx`, with the ReLU rule in `p`.
#[allow(clippy::too_many_arguments)]
fn cbam_backward<'a>(
    k: &'a Kernels,
    weights: &'a Weights,
    b: &'a CbamWork,
    x: &'a wgpu::Buffer,
    dy: &'a wgpu::Buffer,
    dx: &'a wgpu::Buffer,
    p: Params,
    out: &mut Vec<Dispatch<'a>>,
) {
    let Weights::Cbam { w1, w2, conv_w_scaled, hidden, k: size, .. } = weights else { unreachable!("CBAM weights") };
    let (n, c, hw) = (p.n, p.c, p.h * p.w);
    let spatial =
        Params { total: n * p.h * p.w.div_ceil(4), c: 2, co: 1, ho: p.h, wo: p.w, k: *size, pad: size / 2, ..p };
    out.extend([
        Dispatch {
            kernel: &k.cbam_spatial_backward,
            params: Params { total: n * hw, ..p },
            buffers: vec![dy, &b.x1, &b.t, &b.dt],
        },
        Dispatch { kernel: &k.conv_input_grad, params: spatial, buffers: vec![&b.dt, conv_w_scaled, &b.dpooled] },
        Dispatch {
            kernel: &k.cbam_x1_grad,
            params: Params { total: n * c * hw, ..p },
            buffers: vec![dy, &b.t, &b.dpooled, &b.parg, &b.dx1],
        },
        Dispatch {
            kernel: &k.cbam_channel_backward,
            params: Params { total: n * c, ..p },
            buffers: vec![&b.dx1, x, &b.gate, &b.dlogit],
        },
        Dispatch {
            kernel: &k.cbam_mlp_backward,
            params: Params { total: n, k: *hidden, ..p },
            buffers: vec![&b.dlogit, &b.z, w1, w2, &b.dv],
        },
        Dispatch {
            kernel: &k.cbam_input_grad,
            params: Params { total: n * c * hw, ..p },
            buffers: vec![&b.dx1, &b.gate, &b.dv, &b.carg, dx],
        },
    ]);
}

/// Natively the GPU engine answers synchronously, so it serves the attribution methods directly.
#[cfg(not(target_arch = "wasm32"))]
impl crate::engine::Engine for GpuPlan {
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
        super::block_on(GpuPlan::forward(self, x, n))
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
        super::block_on(GpuPlan::gradient(self, x, n, targets, score, rule, layer))
    }
}
