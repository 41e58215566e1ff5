//! Checking trainers against each other: models initialised away from ties and kinks ([`trainable`], for every
//! comparison of training paths), and the GPU trainer against the CPU trainer on both platforms — the native tests
//! (lavapipe) and the browser test (WebGPU on SwiftShader against the WebAssembly CPU trainer) run this one check.

use crate::data::DatasetKind;
use crate::graph::{Graph, Op};
use crate::models::{Classifier, ModelSpec};
use crate::testing::random;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// A freshly initialised model whose BatchNorm scales and other 1-d biases are random (γ in [0.5, 1.5], β in
/// [0.05, 0.25]). Gradients through max-pooling and ReLU are unique only away from ties and kinks, and PyTorch's
/// start (γ = 1, β = 0) sits on them: half the units are dead, a region of dead units makes the next convolution
/// output the same value at neighbouring positions, and a pooling window then holds an exact tie that two correct
/// implementations break differently by rounding (seen on CBAM, CIFAR-10); a channel constant over a small batch
/// normalises to ±rounding noise at a ReLU's kink (RAN's 4×4 tail; one-sided finite differences give each path's
/// value). Shifting β off zero keeps the comparison away from both.
pub fn trainable(spec: ModelSpec, seed: u64) -> Result<(candle_nn::VarMap, Box<dyn Classifier>)> {
    let (map, model) = crate::params::init_model(spec, seed, &Device::Cpu)?;
    let graph = crate::models::graph(spec)?;
    let gammas: Vec<&str> = graph
        .nodes
        .iter()
        .filter_map(|node| match node.op {
            Op::BatchNorm { gamma, .. } => Some(graph.params[gamma].name.as_str()),
            _ => None,
        })
        .collect();
    for (k, v) in map.data().lock().map_err(|_| Error::InvalidArgument("a poisoned variable map".into()))?.iter() {
        let r = random(v.dims(), k.len() as u64 + seed)?;
        if gammas.contains(&k.as_str()) {
            v.set(&((r * 0.5)? + 1.0)?)?;
        } else if v.rank() == 1 && k.ends_with("bias") {
            v.set(&((r * 0.1)? + 0.15)?)?;
        }
    }
    Ok((map, model))
}

/// The named variables of `map` as the graph's parameter values, in `graph.params` order.
pub fn graph_values(map: &candle_nn::VarMap, graph: &Graph) -> Result<Vec<Vec<f32>>> {
    let vars = map.data().lock().map_err(|_| Error::InvalidArgument("a poisoned variable map".into()))?;
    graph
        .params
        .iter()
        .map(|p| match vars.get(&p.name) {
            Some(v) => Ok(v.as_tensor().flatten_all()?.to_vec1()?),
            None => crate::invalid!("the graph's parameter {} is not in the model's variables", p.name),
        })
        .collect()
}

/// A batch of `n` images of `dataset` and labels, drawn from `seed`.
pub fn training_batch(dataset: DatasetKind, n: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let (c, s) = (dataset.channels(), dataset.side());
    let x = random(&[n, c, s, s], seed)?;
    let y = Tensor::new((0..n as u32).map(|i| (i * 7 + seed as u32) % 10).collect::<Vec<_>>(), &Device::Cpu)?;
    Ok((x, y))
}

/// Named float64 variables and the model over them.
pub type Reference = (Vec<(String, candle_core::Var)>, Box<dyn Classifier>);

/// The same network in `f64` through candle's reference formulations (no custom kernels), from `map`'s values:
/// the trainable parameters as variables, by name, and the model.
pub fn reference_f64(spec: ModelSpec, map: &candle_nn::VarMap) -> Result<Reference> {
    let mut vars = Vec::new();
    let mut tensors = std::collections::HashMap::new();
    for (name, v) in map.data().lock().map_err(|_| Error::InvalidArgument("a poisoned variable map".into()))?.iter() {
        let t = v.as_tensor().to_dtype(DType::F64)?;
        if crate::nn::is_buffer(name) {
            tensors.insert(name.clone(), t);
        } else {
            let var = candle_core::Var::from_tensor(&t)?;
            tensors.insert(name.clone(), var.as_tensor().clone());
            vars.push((name.clone(), var));
        }
    }
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F64, &Device::Cpu);
    Ok((vars, crate::models::build(spec, vb)?))
}

/// A tensor's values in `f64`.
pub fn f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// `max |a − b| / max(floor, max |b|)` against an `f64` reference.
pub fn error_f64(a: &[f32], b: &[f64], floor: f64) -> f64 {
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max) / scale
}

/// The tolerance of a float32 result against float64: 1e-4, or three times a trusted float32 path's own (worst,
/// over the model) distance from float64 where that is larger. In deep networks with batch statistics float32 is
/// far from float64: RAN's training-mode forward pass is good to ~1e-4 (as PyTorch's is, the goldens' metadata), a
/// ReLU input that close to zero passes or blocks its gradient by rounding, and each float32 path takes its own
/// side at a different set of them (measured: candle's gradients up to 1e-1 from float64 on RAN, the graph's within
/// 1.7×, 2.9× on one WARN bias; RAN's weights after three steps on four images 0.3–0.7 of their largest entry).
pub fn tolerance(f32_error: f64) -> f64 {
    1e-4f64.max(3.0 * f32_error)
}

/// What [`training_matches_cpu`] measured: the GPU's largest differences, each relative to its tensor's largest
/// entry, from the CPU trainer or (the attention models) from float64, with the CPU trainer's own distance from
/// float64 beside them.
#[cfg(feature = "gpu")]
#[derive(Clone, Debug, Default)]
pub struct Parity {
    pub loss: f64,
    pub gradient: (f64, String),
    pub weight: (f64, String),
    /// `None`: compared with the CPU trainer. Otherwise compared with float64, and float32's own worst distance from
    /// it on the CPU (three runs, two on images moved by 1e-6): loss, gradients (or how far the moved images move
    /// them, if more), weights.
    pub cpu_from_f64: Option<(f64, f64, f64)>,
}

#[cfg(feature = "gpu")]
impl std::fmt::Display for Parity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (l, g, w) = (self.loss, &self.gradient, &self.weight);
        write!(f, "loss {l:.1e}, gradients {:.1e} ({}), weights {:.1e} ({})", g.0, g.1, w.0, w.1)?;
        match self.cpu_from_f64 {
            None => write!(f, " from the CPU trainer"),
            Some((l, g, w)) => write!(f, " from float64 (float32 on the CPU: {l:.1e}, {g:.1e}, {w:.1e})"),
        }
    }
}

/// Three SGD steps (momentum 0.9, weight decay 5e-4) of `spec` from the same initial weights ([`trainable`]) on the
/// GPU and on the CPU trainer, on batches of `batch`, `batch − 1` and `batch − 2` images (a short last batch too).
///
/// SimpleCNN, CAM and CBAM (learning rates 0.05, 0.03, 0.02): each step's loss within 1e-5 (relative, or absolute
/// below 1), the first step's gradients and every weight and running statistic after the three steps within 1e-4
/// of the largest entry of their tensor.
///
/// RAN and WARN (learning rate 0.002): the first step's loss within 1e-5 of the CPU's; beyond, float32 cannot reach
/// 1e-4 there (see [`tolerance`]), so both trainers are held to candle's float64 autograd on the same weights and
/// batches: the GPU's losses, first-step gradients and weights after three steps (SGD in float64 by hand) within
/// [`tolerance`] of float32's own worst distance from float64, and its running statistics within that of the CPU's.
/// Float32's distance is measured on three CPU runs: the CPU trainer's, and two more on the images moved by a
/// relative 1e-6 (at random, at every step). A ReLU input or a pooling pair within rounding of a kink goes either
/// way, so one float32 path may land much further from float64 than another happens to; from the first step's
/// gradients (0.15–0.35 of their largest entry apart on RAN) the three steps go on diverging (measured: RAN-92 on
/// CIFAR-10, losses after the third step GPU 5.26, CPU 5.40, float64 5.42): a single CPU run undersold that spread.
/// For the first step's gradients, how far the moved images move the CPU's gradients is the other bound.
///
/// A gradient that is zero in exact arithmetic (a convolution's bias before BatchNorm: the normalisation removes
/// any shift) holds rounding noise on both sides, so both must be below 1e-6 instead (against float64: each
/// gradient is floored at 1e-4 of the model's largest). An error names the first tensor out of bounds.
#[cfg(feature = "gpu")]
pub async fn training_matches_cpu(
    gpu: std::sync::Arc<crate::gpu::Gpu>,
    spec: ModelSpec,
    batch: usize,
) -> Result<Parity> {
    use super::{Optimizer, OptimizerKind};
    use crate::gpu::GpuTrainer;
    use crate::testing::{gradient_gap, max_rel_error};
    if batch < 3 {
        crate::invalid!("batches of at least 3 images (three steps, each one image shorter)");
    }
    let (arch, dataset) = (spec.arch, spec.dataset);
    let (momentum, decay) = (0.9, 5e-4);
    let (map, model) = trainable(spec, 11)?;
    let graph = std::sync::Arc::new(crate::models::graph(spec)?);
    let mut trainer =
        GpuTrainer::new(gpu, graph.clone(), &graph_values(&map, &graph)?, None, batch, momentum as f32, decay as f32)?;
    let mut optimizer = Optimizer::new(OptimizerKind::Sgd, &map, momentum, decay);
    let reference = if crate::models::Arch::SMALL.contains(&arch) { None } else { Some(reference_f64(spec, &map)?) };
    let mut velocity: Vec<Option<Tensor>> = vec![None; reference.as_ref().map_or(0, |r| r.0.len())];
    let lrs = if reference.is_some() { [0.002f32; 3] } else { [0.05, 0.03, 0.02] };
    let mut parity = Parity::default();
    let mut cpu_from_f64 = (0f64, 0f64, 0f64);
    let mut losses = Vec::new();
    // The CPU trainer again on the images moved by a relative 1e-6, two runs (see above): the attention models only.
    let mut probes = Vec::new();
    if reference.is_some() {
        for seed in [1u64, 2] {
            let (probe_map, probe) = trainable(spec, 11)?;
            let optimizer = Optimizer::new(OptimizerKind::Sgd, &probe_map, momentum, decay);
            probes.push((seed, probe_map, probe, optimizer));
        }
    }
    let lock = |map: &candle_nn::VarMap| {
        map.data().lock().map_err(|_| Error::InvalidArgument("a poisoned variable map".into())).map(|d| d.clone())
    };
    for (step, lr) in lrs.into_iter().enumerate() {
        let n = batch - step;
        let (x, y) = training_batch(dataset, n, 20 + step as u64)?;
        let cpu = model.training_step(&x, &y)?;
        let (xv, yv) = (x.flatten_all()?.to_vec1::<f32>()?, y.to_vec1::<u32>()?);
        trainer.step(&xv, &yv, lr).await?;
        let t = trainer.tally().await?;
        let vars = lock(&map)?;
        let gpu_grads = if step == 0 { trainer.gradients().await? } else { vec![] };
        match &reference {
            None => {
                let d = ((t.last_loss - cpu.loss).abs() / cpu.loss.abs().max(1.0)) as f64;
                parity.loss = parity.loss.max(d);
                if d >= 1e-5 {
                    crate::invalid!("{arch} {dataset} step {step} loss: GPU {} CPU {}", t.last_loss, cpu.loss);
                }
                for (p, g) in graph.params.iter().zip(gpu_grads) {
                    let Some(g) = g else { continue };
                    let Some(want) = vars.get(&p.name).and_then(|v| cpu.grads.get(v.as_tensor())) else {
                        crate::invalid!("{arch} {dataset}: the CPU step has no gradient of {}", p.name);
                    };
                    let d = gradient_gap(&g, &want.flatten_all()?.to_vec1::<f32>()?) as f64;
                    if d > parity.gradient.0 {
                        parity.gradient = (d, p.name.clone());
                    }
                    if d >= 1e-4 {
                        crate::invalid!(
                            "{arch} {dataset} gradient of {}: {d:e} of its largest entry (inf: nonzero where the CPU's is 0)",
                            p.name
                        );
                    }
                }
            }
            Some((ref_vars, reference)) => {
                let (_, exact_loss) = reference.training_loss(&x.to_dtype(DType::F64)?, &y)?;
                let exact_grads = exact_loss.backward()?;
                let exact_loss = exact_loss.to_scalar::<f64>()?;
                let err = |l: f32| (l as f64 - exact_loss).abs() / exact_loss.abs().max(1.0);
                // The first step starts from the same weights: its loss (a continuous function of them) must
                // agree with the CPU's as the small models' do. Later steps are checked after the last one,
                // against the CPU's worst distance from float64.
                let d = (t.last_loss - cpu.loss).abs() / cpu.loss.abs().max(1.0);
                if step == 0 && d >= 1e-5 {
                    crate::invalid!("{arch} {dataset} first loss: GPU {} CPU {}", t.last_loss, cpu.loss);
                }
                losses.push((t.last_loss, cpu.loss, exact_loss));
                parity.loss = parity.loss.max(err(t.last_loss));
                cpu_from_f64.0 = cpu_from_f64.0.max(err(cpu.loss));
                let mut probe_steps = Vec::new();
                for (seed, _, probe, _) in &probes {
                    let moved = (&x * ((random(x.dims(), 900 + seed + 10 * step as u64)? * 1e-6)? + 1.0)?)?;
                    let probe_step = probe.training_step(&moved, &y)?;
                    cpu_from_f64.0 = cpu_from_f64.0.max(err(probe_step.loss));
                    probe_steps.push(probe_step);
                }
                if step == 0 {
                    let mut triples = Vec::new();
                    for (p, g) in graph.params.iter().zip(gpu_grads) {
                        let Some(g) = g else { continue };
                        let var = ref_vars.iter().find(|(name, _)| *name == p.name).map(|(_, v)| v);
                        let exact = var.and_then(|v| exact_grads.get(v.as_tensor()));
                        let cpu_grad = vars.get(&p.name).and_then(|v| cpu.grads.get(v.as_tensor()));
                        let (Some(exact), Some(c)) = (exact, cpu_grad) else {
                            crate::invalid!("{arch} {dataset}: no float64 or CPU gradient of {}", p.name);
                        };
                        triples.push((p.name.clone(), g, c.flatten_all()?.to_vec1::<f32>()?, f64s(exact)?));
                    }
                    let scale = triples.iter().flat_map(|t| t.3.iter()).fold(0f64, |m, v| m.max(v.abs()));
                    let errors: Vec<(f64, f64)> = triples
                        .iter()
                        .map(|(_, g, c, e)| (error_f64(g, e, 1e-4 * scale), error_f64(c, e, 1e-4 * scale)))
                        .collect();
                    let cpu_worst = errors.iter().fold(0f64, |m, e| m.max(e.1));
                    cpu_from_f64.1 = cpu_worst;
                    // Float32's resolution on this batch: a ReLU input or a pooling pair within rounding of a kink
                    // goes either way, so a path may differ from float64 by much more than the CPU happens to. How
                    // far inputs moved by a relative 1e-6 move the CPU's gradients measures it.
                    let mut wiggle = 0f64;
                    for ((_, probe_map, ..), step) in probes.iter().zip(&probe_steps) {
                        let probe_vars = lock(probe_map)?;
                        for (name, _, c, _) in &triples {
                            let Some(g) = probe_vars.get(name).and_then(|v| step.grads.get(v.as_tensor())) else {
                                continue;
                            };
                            let c64: Vec<f64> = c.iter().map(|&v| v as f64).collect();
                            wiggle = wiggle.max(error_f64(&g.flatten_all()?.to_vec1::<f32>()?, &c64, 1e-4 * scale));
                        }
                    }
                    cpu_from_f64.1 = cpu_worst.max(wiggle);
                    for ((name, ..), (eg, ec)) in triples.iter().zip(&errors) {
                        if *eg > parity.gradient.0 {
                            parity.gradient = (*eg, name.clone());
                        }
                        if *eg > tolerance(cpu_worst.max(wiggle)) {
                            crate::invalid!(
                                "{arch} {dataset} gradient of {name}: {eg:e} from float64 (the CPU's: {ec:e}, at worst \
                                 {cpu_worst:e}; inputs moved by 1e-6 move it {wiggle:e})"
                            );
                        }
                    }
                }
                for ((.., optimizer), probe_step) in probes.iter_mut().zip(&probe_steps) {
                    optimizer.step(&probe_step.grads, lr as f64)?;
                }
                // PyTorch's SGD in float64.
                for ((_, var), v) in ref_vars.iter().zip(&mut velocity) {
                    let Some(g) = exact_grads.get(var.as_tensor()) else { continue };
                    let d = (g + (var.as_tensor() * decay)?)?;
                    let new_v = match v.take() {
                        Some(old) => ((old * momentum)? + d)?,
                        None => d,
                    };
                    var.set(&(var.as_tensor() - (&new_v * lr as f64)?)?)?;
                    *v = Some(new_v);
                }
            }
        }
        optimizer.step(&cpu.grads, lr as f64)?;
    }
    let got = trainer.parameters().await?;
    let want = graph_values(&map, &graph)?;
    match &reference {
        None => {
            for ((p, g), want) in graph.params.iter().zip(&got).zip(&want) {
                let d = max_rel_error(g, want, 0.0) as f64;
                if d > parity.weight.0 {
                    parity.weight = (d, p.name.clone());
                }
                if d >= 1e-4 {
                    crate::invalid!("{arch} {dataset} {} after three steps: {d:e} of its largest entry", p.name);
                }
            }
        }
        Some((ref_vars, _)) => {
            if parity.loss > tolerance(cpu_from_f64.0) {
                crate::invalid!(
                    "{arch} {dataset} losses (GPU, CPU, float64 per step): {losses:?}: the GPU {:e} from float64, float32 on \
                     the CPU (three runs) at worst {:e}",
                    parity.loss,
                    cpu_from_f64.0
                );
            }
            let probe_values =
                probes.iter().map(|(_, probe_map, ..)| graph_values(probe_map, &graph)).collect::<Result<Vec<_>>>()?;
            let mut errors = Vec::new();
            for (name, var) in ref_vars {
                let Some(i) = graph.params.iter().position(|p| p.name == *name) else { continue };
                let e = f64s(var.as_tensor())?;
                let cpu =
                    probe_values.iter().fold(error_f64(&want[i], &e, 1e-6), |m, v| m.max(error_f64(&v[i], &e, 1e-6)));
                errors.push((name, error_f64(&got[i], &e, 1e-6), cpu));
            }
            let cpu_worst = errors.iter().fold(0f64, |m, e| m.max(e.2));
            cpu_from_f64.2 = cpu_worst;
            for (name, eg, ec) in errors {
                if eg > parity.weight.0 {
                    parity.weight = (eg, name.clone());
                }
                if eg > tolerance(cpu_worst) {
                    crate::invalid!(
                        "{arch} {dataset} {name} after three steps: {eg:e} from float64 (float32 on the CPU, three runs: {ec:e})"
                    );
                }
            }
            // Running statistics (constants in the float64 reference): the GPU's against the CPU's, to the float32
            // accuracy of the steps that made them.
            let limit = tolerance(cpu_from_f64.1.max(cpu_worst));
            for ((p, g), want) in graph.params.iter().zip(&got).zip(&want).filter(|((p, _), _)| p.buffer) {
                let d = max_rel_error(g, want, 1e-6) as f64;
                if d > limit {
                    crate::invalid!(
                        "{arch} {dataset} {} after three steps: {d:e} from the CPU's (limit {limit:e})",
                        p.name
                    );
                }
            }
            parity.cpu_from_f64 = Some(cpu_from_f64);
        }
    }
    Ok(parity)
}
