//! `whitebox train`: trains a model, writing after every epoch (atomically) the state needed to resume, the best
//! checkpoint by validation accuracy and a JSON log. Rerunning the same command resumes after the last epoch.

use crate::{fsutil, ui};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use whitebox_core::data::{train_validation_split, DatasetKind, ImageSet};
use whitebox_core::models::ModelSpec;
use whitebox_core::params::Checkpoint;
use whitebox_core::train::{evaluate, EpochLog, TrainConfig, TrainState, Trainer};

pub struct TrainArgs {
    pub spec: ModelSpec,
    pub config: TrainConfig,
    pub limit: Option<usize>,
    pub out: PathBuf,
    pub data_dir: PathBuf,
    pub device: Device,
    /// Train on this GPU (wgpu).
    pub gpu: Option<std::sync::Arc<whitebox_core::gpu::Gpu>>,
}

/// The JSON log: configuration, per-epoch figures and the best epoch.
#[derive(Serialize, Deserialize)]
pub struct TrainLog {
    pub arch: String,
    pub dataset: DatasetKind,
    pub config: TrainConfig,
    pub limit: Option<usize>,
    pub train_images: usize,
    pub validation_images: usize,
    pub epochs: Vec<EpochLog>,
    pub best_epoch: Option<usize>,
    pub best_val_acc: f64,
}

const STATE: &str = "state.safetensors";
const BEST: &str = "best.safetensors";
const LOG: &str = "log.json";
/// The data set's validation split is fixed (seed 223 as the seed's), independent of the training seed.
pub const SPLIT_SEED: u64 = 223;

/// Writes a resumable training state (weights, optimiser, epoch count and history) with `metadata`, atomically.
pub fn save_state(path: &Path, state: &TrainState, mut metadata: BTreeMap<String, String>) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in &state.weights.tensors {
        tensors.insert(format!("model/{k}"), t.clone());
    }
    for (k, t) in &state.optimizer {
        tensors.insert(format!("optim/{k}"), t.clone());
    }
    metadata.insert("epochs_done".to_string(), state.epochs_done.to_string());
    metadata.insert("history".to_string(), serde_json::to_string(&state.history)?);
    let ck = Checkpoint { spec: state.weights.spec, tensors, metadata };
    // The container is a checkpoint-shaped safetensors file; its keys are prefixed, so it is not loadable as a model.
    let bytes = ck.to_bytes(DType::F32)?;
    fsutil::write_atomic(path, &bytes)
}

/// Reads what [`save_state`] wrote: the state and its metadata.
pub fn load_state(path: &Path, spec: ModelSpec, device: &Device) -> Result<(TrainState, BTreeMap<String, String>)> {
    let bytes = fsutil::read(path)?;
    let ck = Checkpoint::from_bytes_unchecked(&path.display().to_string(), &bytes, device)?;
    if ck.spec != spec {
        bail!(
            "{} holds a {} {} run, not {} {}",
            path.display(),
            ck.spec.arch,
            ck.spec.dataset,
            spec.arch,
            spec.dataset
        );
    }
    let epochs_done: usize = ck.metadata.get("epochs_done").context("state without epoch count")?.parse()?;
    let history = serde_json::from_str(ck.metadata.get("history").context("state without history")?)?;
    let mut weights = HashMap::new();
    let mut optimizer = HashMap::new();
    for (k, t) in ck.tensors {
        if let Some(name) = k.strip_prefix("model/") {
            weights.insert(name.to_string(), t);
        } else if let Some(name) = k.strip_prefix("optim/") {
            optimizer.insert(name.to_string(), t);
        }
    }
    let weights = Checkpoint { spec, tensors: weights, metadata: BTreeMap::new() };
    Ok((TrainState { weights, optimizer, epochs_done, history }, ck.metadata))
}

/// Trains one epoch on `train[train_indices]` with a progress bar labelled `label`, then measures
/// `validation[validation_indices]`; returns the epoch's log entry (the caller records it).
pub fn run_epoch(
    trainer: &mut Trainer,
    train: &ImageSet,
    train_indices: &[usize],
    validation: &ImageSet,
    validation_indices: &[usize],
    label: &str,
    device: &Device,
) -> Result<EpochLog> {
    let epoch = trainer.epochs_done + 1;
    let t0 = std::time::Instant::now();
    let pb = ui::bar(train_indices.len().div_ceil(trainer.config.batch_size) as u64, label);
    let (train_loss, train_acc, lr) = trainer.train_epoch(train, train_indices, &mut |done, _, loss| {
        pb.set_position(done as u64);
        pb.set_prefix(format!("loss {loss:.4}"));
    })?;
    let train_seconds = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let val = evaluate(trainer.frozen_model()?.as_ref(), validation, validation_indices, 500, device, &mut |_| {})?;
    Ok(EpochLog {
        epoch,
        lr,
        train_loss,
        train_acc,
        val_loss: val.loss(),
        val_acc: val.accuracy(),
        seconds: t0.elapsed().as_secs_f64(),
        train_images_per_second: train_indices.len() as f64 / train_seconds,
    })
}

pub fn run(args: TrainArgs) -> Result<()> {
    let TrainArgs { spec, config, limit, out, data_dir, device, gpu } = args;
    let loaded = crate::datasets::load(spec.dataset, &data_dir)?;
    let mut train = loaded.train;
    if let Some(n) = limit {
        train = train.take(n);
    }
    let split = train_validation_split(train.len(), 0.2, SPLIT_SEED)?;
    if split.train.is_empty() || split.validation.is_empty() {
        bail!("--limit {} leaves no training or validation images", limit.unwrap_or(0));
    }
    let mut trainer = Trainer::new(spec, config.clone(), &device)?;
    let state_path = out.join(STATE);
    let mut log = TrainLog {
        arch: spec.arch.name().into(),
        dataset: spec.dataset,
        config: config.clone(),
        limit,
        train_images: split.train.len(),
        validation_images: split.validation.len(),
        epochs: vec![],
        best_epoch: None,
        best_val_acc: -1.0,
    };
    if state_path.exists() {
        let (state, metadata) = load_state(&state_path, spec, &device)?;
        let saved_log: TrainLog = serde_json::from_str(metadata.get("log").context("state without log")?)?;
        if saved_log.config != config || saved_log.limit != limit {
            bail!(
                "{} holds a run with other settings ({}); use another --out or remove it",
                out.display(),
                serde_json::to_string(&saved_log.config)?
            );
        }
        trainer.restore(&state)?;
        log = saved_log;
        ui::note(format!("resuming {} after epoch {}", out.display(), trainer.epochs_done));
    }
    if let Some(gpu) = gpu {
        trainer.use_gpu(gpu)?;
    }
    let started = std::time::Instant::now();
    while trainer.epochs_done < config.epochs {
        let epoch = trainer.epochs_done + 1;
        let entry = run_epoch(
            &mut trainer,
            &train,
            &split.train,
            &train,
            &split.validation,
            &format!("epoch {epoch}/{}", config.epochs),
            &device,
        )?;
        let train_loss = entry.train_loss;
        let train_acc = entry.train_acc;
        ui::note(format!(
            "epoch {epoch:>3}: loss {train_loss:.4} acc {train_acc:.4} | val loss {:.4} acc {:.4} | {:.*} img/s, {:.1} s",
            entry.val_loss,
            entry.val_acc,
            // An emulated GPU (lavapipe) trains an attention model below one image a second: show that, not 0.
            if entry.train_images_per_second < 10.0 { 2 } else { 0 },
            entry.train_images_per_second,
            entry.seconds
        ));
        trainer.history.push(entry.clone());
        log.epochs.push(entry.clone());
        if entry.val_acc > log.best_val_acc {
            log.best_val_acc = entry.val_acc;
            log.best_epoch = Some(epoch);
            let mut meta = BTreeMap::new();
            meta.insert("epoch".into(), epoch.to_string());
            meta.insert("val_acc".into(), format!("{:.4}", entry.val_acc));
            meta.insert("seed".into(), config.seed.to_string());
            meta.insert("config".into(), serde_json::to_string(&config)?);
            let bytes = trainer.checkpoint(meta)?.to_bytes(DType::F32)?;
            fsutil::write_atomic(&out.join(BEST), &bytes)?;
        }
        fsutil::write_atomic(&out.join(LOG), serde_json::to_string_pretty(&log)?.as_bytes())?;
        save_state(
            &state_path,
            &trainer.state()?,
            BTreeMap::from([("log".to_string(), serde_json::to_string(&log)?)]),
        )?;
    }
    ui::note(format!(
        "done in {:.0} s: best validation accuracy {:.4} at epoch {}; checkpoint {}",
        started.elapsed().as_secs_f64(),
        log.best_val_acc,
        log.best_epoch.unwrap_or(0),
        out.join(BEST).display()
    ));
    println!("{}", out.join(BEST).display());
    Ok(())
}
