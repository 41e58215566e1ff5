//! Supervised training as the seed does it (cross-entropy on logits, SGD with momentum 0.9 and weight decay 5e-4,
//! batch 128, best checkpoint by validation accuracy), deterministic on the CPU for a seed, and resumable: the
//! shuffling of epoch `e` depends only on (seed, e), and [`Trainer::state`] captures everything else.

mod augment;
mod optim;
#[doc(hidden)]
pub mod parity;

pub use crate::graph::Gradients;
pub use augment::random_crop_flip;
pub use optim::{Optimizer, OptimizerKind};

use crate::data::{DatasetKind, ImageSet};
use crate::models::{Classifier, ModelSpec};
use crate::params::{init_model, Checkpoint};
use crate::{Error, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use rand::{seq::SliceRandom, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Learning-rate schedule over all the steps of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Schedule {
    /// The seed's: the same rate throughout.
    Constant,
    /// Cosine annealing to zero (Loshchilov & Hutter 2017, without restarts), per step.
    Cosine,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            other => Err(Error::InvalidArgument(format!("unknown schedule '{other}' (expected constant or cosine)"))),
        }
    }

    pub fn rate(self, base: f64, step: usize, total: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total.max(1) as f64).cos()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub seed: u64,
    /// Random 4-pixel-padded crops and horizontal flips, as the seed does for CIFAR-10.
    pub augment: bool,
}

impl TrainConfig {
    /// The seed's hyper-parameters for `dataset`.
    pub fn seed_defaults(dataset: DatasetKind) -> Self {
        TrainConfig {
            epochs: 30,
            batch_size: 128,
            lr: 0.01,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Constant,
            seed: 223,
            augment: dataset == DatasetKind::Cifar10,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            crate::invalid!("epochs and batch size must be positive (got {} and {})", self.epochs, self.batch_size);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            crate::invalid!("learning rate must be a positive number (got {})", self.lr);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            crate::invalid!("momentum must be a number in [0, 1) (got {})", self.momentum);
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            crate::invalid!("weight decay must be a finite number ≥ 0 (got {})", self.weight_decay);
        }
        Ok(())
    }
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub seconds: f64,
    pub train_images_per_second: f64,
}

/// Accuracy and loss of a model on a set of images, per class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub correct: Vec<usize>,
    pub total: Vec<usize>,
    pub loss_sum: f64,
}

impl Evaluation {
    pub fn count(&self) -> usize {
        self.total.iter().sum()
    }
    pub fn accuracy(&self) -> f64 {
        self.correct.iter().sum::<usize>() as f64 / self.count().max(1) as f64
    }
    pub fn class_accuracy(&self, class: usize) -> f64 {
        self.correct[class] as f64 / self.total[class].max(1) as f64
    }
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count().max(1) as f64
    }
    fn add_batch(&mut self, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let classes = logits.dim(1)?;
        if self.total.is_empty() {
            self.correct = vec![0; classes];
            self.total = vec![0; classes];
        }
        let loss = candle_nn::loss::cross_entropy(logits, labels)?.to_scalar::<f32>()? as f64;
        self.loss_sum += loss * labels.dim(0)? as f64;
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        for (p, y) in pred.iter().zip(labels.to_vec1::<u32>()?) {
            self.total[y as usize] += 1;
            self.correct[y as usize] += (*p == y) as usize;
        }
        Ok(())
    }
}

/// Evaluation-mode accuracy of `model` on the images of `set` at `indices`, in batches.
pub fn evaluate(
    model: &dyn Classifier,
    set: &ImageSet,
    indices: &[usize],
    batch_size: usize,
    device: &Device,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Evaluation> {
    let kind = model.spec().dataset;
    let mut eval = Evaluation::default();
    for chunk in indices.chunks(batch_size.max(1)) {
        let (x, y) = set.batch(chunk, kind, device)?;
        let logits = crate::models::eval_logits(model, &x)?.detach();
        eval.add_batch(&logits, &y)?;
        on_batch(chunk.len());
    }
    Ok(eval)
}

/// Steps between read-backs of the loss when training on the GPU.
#[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
const GPU_READ_EVERY: usize = 20;

/// A model being trained, with its optimiser and progress.
pub struct Trainer {
    pub spec: ModelSpec,
    pub config: TrainConfig,
    map: VarMap,
    model: Box<dyn Classifier>,
    optimizer: Optimizer,
    device: Device,
    /// Number of completed epochs.
    pub epochs_done: usize,
    pub history: Vec<EpochLog>,
    /// When training on the GPU: the trainer there, which holds the weights during an epoch (`map` and the
    /// optimiser get them back after each).
    #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
    gpu: Option<crate::gpu::GpuTrainer>,
}

/// Everything needed to resume a run: weights, optimiser state and history.
pub struct TrainState {
    pub weights: Checkpoint,
    pub optimizer: HashMap<String, Tensor>,
    pub epochs_done: usize,
    pub history: Vec<EpochLog>,
}

impl Trainer {
    pub fn new(spec: ModelSpec, config: TrainConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let (map, model) = init_model(spec, config.seed, device)?;
        let optimizer = Optimizer::new(config.optimizer, &map, config.momentum, config.weight_decay);
        Ok(Trainer {
            spec,
            config,
            map,
            model,
            optimizer,
            device: device.clone(),
            epochs_done: 0,
            history: vec![],
            #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
            gpu: None,
        })
    }

    /// Trains on `gpu` from now on (SGD only), starting from the current weights and optimiser state.
    #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
    pub fn use_gpu(&mut self, gpu: std::sync::Arc<crate::gpu::Gpu>) -> Result<()> {
        if self.config.optimizer != OptimizerKind::Sgd {
            crate::invalid!("the GPU trainer runs SGD; train with --optimizer sgd or on the CPU");
        }
        let graph = std::sync::Arc::new(crate::models::graph(self.spec)?);
        crate::gpu::check_graph(&graph)?;
        let (values, velocity) = {
            let vars = self.map.data().lock().map_err(|_| Error::InvalidArgument("poisoned var map".into()))?;
            let state = self.optimizer.state()?;
            let mut values = Vec::with_capacity(graph.params.len());
            let mut velocity = Vec::with_capacity(graph.params.len());
            for p in &graph.params {
                let var = vars.get(&p.name).ok_or_else(|| Error::Checkpoint(format!("no variable {}", p.name)))?;
                values.push(var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
                velocity.push(match state.get(&format!("{}#1", p.name)) {
                    Some(t) => Some(t.flatten_all()?.to_vec1::<f32>()?),
                    None => None,
                });
            }
            (values, velocity)
        };
        let started = velocity.iter().any(Option::is_some);
        self.gpu = Some(crate::gpu::GpuTrainer::new(
            gpu,
            graph,
            &values,
            started.then_some(velocity.as_slice()),
            self.config.batch_size,
            self.config.momentum as f32,
            self.config.weight_decay as f32,
        )?);
        Ok(())
    }

    /// The GPU's weights and momentum buffers back into the var map and the optimiser.
    #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
    fn sync_from_gpu(&mut self) -> Result<()> {
        let Some(gpu) = &self.gpu else { return Ok(()) };
        let values = crate::gpu::block_on(gpu.parameters())?;
        let velocity = crate::gpu::block_on(gpu.velocity())?;
        let mut state = self.optimizer.state()?;
        state.retain(|k, _| !k.ends_with("#1"));
        let vars = self.map.data().lock().map_err(|_| Error::InvalidArgument("poisoned var map".into()))?;
        for ((p, v), b) in gpu.graph().params.iter().zip(values).zip(velocity) {
            let var = vars.get(&p.name).ok_or_else(|| Error::Checkpoint(format!("no variable {}", p.name)))?;
            var.set(&Tensor::from_vec(v, var.shape(), &self.device)?)?;
            if let Some(b) = b {
                state.insert(format!("{}#1", p.name), Tensor::from_vec(b, var.shape(), &self.device)?);
            }
        }
        drop(vars);
        self.optimizer.load_state(&state)
    }

    pub fn model(&self) -> &dyn Classifier {
        self.model.as_ref()
    }

    /// The model with its current weights as constants, for evaluation: a forward pass through it keeps no autograd
    /// graph (through the training model, a batch of 500 RAN images held every activation, 8 GB), and the small
    /// models get the evaluation engine.
    pub fn frozen_model(&self) -> Result<Box<dyn Classifier>> {
        self.checkpoint(BTreeMap::new())?.model()
    }

    /// The current weights, with `metadata` for the file header.
    pub fn checkpoint(&self, metadata: BTreeMap<String, String>) -> Result<Checkpoint> {
        Checkpoint::from_varmap(self.spec, &self.map, metadata)
    }

    pub fn state(&self) -> Result<TrainState> {
        Ok(TrainState {
            weights: self.checkpoint(BTreeMap::new())?,
            optimizer: self.optimizer.state()?,
            epochs_done: self.epochs_done,
            history: self.history.clone(),
        })
    }

    pub fn restore(&mut self, state: &TrainState) -> Result<()> {
        if state.weights.spec != self.spec {
            return Err(Error::Checkpoint(format!("saved state is for {:?}, not {:?}", state.weights.spec, self.spec)));
        }
        state.weights.copy_into(&self.map)?;
        let optimizer: HashMap<String, Tensor> =
            state.optimizer.iter().map(|(k, t)| Ok((k.clone(), t.to_device(&self.device)?))).collect::<Result<_>>()?;
        self.optimizer.load_state(&optimizer)?;
        self.epochs_done = state.epochs_done;
        self.history = state.history.clone();
        #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
        if let Some(gpu) = self.gpu.take() {
            self.use_gpu(gpu.device())?;
        }
        Ok(())
    }

    /// The order and augmentation draws of epoch `epoch` depend only on the seed and the epoch number.
    fn epoch_rng(&self, epoch: usize) -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(
            self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(epoch as u64 + 1),
        )
    }

    /// Trains one epoch over `train[indices]`; `on_batch(done, total, loss)` reports progress. Returns the mean
    /// loss and accuracy over the epoch's batches.
    pub fn train_epoch(
        &mut self,
        train: &ImageSet,
        indices: &[usize],
        on_batch: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<(f64, f64, f64)> {
        if indices.is_empty() {
            crate::invalid!("no training images");
        }
        let epoch = self.epochs_done;
        let mut rng = self.epoch_rng(epoch);
        let mut order = indices.to_vec();
        order.shuffle(&mut rng);
        let batches = order.len().div_ceil(self.config.batch_size);
        let total_steps = batches * self.config.epochs;
        let kind = self.spec.dataset;
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = self.config.lr;
        for (b, chunk) in order.chunks(self.config.batch_size).enumerate() {
            let (x, y) = if self.config.augment {
                let mut pixels = Vec::with_capacity(chunk.len() * train.image_len());
                for &i in chunk {
                    let (dy, dx, flip) =
                        (rng.random_range(-4i32..=4), rng.random_range(-4i32..=4), rng.random_bool(0.5));
                    pixels.extend(random_crop_flip(
                        train.image(i),
                        train.channels,
                        train.height,
                        train.width,
                        dy,
                        dx,
                        flip,
                    ));
                }
                let labels = chunk.iter().map(|&i| train.labels[i]).collect();
                let set = ImageSet::new(pixels, labels, train.channels, train.height, train.width)?;
                set.batch(&(0..chunk.len()).collect::<Vec<_>>(), kind, &self.device)?
            } else {
                train.batch(chunk, kind, &self.device)?
            };
            lr = self.config.schedule.rate(self.config.lr, epoch * batches + b, total_steps);
            #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
            if let Some(gpu) = &mut self.gpu {
                if b == 0 {
                    gpu.reset_tally();
                }
                let (xv, yv) = (x.flatten_all()?.to_vec1::<f32>()?, y.to_vec1::<u32>()?);
                crate::gpu::block_on(gpu.step(&xv, &yv, lr as f32))?;
                seen += chunk.len();
                // The loss is read back every few steps (each read waits for the GPU).
                if (b + 1) % GPU_READ_EVERY == 0 || b + 1 == batches {
                    let t = crate::gpu::block_on(gpu.tally())?;
                    if !t.last_loss.is_finite() || !t.loss_sum.is_finite() {
                        return Err(Error::InvalidArgument(format!(
                            "training diverged (loss {}) by epoch {epoch}, batch {b}: lower the learning rate",
                            t.last_loss
                        )));
                    }
                    (loss_sum, correct) = (t.loss_sum, t.hits);
                    on_batch(b + 1, batches, t.last_loss as f64);
                }
                continue;
            }
            let step = self.model.training_step(&x, &y)?;
            self.optimizer.step(&step.grads, lr)?;
            let (logits, loss_v) = (step.logits, step.loss as f64);
            if !loss_v.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "training diverged (loss {loss_v}) at epoch {epoch}, batch {b}: lower the learning rate"
                )));
            }
            let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            correct += pred.iter().zip(y.to_vec1::<u32>()?).filter(|(p, y)| **p == *y).count();
            loss_sum += loss_v * chunk.len() as f64;
            seen += chunk.len();
            on_batch(b + 1, batches, loss_v);
        }
        #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
        self.sync_from_gpu()?;
        self.epochs_done += 1;
        Ok((loss_sum / seen as f64, correct as f64 / seen as f64, lr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    pub(super) fn toy_set(n: usize) -> ImageSet {
        // Class = which quadrant is bright: learnable in a few steps.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pixels = vec![];
        let mut labels = vec![];
        for i in 0..n {
            let class = (i % 4) as u8;
            for y in 0..28 {
                for x in 0..28 {
                    let q = (y / 14) * 2 + x / 14;
                    pixels.push(if q == class as usize {
                        220 + rng.random_range(0..20)
                    } else {
                        rng.random_range(0..10)
                    });
                }
            }
            labels.push(class);
        }
        ImageSet::new(pixels, labels, 1, 28, 28).unwrap()
    }

    #[test]
    fn learns_a_toy_task_deterministically_and_resumes_exactly() -> Result<()> {
        let set = toy_set(64);
        let idx: Vec<usize> = (0..64).collect();
        let spec = ModelSpec { arch: Arch::Cbam, dataset: DatasetKind::Mnist };
        let config =
            TrainConfig { epochs: 4, batch_size: 4, lr: 0.01, ..TrainConfig::seed_defaults(DatasetKind::Mnist) };
        let run = |resume_after: Option<usize>| -> Result<(Vec<f64>, Evaluation)> {
            let mut t = Trainer::new(spec, config.clone(), &Device::Cpu)?;
            let mut losses = vec![];
            for e in 0..4 {
                if resume_after == Some(e) {
                    let state = t.state()?;
                    t = Trainer::new(spec, config.clone(), &Device::Cpu)?;
                    t.restore(&state)?;
                }
                losses.push(t.train_epoch(&set, &idx, &mut |_, _, _| {})?.0);
            }
            Ok((losses, evaluate(t.model(), &set, &idx, 32, &Device::Cpu, &mut |_| {})?))
        };
        let (losses, eval) = run(None)?;
        assert!(losses[3] < losses[0] * 0.5, "loss should fall: {losses:?}");
        // Evaluation mode uses running statistics (momentum 0.1), which need a few dozen steps to settle.
        assert!(eval.accuracy() > 0.9, "toy accuracy {}", eval.accuracy());
        let (again, eval2) = run(Some(2))?;
        assert_eq!(losses, again, "same seed, with a save/restore in between, gives the same run");
        assert_eq!(eval, eval2);
        Ok(())
    }

    /// The attention models learn too: on the toy task, the training loss (WARN's includes its regularisation)
    /// falls within a few small epochs.
    #[test]
    fn attention_models_learn_the_toy_task() -> Result<()> {
        let set = toy_set(16);
        let idx: Vec<usize> = (0..16).collect();
        for arch in [Arch::Ran, Arch::Warn] {
            let spec = ModelSpec { arch, dataset: DatasetKind::Mnist };
            let config =
                TrainConfig { epochs: 3, batch_size: 8, lr: 0.01, ..TrainConfig::seed_defaults(DatasetKind::Mnist) };
            let mut t = Trainer::new(spec, config, &Device::Cpu)?;
            let losses: Vec<f64> =
                (0..3).map(|_| t.train_epoch(&set, &idx, &mut |_, _, _| {}).map(|r| r.0)).collect::<Result<_>>()?;
            assert!(losses[2] < losses[0] * 0.7, "{arch}: loss should fall: {losses:?}");
        }
        Ok(())
    }

    #[test]
    fn cosine_schedule_by_hand() {
        assert_eq!(Schedule::Cosine.rate(0.1, 0, 10), 0.1);
        assert!((Schedule::Cosine.rate(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert_eq!(Schedule::Constant.rate(0.1, 7, 10), 0.1);
    }
}
