//! `whitebox selectivity`, `whitebox roar`, `whitebox kar` and `whitebox report`: the evaluations of
//! `whitebox_core::evaluation` as jobs of independent units. Every unit writes its result atomically (a temporary
//! file, then a rename) and a rerun of the same command skips finished units, so a killed sweep resumes where it
//! stopped; a unit that takes long also saves its progress as it goes. `--shard I/N` (or Slurm's `SLURM_ARRAY_TASK_ID` /
//! `SLURM_ARRAY_TASK_COUNT`, or Kubernetes' `JOB_COMPLETION_INDEX` with `--shard-count`) gives a worker every N-th
//! unit, so a job array runs a sweep on many machines writing into one shared directory.

pub mod metrics;
pub mod remove_retrain;
pub mod report;
pub mod selectivity;

use crate::{datasets, fsutil, inspect::load_checkpoint};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;
use whitebox_core::attribution::{registry, Estimator, Explanation, Params, Settings};
use whitebox_core::evaluation::Shard;
use whitebox_core::params::Checkpoint;

/// The shard of this worker: `--shard`, else Slurm's array variables, else Kubernetes' completion index (with the
/// count from `--shard-count`), else everything.
pub fn shard_from(flag: Option<&str>, count_flag: Option<usize>) -> Result<Shard> {
    if let Some(s) = flag {
        return Ok(Shard::parse(s)?);
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let number =
        |name: &str, v: String| v.trim().parse::<usize>().with_context(|| format!("{name}={v} is not a number"));
    if let Some(index) = var("SLURM_ARRAY_TASK_ID") {
        let index = number("SLURM_ARRAY_TASK_ID", index)?;
        let min = var("SLURM_ARRAY_TASK_MIN").map(|v| number("SLURM_ARRAY_TASK_MIN", v)).transpose()?.unwrap_or(0);
        let count = match (count_flag, var("SLURM_ARRAY_TASK_COUNT")) {
            (Some(n), _) => n,
            (None, Some(v)) => number("SLURM_ARRAY_TASK_COUNT", v)?,
            (None, None) => bail!("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; pass --shard-count"),
        };
        return Ok(Shard::new(index - min.min(index), count)?);
    }
    if let Some(index) = var("JOB_COMPLETION_INDEX") {
        let index = number("JOB_COMPLETION_INDEX", index)?;
        let count = count_flag.context("JOB_COMPLETION_INDEX is set: pass --shard-count N (the Job's completions)")?;
        return Ok(Shard::new(index, count)?);
    }
    if let Some(n) = count_flag {
        bail!("--shard-count {n} without a shard index (--shard I/N, SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX)");
    }
    Ok(Shard::ALL)
}

/// The methods of a comma-separated list (each `METHOD` or `ENSEMBLE:METHOD`, e.g. `gb,sg-sq:gb`), in the order
/// given, without repeats.
pub fn parse_methods(list: &str) -> Result<Vec<Estimator>> {
    parse_list(list, "method", Estimator::parse)
}

/// The items of a comma-separated list, each read by `parse`, in the order given, without repeats; at least one.
pub fn parse_list<T: PartialEq>(
    list: &str,
    what: &str,
    parse: impl Fn(&str) -> whitebox_core::Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let item = parse(item)?;
        if !out.contains(&item) {
            out.push(item);
        }
    }
    if out.is_empty() {
        bail!("no {what} given");
    }
    Ok(out)
}

/// The samples and noise of every ensemble in an evaluation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnsembleSettings {
    pub samples: usize,
    /// σ as a fraction of each image's value range.
    pub noise: f64,
}

impl EnsembleSettings {
    /// Checked as `attribute` checks them: 1..=1000 samples, a finite noise level in [0, 10].
    pub fn new(samples: usize, noise: f64) -> Result<Self> {
        use whitebox_core::attribution::limits;
        if !(1..=limits::SAMPLES).contains(&samples) {
            bail!("--ensemble-n must be within 1..={}, got {samples}", limits::SAMPLES);
        }
        if !(noise.is_finite() && (0.0..=limits::NOISE).contains(&noise)) {
            bail!("--noise must be a number within [0, {}], got {noise}", limits::NOISE);
        }
        Ok(EnsembleSettings { samples, noise })
    }

    /// What a directory records: the settings when any of `methods` is an ensemble (directories without ensembles
    /// record nothing, as before ensembles could be evaluated).
    pub fn recorded(self, methods: &[Estimator]) -> Option<Self> {
        methods.iter().any(|m| m.ensemble.is_some()).then_some(self)
    }
}

/// The explanation each evaluation uses for `estimator`: the class logit, the method parameters `params` (each
/// method reads its own); an ensemble's noise drawn from `chunk_seed` (evaluations pass the chunk's first image
/// index, so a map does not depend on which worker computed it; plain methods keep seed 0, as their results were
/// made with).
pub fn explanation(
    estimator: Estimator,
    params: &Params,
    batch: usize,
    ensemble: EnsembleSettings,
    chunk_seed: u64,
) -> Explanation {
    let seed = if estimator.ensemble.is_some() { chunk_seed } else { 0 };
    Explanation {
        method: estimator.method,
        ensemble: estimator.ensemble,
        samples: ensemble.samples,
        noise_level: ensemble.noise,
        settings: Settings { params: params.clone(), batch, seed },
        ..Explanation::of(estimator.method)
    }
}

/// What every evaluation records about the model it explains, so that a directory never mixes results of two
/// models or two ways of explaining them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Explained {
    /// SHA-256 of the checkpoint file.
    pub checkpoint_sha256: String,
    pub arch: String,
    pub dataset: String,
    pub ig_steps: usize,
    /// The explained score.
    pub target: String,
    /// The methods' parameters set on the command line, but for IG's steps (recorded above, as before).
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
}

/// The checkpoint at `path`, and what an evaluation of it records.
pub fn checkpoint_explained(path: &Path, params: &Params) -> Result<(Checkpoint, Explained)> {
    params.validate()?;
    let steps = registry::param("ig-steps")?;
    let ck = load_checkpoint(path, &Device::Cpu)?;
    let explained = Explained {
        checkpoint_sha256: datasets::sha256_hex(&fsutil::read(path)?),
        arch: ck.spec.arch.name().into(),
        dataset: ck.spec.dataset.name().into(),
        ig_steps: params.count(steps),
        target: "logit of the true class".into(),
        params: params.clone().without(steps.key),
    };
    Ok((ck, explained))
}

/// Writes `settings` to `path` the first time; afterwards checks that a rerun uses the same settings.
pub fn check_settings<T: Serialize + DeserializeOwned + PartialEq>(path: &Path, settings: &T) -> Result<()> {
    if path.exists() {
        let saved: serde_json::Value =
            serde_json::from_slice(&fsutil::read(path)?).with_context(|| format!("reading {}", path.display()))?;
        let now = serde_json::to_value(settings)?;
        if saved != now {
            bail!(
                "{} holds results made with other settings:\n  saved: {saved}\n  now:   {now}\nuse another --out, or the saved settings",
                path.display()
            );
        }
        return Ok(());
    }
    fsutil::write_atomic(path, serde_json::to_string_pretty(settings)?.as_bytes())
}

/// A JSON file, or None when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = fsutil::read(path)?;
    Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is not a valid result file", path.display()))?))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    fsutil::write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}
