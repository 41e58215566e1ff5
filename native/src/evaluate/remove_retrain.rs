//! `whitebox roar` and `whitebox kar`: for each (mode, method, threshold, seed) unit, mask the train and test images
//! by the method's maps (computed once with the given checkpoint, cached in `maps/`), retrain from scratch with the
//! same hyper-parameters and record the test accuracy in `units/<unit>.json`. One `baseline` unit per seed trains
//! on the unmodified images (threshold 0). A unit's training saves its state after every epoch
//! (`work/<unit>/state.safetensors`) and resumes from it.

use super::{check_settings, checkpoint_explained, explanation, read_json, write_json, EnsembleSettings, Explained};
use crate::train::{load_state, run_epoch, save_state, SPLIT_SEED};
use crate::{datasets, fsutil, ui};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use whitebox_core::attribution::Estimator;
use whitebox_core::data::{train_validation_split, DatasetKind, ImageSet};
use whitebox_core::evaluation::{pixel_relevance, remove_pixels, Fill, Mode, Ranking, Shard};
use whitebox_core::models::{Classifier, ModelSpec};
use whitebox_core::train::{evaluate, EpochLog, TrainConfig, Trainer};

/// Images per cached map file.
const MAP_CHUNK: usize = 2048;

pub struct SweepArgs {
    pub checkpoint: PathBuf,
    pub mode: Mode,
    pub methods: Vec<Estimator>,
    pub ensemble: EnsembleSettings,
    pub thresholds: Vec<f64>,
    pub repeats: usize,
    pub config: TrainConfig,
    pub limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub fill: Fill,
    pub ranking: Ranking,
    pub seed_variant: bool,
    pub params: whitebox_core::attribution::Params,
    pub out: PathBuf,
    pub shard: Shard,
    pub data_dir: PathBuf,
    /// Compute the maps and retrain on this GPU (wgpu) instead of the CPU; the unit files are the same.
    pub gpu: Option<std::sync::Arc<whitebox_core::gpu::Gpu>>,
}

/// What every unit of a directory shares: changing any of it needs another directory.
#[derive(Serialize, Deserialize, PartialEq)]
struct Settings {
    #[serde(flatten)]
    explained: Explained,
    /// Training hyper-parameters; the seed of repeat r is `config.seed + r`.
    config: TrainConfig,
    limit: Option<usize>,
    test_limit: Option<usize>,
    fill: Fill,
    ranking: Ranking,
    seed_variant: bool,
    /// The ensembles' samples and noise, when the sweep has ensembles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ensemble: Option<EnsembleSettings>,
}

/// One retraining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// None for the baseline (nothing removed).
    pub mode: Option<Mode>,
    pub method: Option<Estimator>,
    pub threshold: f64,
    pub seed: u64,
}

impl Unit {
    pub fn id(&self) -> String {
        match (self.mode, self.method) {
            (Some(mode), Some(method)) => {
                format!("{}-{}-t{:.2}-s{}", mode.name(), method.file_id(), self.threshold, self.seed)
            }
            _ => format!("baseline-s{}", self.seed),
        }
    }
}

/// What a unit measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnitResult {
    pub unit: Unit,
    pub test_accuracy: f64,
    pub test_images: usize,
    pub train_images: usize,
    pub epochs: Vec<EpochLog>,
    pub seconds: f64,
    /// The worker that ran it (`I/N`).
    pub shard: String,
    pub seed_variant: bool,
}

/// The units of a sweep, in a fixed order (the same in every worker): per seed, the baseline, then each method ×
/// threshold.
pub fn units(mode: Mode, methods: &[Estimator], thresholds: &[f64], seeds: &[u64]) -> Vec<Unit> {
    let mut out = vec![];
    for &seed in seeds {
        out.push(Unit { mode: None, method: None, threshold: 0.0, seed });
        for &method in methods {
            for &threshold in thresholds {
                out.push(Unit { mode: Some(mode), method: Some(method), threshold, seed });
            }
        }
    }
    out
}

/// The images a sweep uses: the first `limit` training images (split 80/20 into train and validation) and the first
/// `test_limit` test images.
struct Data {
    train: ImageSet,
    test: ImageSet,
}

/// Per-pixel relevance (`N × H·W`) of `method` for every image of `set`, computed in chunks and cached in
/// `dir/<split>-<start>-<len>.safetensors`. Workers of a sharded sweep start at different chunks (`shard`) and load
/// what the others have already written, so the maps are not all computed by every worker.
fn relevance(
    model: &dyn Classifier,
    method: Estimator,
    args: &SweepArgs,
    set: &ImageSet,
    dir: &Path,
    split: &str,
) -> Result<Vec<f32>> {
    let kind = model.spec().dataset;
    let plane = set.height * set.width;
    let starts: Vec<usize> = (0..set.len()).step_by(MAP_CHUNK).collect();
    let first = args.shard.index * starts.len() / args.shard.count;
    let pb = ui::bar(set.len() as u64, format!("maps {} {split}", method.label()));
    let mut chunks: Vec<Option<Vec<f32>>> = vec![None; starts.len()];
    for k in (0..starts.len()).map(|k| (k + first) % starts.len()) {
        let start = starts[k];
        let len = MAP_CHUNK.min(set.len() - start);
        let path = dir.join(format!("{split}-{start:06}-{len}.safetensors"));
        let values = if path.exists() {
            let loaded = candle_core::safetensors::load_buffer(&fsutil::read(&path)?, &Device::Cpu)
                .with_context(|| format!("reading cached maps {}", path.display()))?;
            loaded
                .get("relevance")
                .with_context(|| format!("{} has no relevance tensor", path.display()))?
                .flatten_all()?
                .to_vec1::<f32>()?
        } else {
            let indices: Vec<usize> = (start..start + len).collect();
            let (x, y) = set.batch(&indices, kind, &Device::Cpu)?;
            let targets = y.to_vec1::<u32>()?;
            let explanation = explanation(method, &args.params, 128, args.ensemble, start as u64);
            let maps =
                explanation.run(model, &x, &targets, &mut |n| pb.inc(n as u64))?.flatten_all()?.to_vec1::<f32>()?;
            let per = set.image_len();
            let mut values = Vec::with_capacity(len * plane);
            for i in 0..len {
                values.extend(pixel_relevance(&maps[i * per..(i + 1) * per], set.channels, args.ranking)?);
            }
            let tensor = Tensor::from_vec(values.clone(), (len, plane), &Device::Cpu)?;
            let bytes = safetensors::serialize([("relevance", tensor)], None).map_err(|e| anyhow::anyhow!("{e}"))?;
            fsutil::write_atomic(&path, &bytes)?;
            values
        };
        if values.len() != len * plane {
            bail!("{} holds {} values, expected {}", path.display(), values.len(), len * plane);
        }
        chunks[k] = Some(values);
        pb.set_position(chunks.iter().flatten().map(|c| c.len() / plane).sum::<usize>() as u64);
    }
    pb.finish_and_clear();
    Ok(chunks.into_iter().flatten().flatten().collect())
}

pub fn run(args: SweepArgs) -> Result<()> {
    if args.thresholds.iter().any(|t| !(0.0..=1.0).contains(t)) || args.thresholds.is_empty() {
        bail!("thresholds must be fractions in [0, 1] (got {:?})", args.thresholds);
    }
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if args.seed_variant && args.fill != Fill::Zero {
        bail!("--seed-variant fills with zero, as the seed: drop --fill mean");
    }
    let (ck, explained) = checkpoint_explained(&args.checkpoint, &args.params)?;
    let spec = ck.spec;
    let kind = spec.dataset;
    let model = match &args.gpu {
        Some(gpu) => crate::explain::with_gpu(ck.model()?, gpu.clone())?,
        None => ck.model()?,
    };
    for m in &args.methods {
        m.method.check_applies(model.as_ref())?;
    }
    let loaded = datasets::load(kind, &args.data_dir)?;
    let data = Data {
        train: args.limit.map_or(loaded.train.clone(), |n| loaded.train.take(n)),
        test: args.test_limit.map_or(loaded.test.clone(), |n| loaded.test.take(n)),
    };
    let settings = Settings {
        explained,
        config: args.config.clone(),
        limit: args.limit,
        test_limit: args.test_limit,
        fill: args.fill,
        ranking: args.ranking,
        seed_variant: args.seed_variant,
        ensemble: args.ensemble.recorded(&args.methods),
    };
    check_settings(&args.out.join("sweep.json"), &settings)?;
    let seeds: Vec<u64> = (0..args.repeats as u64).map(|r| args.config.seed + r).collect();
    let all = units(args.mode, &args.methods, &args.thresholds, &seeds);
    let mine = args.shard.select(&all);
    let todo: Vec<Unit> = mine.iter().filter(|u| !unit_path(&args.out, u).exists()).cloned().collect();
    ui::note(format!(
        "{}: {} units in the sweep, {} for shard {}/{}, {} finished, {} to run",
        args.mode.name().to_uppercase(),
        all.len(),
        mine.len(),
        args.shard.index,
        args.shard.count,
        mine.len() - todo.len(),
        todo.len()
    ));
    let overall = ui::bar(todo.len() as u64, format!("{} units", args.mode.name()));
    let fill = args.fill.raw(kind);
    // One method's maps at a time (train, test): units are ordered by method.
    let mut maps: Option<(Estimator, Vec<f32>, Vec<f32>)> = None;
    for unit in todo {
        let started = Instant::now();
        let (train, test) = match (unit.mode, unit.method) {
            (Some(mode), Some(method)) => {
                if maps.as_ref().is_none_or(|(m, _, _)| *m != method) {
                    let dir = args.out.join("maps").join(method.file_id());
                    maps = Some(overall.suspend(|| -> Result<_> {
                        let tr = relevance(model.as_ref(), method, &args, &data.train, &dir, "train")?;
                        let te = relevance(model.as_ref(), method, &args, &data.test, &dir, "test")?;
                        Ok((method, tr, te))
                    })?);
                }
                let (_, train_rel, test_rel) = maps.as_ref().expect("maps of this method");
                let train = remove_pixels(&data.train, train_rel, mode, unit.threshold, &fill)?;
                let test = if args.seed_variant {
                    data.test.clone()
                } else {
                    remove_pixels(&data.test, test_rel, mode, unit.threshold, &fill)?
                };
                (train, test)
            }
            _ => (data.train.clone(), data.test.clone()),
        };
        let result = overall.suspend(|| retrain(&args, spec, &unit, &train, &test, &data.train))?;
        let result = UnitResult { seconds: started.elapsed().as_secs_f64(), ..result };
        write_json(&unit_path(&args.out, &unit), &result)?;
        let _ = std::fs::remove_dir_all(args.out.join("work").join(unit.id()));
        overall.inc(1);
        overall.suspend(|| {
            ui::note(format!("{:<28} test accuracy {:.4} ({:.0} s)", unit.id(), result.test_accuracy, result.seconds))
        });
    }
    overall.finish_and_clear();
    Ok(())
}

pub fn unit_path(out: &Path, unit: &Unit) -> PathBuf {
    out.join("units").join(format!("{}.json", unit.id()))
}

/// Trains a fresh model on `train` (split into train and validation; in the seed's variant the validation images
/// come unmasked from `original`), resuming from the unit's saved state, and measures it on `test`.
fn retrain(
    args: &SweepArgs,
    spec: ModelSpec,
    unit: &Unit,
    train: &ImageSet,
    test: &ImageSet,
    original: &ImageSet,
) -> Result<UnitResult> {
    let device = Device::Cpu;
    let config = TrainConfig { seed: unit.seed, ..args.config.clone() };
    let split = train_validation_split(train.len(), 0.2, SPLIT_SEED)?;
    if split.train.is_empty() || split.validation.is_empty() {
        bail!("too few training images ({}) for a train/validation split", train.len());
    }
    let validation_set = if args.seed_variant { original } else { train };
    let mut trainer = Trainer::new(spec, config.clone(), &device)?;
    let state_path = args.out.join("work").join(unit.id()).join("state.safetensors");
    if state_path.exists() {
        let (state, _) = load_state(&state_path, spec, &device)?;
        trainer.restore(&state)?;
    }
    if let Some(gpu) = &args.gpu {
        trainer.use_gpu(gpu.clone())?;
    }
    while trainer.epochs_done < config.epochs {
        let label = format!("{} {}/{}", unit.id(), trainer.epochs_done + 1, config.epochs);
        let entry = run_epoch(&mut trainer, train, &split.train, validation_set, &split.validation, &label, &device)?;
        trainer.history.push(entry);
        save_state(&state_path, &trainer.state()?, BTreeMap::from([("unit".to_string(), unit.id())]))?;
    }
    let all: Vec<usize> = (0..test.len()).collect();
    let eval = evaluate(trainer.frozen_model()?.as_ref(), test, &all, 500, &device, &mut |_| {})?;
    Ok(UnitResult {
        unit: unit.clone(),
        test_accuracy: eval.accuracy(),
        test_images: test.len(),
        train_images: split.train.len(),
        epochs: trainer.history.clone(),
        seconds: 0.0,
        shard: format!("{}/{}", args.shard.index, args.shard.count),
        seed_variant: args.seed_variant,
    })
}

/// Every finished unit in `out`.
pub fn results(out: &Path) -> Result<Vec<UnitResult>> {
    let dir = out.join("units");
    let mut all = vec![];
    if !dir.is_dir() {
        return Ok(all);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    for p in paths {
        all.extend(read_json::<UnitResult>(&p)?);
    }
    Ok(all)
}

/// `DatasetKind` of a sweep directory (for the report's seed numbers).
pub fn dataset_of(out: &Path) -> Result<Option<(String, DatasetKind)>> {
    let Some(v) = read_json::<serde_json::Value>(&out.join("sweep.json"))? else { return Ok(None) };
    let arch = v["arch"].as_str().unwrap_or_default().to_string();
    Ok(Some((arch, DatasetKind::parse(v["dataset"].as_str().unwrap_or_default())?)))
}
