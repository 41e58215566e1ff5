//! The executor against candle's autograd on the models' own modules: training (loss, every parameter's gradient,
//! the weights and running statistics after three SGD steps) and evaluation (logits, input and layer gradients under
//! every ReLU rule, attention maps), for every model on both data sets.

use crate::attribution::{autograd_input_gradient, autograd_layer_gradient, Score};
use crate::data::DatasetKind;
use crate::models::Classifier;
use crate::models::{autograd_step, Arch, ModelSpec};
use crate::nn::is_buffer;
use crate::ops::ReluRule;
use crate::testing::{max_rel_error, random, values};
use crate::train::parity::{error_f64, f64s, reference_f64, tolerance, trainable};
use crate::train::{Optimizer, OptimizerKind};
use crate::Result;
use candle_core::{DType, Device, Tensor};

const ALL: [Arch; 6] = [Arch::SimpleCnn, Arch::Cam, Arch::Cbam, Arch::Ran, Arch::Ran92, Arch::Warn];

/// A batch of `n` random images and labels for `spec`.
fn batch(spec: ModelSpec, n: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let (c, s) = (spec.dataset.channels(), spec.dataset.side());
    let x = (random(&[n, c, s, s], seed)? * 2.0)?;
    let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7 + seed as u32) % 10).collect();
    Ok((x, Tensor::new(labels.as_slice(), &Device::Cpu)?))
}

/// The graph model over `map`'s variables (its training step whatever `Classifier::training_step` serves).
fn graph_of(spec: ModelSpec, map: &candle_nn::VarMap) -> Result<crate::engine::GraphModel> {
    crate::engine::graph_model(spec, candle_nn::VarBuilder::from_varmap(map, DType::F32, &Device::Cpu))
}

/// Images per batch: 3 (WARN's gate normalises over the batch alone, so one image would do nothing).
const N: usize = 16;

/// One step's loss and every parameter's gradient, and three SGD steps (momentum, weight decay): the graph's
/// training pass and candle's autograd in float32 both against candle's autograd in float64 on the same weights.
/// Each gradient is compared to its own largest entry, floored at 1e-4 of the largest entry of any gradient of the
/// model (a gradient that is zero by construction, a convolution's bias before a batch normalisation, is rounding
/// noise on every path).
#[test]
fn training_equals_autograd() -> Result<()> {
    let (lr, momentum, decay) = (0.002, 0.9, 5e-4);
    for dataset in DatasetKind::ALL {
        for arch in ALL {
            let spec = ModelSpec { arch, dataset };
            let what = format!("{arch} {dataset}");
            let (map, model) = trainable(spec, 7)?;
            let graph = graph_of(spec, &map)?;
            let (ref_vars, reference) = reference_f64(spec, &map)?;
            let (x, y) = batch(spec, N, 1)?;
            let fast = graph.graph_step(&x, &y)?;
            let slow = autograd_step(model.as_ref(), &x, &y)?;
            let (_, exact_loss) = reference.training_loss(&x.to_dtype(DType::F64)?, &y)?;
            let exact_grads = exact_loss.backward()?;
            let exact_loss = exact_loss.to_scalar::<f64>()?;
            let loss_err = |l: f32| (l as f64 - exact_loss).abs() / exact_loss.abs().max(1.0);
            assert!(
                loss_err(fast.loss) <= tolerance(loss_err(slow.loss)),
                "{what}: loss {} vs {exact_loss}",
                fast.loss
            );
            let data = map.data().lock().unwrap();
            let mut triples = Vec::new();
            for (name, var) in &ref_vars {
                let t = data[name].as_tensor();
                let exact = exact_grads.get(var.as_tensor()).map(f64s).transpose()?;
                match (fast.grads.get(t), slow.grads.get(t), exact) {
                    (Some(f), Some(s), Some(e)) => triples.push((name.clone(), values(f)?, values(s)?, e)),
                    (None, None, None) => {}
                    (f, s, e) => panic!(
                        "{what}: {name} has a gradient on some paths only ({} {} {})",
                        f.is_some(),
                        s.is_some(),
                        e.is_some()
                    ),
                }
            }
            drop(data);
            assert!(!triples.is_empty(), "{what}: no gradient compared");
            let largest = triples.iter().flat_map(|t| t.3.iter()).fold(0f64, |m, v| m.max(v.abs()));
            let errors: Vec<(f64, f64)> = triples
                .iter()
                .map(|(_, f, s, e)| (error_f64(f, e, 1e-4 * largest), error_f64(s, e, 1e-4 * largest)))
                .collect();
            let candle_worst = errors.iter().fold(0f64, |m, e| m.max(e.1));
            for ((name, ..), (ef, es)) in triples.iter().zip(&errors) {
                assert!(
                    *ef <= tolerance(candle_worst),
                    "{what}: gradient of {name} off by {ef:e} (candle f32: {es:e}, at worst {candle_worst:e})"
                );
            }
            let graph_worst = errors.iter().fold(0f64, |m, e| m.max(e.0));
            let gradient_accuracy = candle_worst;
            println!("{what}: {} gradients, worst {graph_worst:e} (candle f32 {candle_worst:e})", triples.len());

            // Three SGD steps each way from the same start; float64 by hand (PyTorch's SGD). RAN's float64 reference
            // costs minutes a step at 16 images: 4 there.
            let step_batch = if matches!(arch, Arch::Ran | Arch::Ran92) { 4 } else { N };
            let (map_a, _) = trainable(spec, 7)?;
            let a = graph_of(spec, &map_a)?;
            let (map_b, b) = trainable(spec, 7)?;
            let (ref_vars, reference) = reference_f64(spec, &map_a)?;
            let mut velocity: Vec<Option<Tensor>> = vec![None; ref_vars.len()];
            let mut opt_a = Optimizer::new(OptimizerKind::Sgd, &map_a, momentum, decay);
            let mut opt_b = Optimizer::new(OptimizerKind::Sgd, &map_b, momentum, decay);
            for step in 0..3 {
                let (x, y) = batch(spec, step_batch, 10 + step)?;
                opt_a.step(&a.graph_step(&x, &y)?.grads, lr)?;
                opt_b.step(&autograd_step(b.as_ref(), &x, &y)?.grads, lr)?;
                let grads = reference.training_loss(&x.to_dtype(DType::F64)?, &y)?.1.backward()?;
                for ((_, var), v) in ref_vars.iter().zip(&mut velocity) {
                    let Some(g) = grads.get(var.as_tensor()) else { continue };
                    let d = (g + (var.as_tensor() * decay)?)?;
                    let new_v = match v.take() {
                        Some(old) => ((old * momentum)? + d)?,
                        None => d,
                    };
                    var.set(&(var.as_tensor() - (&new_v * lr)?)?)?;
                    *v = Some(new_v);
                }
            }
            let (da, db) = (map_a.data().lock().unwrap(), map_b.data().lock().unwrap());
            let mut errors = Vec::new();
            for (name, var) in &ref_vars {
                let e = f64s(var.as_tensor())?;
                let ea = error_f64(&values(da[name].as_tensor())?, &e, 1e-6);
                let eb = error_f64(&values(db[name].as_tensor())?, &e, 1e-6);
                errors.push((name, ea, eb));
            }
            let candle_worst = errors.iter().fold(0f64, |m, e| m.max(e.2));
            let mut worst = (0f64, candle_worst, String::new());
            for (name, ea, eb) in errors {
                assert!(
                    ea <= tolerance(candle_worst),
                    "{what}: {name} after three steps off by {ea:e} (candle f32: {eb:e})"
                );
                if ea > worst.0 {
                    worst = (ea, candle_worst, name.clone());
                }
            }
            // Running statistics (not in the float64 reference, whose statistics are constants): the graph's against
            // candle's float32 ones, to the float32 accuracy of the steps that made them.
            for (name, va) in da.iter().filter(|(k, _)| is_buffer(k)) {
                let e = max_rel_error(&values(va.as_tensor())?, &values(db[name].as_tensor())?, 1e-6);
                assert!(
                    e as f64 <= tolerance(gradient_accuracy.max(worst.1)),
                    "{what}: {name} after three steps off by {e:e}"
                );
            }
            println!("{what}: three steps, worst weight {:e} (candle f32 {:e}) at {}", worst.0, worst.1, worst.2);
        }
    }
    Ok(())
}

/// Images of the evaluation test: few, so that a batch without near-ties is quickly drawn.
const EVAL_N: usize = 3;

/// A batch of [`EVAL_N`] random images for which no max-pooling window in the evaluation forward pass holds a
/// near-tie. A gradient through max-pooling is unique only away from ties: where a window's two largest inputs lie
/// closer than the two implementations' rounding errors, the graph and candle (which sum in different orders) may
/// route the gradient to different cells, and the difference then spreads through every layer below. (RAN-92 on
/// CIFAR-10 with the first batch drawn has a window in attention module Stage3.2 whose two largest inputs differ by
/// 1.5e-7 of the layer's largest value, under the forward pass's own rounding; there the graph's input gradient was
/// 1.5e-2 from candle's, the difference starting exactly in that module's backward pass.) The rounding is measured:
/// the graph's activation at every tap against candle's float64 one, relative to the tap's largest value; batches
/// are drawn until every window's two largest inputs are more than twice that apart.
fn away_from_ties(
    spec: ModelSpec,
    map: &candle_nn::VarMap,
    model: &dyn Classifier,
    reference: &dyn Classifier,
    what: &str,
) -> Result<Tensor> {
    let engine = model.engine().expect("an engine for constant weights");
    let (x, _) = batch(spec, EVAL_N, 2)?;
    let targets = vec![0u32; EVAL_N];
    let mut rounding = Vec::new();
    for layer in 0..model.tap_points() {
        let act = engine.gradient(&values(&x)?, EVAL_N, &targets, Score::Logit, ReluRule::Standard, Some(layer))?;
        let x64 = x.to_dtype(DType::F64)?;
        let (exact, _) = autograd_layer_gradient(reference, &x64, &targets, Score::Logit, ReluRule::Standard, layer)?;
        let exact = f64s(&exact)?;
        let largest = exact.iter().fold(0f64, |m, a| m.max(a.abs()));
        let act = act.activation.expect("a layer's activation");
        let e = act.iter().zip(&exact).map(|(a, b)| (*a as f64 - b).abs() / largest).fold(0f64, f64::max);
        rounding.push(e as f32);
    }
    let graph = crate::models::graph(spec)?;
    let params: Vec<Vec<f32>> = {
        let data = map.data().lock().unwrap();
        graph.params.iter().map(|p| values(data[&p.name].as_tensor())).collect::<candle_core::Result<_>>()?
    };
    let ex = super::Executor::new(&graph, params.iter().map(|p| p.as_slice()).collect())?;
    for seed in 2..200 {
        let (x, _) = batch(spec, EVAL_N, seed)?;
        let channel_major = values(&x.transpose(0, 1)?.contiguous()?)?;
        let fwd = ex.forward(channel_major, EVAL_N, false, &[graph.output], true)?;
        let (mut closest, mut bound) = (f32::INFINITY, 1f32);
        for (i, node) in
            graph.nodes.iter().enumerate().filter(|(_, n)| matches!(n.op, crate::graph::Op::MaxPool2 { .. }))
        {
            // The rounding at the first tap from here on (it grows with depth).
            let tap = graph.taps.iter().position(|t| t.1 >= i).unwrap_or(graph.taps.len() - 1);
            let v = &fwd.values[node.inputs[0]];
            let largest = v.iter().fold(0f32, |m, a| m.max(a.abs()));
            let (_, hi, wi) = graph.nodes[node.inputs[0]].shape;
            let (_, ho, wo) = node.shape;
            for plane in v.chunks(hi * wi) {
                for (oy, ox) in (0..ho).flat_map(|oy| (0..wo).map(move |ox| (oy, ox))) {
                    let mut cells: Vec<f32> = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .iter()
                        .map(|(dy, dx)| (2 * oy + dy, 2 * ox + dx))
                        .filter(|&(y, x)| y < hi && x < wi)
                        .map(|(y, x)| plane[y * wi + x])
                        .collect();
                    cells.sort_by(|a, b| b.total_cmp(a));
                    // An exact tie of zeros is a ReLU's dead region: its gradient is zero whichever cell takes it.
                    if cells.len() < 2 || cells[0] == 0.0 {
                        continue;
                    }
                    let gap = (cells[0] - cells[1]) / largest;
                    if gap * bound < closest * rounding[tap] {
                        (closest, bound) = (gap, rounding[tap]);
                    }
                }
            }
        }
        if closest.is_infinite() {
            return Ok(x); // no max-pooling (WARN)
        }
        // Three times the rounding: both float32 paths (the graph's and candle's) round, each by about `bound`, and
        // `bound` was measured on another batch (twice let a pair 1.3e-6 apart, with bound 6.4e-7, swap sides).
        if closest > 3.0 * bound {
            println!("{what}: batch {seed}, closest pooling pair {closest:e} apart (rounding there {bound:e})");
            return Ok(x);
        }
        println!(
            "{what}: batch {seed} has a pooling pair {closest:e} apart, within three times the rounding {bound:e} there"
        );
    }
    panic!("{what}: every batch drawn holds a pooling near-tie")
}

/// The evaluation engine equals autograd for the attention models (the SimpleCNN family is covered by the CPU
/// plan's test): logits, input gradients under every rule and score, every layer's activation and gradient, and
/// the attention maps.
#[test]
fn evaluation_equals_autograd() -> Result<()> {
    for dataset in DatasetKind::ALL {
        for arch in [Arch::Ran, Arch::Ran92, Arch::Warn] {
            let spec = ModelSpec { arch, dataset };
            let (map, _) = trainable(spec, 3)?;
            let checkpoint = crate::params::Checkpoint::from_varmap(spec, &map, Default::default())?;
            let m = checkpoint.model()?;
            let engine = m.engine().expect("an engine for constant weights");
            let what = format!("{arch} {dataset}");
            let (_, reference) = reference_f64(spec, &map)?;
            let x = away_from_ties(spec, &map, m.as_ref(), reference.as_ref(), &what)?;
            let targets: Vec<u32> = (0..EVAL_N as u32).map(|i| (i * 3 + 1) % 10).collect();
            let xv = values(&x)?;
            let logits = engine.forward(&xv, EVAL_N)?;
            let want = m.forward(&x, &crate::nn::Pass::EVAL)?;
            assert!(max_rel_error(&logits, &values(&want)?, 1e-3) < 1e-5, "{what}: logits");
            // Candle's own float32 input gradient against float64 (standard rule: the only one candle computes off its
            // f32 kernels): a deep network in evaluation mode, with maxima and ReLU inputs within rounding of each
            // other, is not exact in float32 either; the graph's tolerance is 1e-4 or three times that.
            let x64 = candle_core::Var::from_tensor(&x.to_dtype(DType::F64)?)?;
            let logits64 = reference.forward(&x64, &crate::nn::Pass::EVAL)?;
            let picked = logits64.gather(&Tensor::new(targets.as_slice(), &Device::Cpu)?.unsqueeze(1)?, 1)?;
            let exact = f64s(picked.sum_all()?.backward()?.get(&x64).expect("an input gradient"))?;
            let slow = autograd_input_gradient(m.as_ref(), &x, &targets, Score::Logit, ReluRule::Standard)?;
            let limit = tolerance(error_f64(&values(&slow)?, &exact, 1e-12)) as f32;
            for rule in [ReluRule::Standard, ReluRule::Guided, ReluRule::Deconv] {
                for score in [Score::Logit, Score::Prob] {
                    let fast = engine.gradient(&xv, EVAL_N, &targets, score, rule, None)?.grad;
                    let slow = autograd_input_gradient(m.as_ref(), &x, &targets, score, rule)?;
                    let e = max_rel_error(&fast, &values(&slow)?, 1e-12);
                    assert!(e <= limit, "{what} {rule:?} {score:?}: {e:e} (limit {limit:e})");
                }
            }
            println!("{what}: input gradients within {limit:e}");
            for layer in 0..m.tap_points() {
                let fast = engine.gradient(&xv, EVAL_N, &targets, Score::Logit, ReluRule::Standard, Some(layer))?;
                let (sa, sg) =
                    autograd_layer_gradient(m.as_ref(), &x, &targets, Score::Logit, ReluRule::Standard, layer)?;
                let act = fast.activation.expect("a layer's activation");
                assert!(max_rel_error(&act, &values(&sa)?, 1e-12) < 1e-5, "{what} layer {layer} activation");
                // Both float32 paths against candle's float64 (a gradient through a deep network's float32 rounding).
                let (_, sg64) = autograd_layer_gradient(
                    reference.as_ref(),
                    x64.as_tensor(),
                    &targets,
                    Score::Logit,
                    ReluRule::Standard,
                    layer,
                )?;
                let exact = f64s(&sg64)?;
                let e = error_f64(&fast.grad, &exact, 1e-12);
                let limit = tolerance(error_f64(&values(&sg)?, &exact, 1e-12));
                assert!(e <= limit, "{what} layer {layer} gradient: {e:e} (limit {limit:e})");
            }
        }
    }
    Ok(())
}

/// DeepLIFT's summation-to-delta (Shrikumar et al. 2017, eq. 1): on a network of linear layers and element-wise
/// nonlinearities (convolution, BatchNorm, ReLU, sigmoid, tanh, pooling by the mean, a linear head; no max-pooling
/// or products, whose rules do not conserve), the rescale rule's attributions of each image sum to the target's
/// logit at the input minus at the reference. Also: on such a network the chain of secants is exact, so with a
/// reference near the input the map tends to the gradient times the difference.
#[test]
fn rescale_sums_to_the_difference() -> Result<()> {
    use crate::graph::{Builder, Conv, Scope};
    let mut b = Builder::new((2, 7, 7));
    let root = Scope::root();
    let mut x = b.conv(b.input(), &root.at("c0"), Conv::new(4, 3, 1))?;
    x = b.batch_norm(x, &root.at("bn"))?;
    x = b.relu(x);
    x = b.conv(x, &root.at("c1"), Conv::new(5, 3, 0))?;
    x = b.sigmoid(x);
    let y = b.conv(x, &root.at("c2"), Conv::new(5, 1, 0))?;
    let y = b.tanh(y);
    x = b.add(x, y)?;
    x = b.global_avg_pool(x);
    x = b.linear(x, &root.at("fc"), 3, true)?;
    let graph = b.finish(x);
    let params: Vec<Vec<f32>> = graph
        .params
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let v = values(&random(&p.shape, 10 + k as u64)?)?;
            // Positive variances.
            Ok(if p.name.ends_with("running_var") { v.iter().map(|a| a.abs() + 0.5).collect() } else { v })
        })
        .collect::<Result<_>>()?;
    let ex = super::Executor::new(&graph, params.iter().map(|p| p.as_slice()).collect())?;
    let n = 4;
    let input = values(&(random(&[n, 2, 7, 7], 3)? * 2.0)?)?;
    let reference = values(&(random(&[n, 2, 7, 7], 4)? * 0.5)?)?;
    let targets = [0u32, 1, 2, 1];
    let map = ex.rescale(&input, &reference, n, &targets, Score::Logit)?;
    let (fx, fr) = (ex.logits(&input, n)?, ex.logits(&reference, n)?);
    for (i, &t) in targets.iter().enumerate() {
        let sum: f64 = map[i * 98..(i + 1) * 98].iter().map(|&v| v as f64).sum();
        let delta = (fx[i * 3 + t as usize] - fr[i * 3 + t as usize]) as f64;
        assert!((sum - delta).abs() < 1e-4 * delta.abs().max(1.0), "image {i}: Σ {sum} vs Δf {delta}");
    }
    // A reference 1e-3 away: multipliers → the gradient.
    let near: Vec<f32> = input.iter().enumerate().map(|(k, v)| v - 1e-3 * ((k % 7) as f32 - 3.0)).collect();
    let map = ex.rescale(&input, &near, n, &targets, Score::Logit)?;
    let grad = ex.gradient(&input, n, &targets, Score::Logit, ReluRule::Standard, None)?.grad;
    let want: Vec<f32> = grad.iter().zip(input.iter().zip(&near)).map(|(g, (a, b))| g * (a - b)).collect();
    let err = max_rel_error(&map, &want, 1e-30);
    assert!(err < 2e-2, "near reference: {err:e}");
    assert!(ex.rescale(&input, &near, n, &targets, Score::Prob).unwrap_err().to_string().contains("logit"));
    Ok(())
}

/// LRP's identities (Montavon et al. 2019, §10.2 and §3): on a bias-free ReLU network (no pooling by the mean),
/// LRP-ε with ε → 0 equals gradient × input (divided by the target's logit, the output relevance being 1); and relevance is conserved — with the z⁺ rule on the convolutions,
/// flat on the first and ε on the dense layers (EpsilonPlusFlat), each image's input relevances sum to its output
/// relevance, 1.
#[test]
fn lrp_identities() -> Result<()> {
    use crate::graph::{Builder, Composite, Conv, LrpRule, Scope};
    let mut b = Builder::new((2, 8, 8));
    let root = Scope::root();
    let mut x = b.conv(b.input(), &root.at("c0"), Conv::new(4, 3, 1).no_bias())?;
    x = b.relu(x);
    x = b.max_pool2(x, false)?;
    x = b.conv(x, &root.at("c1"), Conv::new(6, 3, 1).no_bias())?;
    x = b.relu(x);
    x = b.linear(x, &root.at("fc0"), 7, false)?;
    x = b.relu(x);
    x = b.linear(x, &root.at("fc1"), 3, false)?;
    let graph = b.finish(x);
    let params: Vec<Vec<f32>> = graph
        .params
        .iter()
        .enumerate()
        .map(|(k, p)| Ok(values(&random(&p.shape, 20 + k as u64)?)?))
        .collect::<Result<_>>()?;
    let ex = super::Executor::new(&graph, params.iter().map(|p| p.as_slice()).collect())?;
    let n = 3;
    let input = values(&(random(&[n, 2, 8, 8], 5)? * 2.0)?)?;
    let targets = [0u32, 2, 1];
    let none = (vec![], vec![]);
    let eps = LrpRule::Epsilon(1e-9);
    let all_eps = Composite { first: eps.clone(), conv: eps.clone(), linear: eps };
    let lrp = ex.lrp(&input, n, &targets, &all_eps, &none)?;
    let grad = ex.gradient(&input, n, &targets, Score::Logit, ReluRule::Standard, None)?.grad;
    let gxi: Vec<f32> = grad.iter().zip(&input).map(|(g, x)| g * x).collect();
    // The output relevance is 1 at the target (Zennit's convention): LRP-0 is gradient × input over the logit.
    let logits = ex.logits(&input, n)?;
    let scaled: Vec<f32> =
        lrp.iter().enumerate().map(|(p, r)| r * logits[(p / 128) * 3 + targets[p / 128] as usize]).collect();
    let err = max_rel_error(&scaled, &gxi, 1e-30);
    assert!(err < 1e-4, "LRP-ε (ε → 0) vs gradient × input: {err:e}");
    let plus = LrpRule::AlphaBeta { alpha: 1.0, beta: 0.0 };
    let epf = Composite { first: LrpRule::Flat, conv: plus, linear: LrpRule::Epsilon(1e-6) };
    let lrp = ex.lrp(&input, n, &targets, &epf, &none)?;
    for i in 0..n {
        let sum: f64 = lrp[i * 128..(i + 1) * 128].iter().map(|&v| v as f64).sum();
        assert!((sum - 1.0).abs() < 1e-4, "image {i}: relevance sums to {sum}");
    }
    Ok(())
}

/// The forward pass from a tap, given the tap's own value, is the forward pass (also where later layers read
/// earlier ones past the tap: RAN's trunk and skip connections); a value of the wrong size is an error.
#[test]
fn forward_from_a_tap_with_its_own_value_is_the_forward_pass() -> Result<()> {
    for arch in [Arch::SimpleCnn, Arch::Cbam, Arch::Ran, Arch::Warn] {
        let spec = ModelSpec { arch, dataset: DatasetKind::Mnist };
        let (map, _) = trainable(spec, 5)?;
        let m = crate::params::Checkpoint::from_varmap(spec, &map, Default::default())?.model()?;
        let engine = m.propagator().expect("the graph's engine for constant weights");
        let (x, _) = batch(spec, 3, 4)?;
        let xv = values(&x)?;
        let want = engine.forward(&xv, 3)?;
        for layer in 0..m.tap_points() {
            let act = engine.activation(&xv, 3, layer)?;
            let got = engine.forward_from(&xv, 3, layer, &act)?;
            assert!(max_rel_error(&got, &want, 1e-6) < 1e-6, "{arch} layer {layer}");
            // Zeroing the layer changes the logits (the network reads the layer).
            let zero = engine.forward_from(&xv, 3, layer, &vec![0.0; act.len()])?;
            assert!(max_rel_error(&zero, &want, 1e-6) > 1e-6, "{arch} layer {layer} is read");
        }
        assert!(engine.forward_from(&xv, 3, 0, &[0.0; 5]).unwrap_err().to_string().contains("activation values"));
    }
    Ok(())
}
