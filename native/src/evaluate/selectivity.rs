//! `whitebox selectivity`: one unit per method (a base method or an ensemble of one, e.g. `sg-sq:gb`, whose files
//! are named `sg-sq+gb`). A unit saves its state after every step (`selectivity/work/<method>.json`) and writes
//! `selectivity/<method>.json` and `.csv` when done.

use super::{check_settings, checkpoint_explained, explanation, read_json, write_json, EnsembleSettings, Explained};
use crate::{datasets, fsutil, ui};
use anyhow::{Context, Result};
use rand::{seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use whitebox_core::attribution::Estimator;
use whitebox_core::evaluation::{area_under_curve, selectivity, SelectivityConfig, SelectivityState, Shard};

pub struct SelectivityArgs {
    pub checkpoint: PathBuf,
    pub methods: Vec<Estimator>,
    pub ensemble: EnsembleSettings,
    pub config: SelectivityConfig,
    /// Fraction of the test set (the seed: 10 %), drawn with `sample_seed`.
    pub sample: f64,
    pub sample_seed: u64,
    pub params: whitebox_core::attribution::Params,
    pub out: PathBuf,
    pub shard: Shard,
    pub data_dir: PathBuf,
    /// Compute the maps and the removal steps' forward passes on this GPU (wgpu); the results are the same.
    pub gpu: Option<std::sync::Arc<whitebox_core::gpu::Gpu>>,
}

/// What every unit of a directory shares.
#[derive(Serialize, Deserialize, PartialEq)]
struct Settings {
    #[serde(flatten)]
    explained: Explained,
    config: SelectivityConfig,
    sample: f64,
    sample_seed: u64,
    images: usize,
    /// The ensembles' samples and noise, when there are ensembles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ensemble: Option<EnsembleSettings>,
}

/// The result of one method.
#[derive(Serialize, Deserialize)]
pub struct SelectivityResult {
    pub method: Estimator,
    pub label: String,
    pub images: usize,
    pub steps: usize,
    pub pixels_per_step: usize,
    pub accuracy: Vec<f64>,
    pub mean_score: Vec<f64>,
    pub accuracy_auc: f64,
    pub score_auc: f64,
    pub seconds: f64,
}

pub fn dir(out: &Path) -> PathBuf {
    out.join("selectivity")
}

pub fn run(args: SelectivityArgs) -> Result<()> {
    let (ck, explained) = checkpoint_explained(&args.checkpoint, &args.params)?;
    let kind = ck.spec.dataset;
    let model = match &args.gpu {
        Some(gpu) => crate::explain::with_gpu(ck.model()?, gpu.clone())?,
        None => ck.model()?,
    };
    let test = datasets::load(kind, &args.data_dir)?.test;
    if !(args.sample > 0.0 && args.sample <= 1.0) {
        anyhow::bail!("--sample must be in (0, 1] (got {})", args.sample);
    }
    let count = ((test.len() as f64 * args.sample).round() as usize).max(1);
    let mut order: Vec<usize> = (0..test.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.sample_seed));
    let images = test.select(&order[..count])?;
    let dir = dir(&args.out);
    let settings = Settings {
        explained,
        config: args.config.clone(),
        sample: args.sample,
        sample_seed: args.sample_seed,
        images: count,
        ensemble: args.ensemble.recorded(&args.methods),
    };
    check_settings(&dir.join("settings.json"), &settings)?;
    let units = args.shard.select(&args.methods);
    let overall = ui::bar(units.len() as u64, "selectivity");
    for method in units {
        let id = method.file_id();
        let result_path = dir.join(format!("{id}.json"));
        if result_path.exists() {
            overall.inc(1);
            continue;
        }
        let state_path = dir.join("work").join(format!("{id}.json"));
        let mut state: SelectivityState = read_json(&state_path)?.unwrap_or_default();
        let already = state.accuracy.len();
        let started = Instant::now();
        let explanation = explanation(method, &args.params, 128, args.ensemble, 0);
        let pb = ui::bar(args.config.steps as u64 + 1, explanation.label());
        pb.set_position(already as u64);
        let mut last_save = Instant::now();
        selectivity(model.as_ref(), &explanation, &images, &args.config, &mut state, &mut |s| {
            pb.set_position(s.accuracy.len() as u64);
            pb.set_prefix(format!("acc {:.3}", s.accuracy.last().copied().unwrap_or(0.0)));
            // Saving costs little next to a step; throttle only when steps are very fast.
            if last_save.elapsed() > Duration::from_millis(500) || s.is_complete(&args.config) {
                write_json(&state_path, s).map_err(|e| whitebox_core::Error::InvalidArgument(format!("{e:#}")))?;
                last_save = Instant::now();
            }
            Ok(())
        })
        .with_context(|| format!("selectivity of {}", explanation.label()))?;
        pb.finish_and_clear();
        let result = SelectivityResult {
            method,
            label: explanation.label(),
            images: count,
            steps: args.config.steps,
            pixels_per_step: args.config.pixels_per_step,
            accuracy_auc: area_under_curve(&state.accuracy),
            score_auc: area_under_curve(&state.mean_score),
            accuracy: state.accuracy.clone(),
            mean_score: state.mean_score.clone(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let mut csv = String::from("step,pixels_removed,accuracy,mean_score\n");
        for (s, (a, m)) in result.accuracy.iter().zip(&result.mean_score).enumerate() {
            csv.push_str(&format!("{s},{},{a},{m}\n", s * result.pixels_per_step));
        }
        fsutil::write_atomic(&dir.join(format!("{id}.csv")), csv.as_bytes())?;
        write_json(&result_path, &result)?;
        let _ = std::fs::remove_file(&state_path);
        overall.inc(1);
        overall.suspend(|| {
            ui::note(format!(
                "{:<10} accuracy {:.3} → {:.3}, AUC {:.4}; score AUC {:.4} ({:.0} s{})",
                result.label,
                result.accuracy[0],
                result.accuracy.last().unwrap_or(&0.0),
                result.accuracy_auc,
                result.score_auc,
                result.seconds,
                if already > 0 { format!(", resumed at step {already}") } else { String::new() }
            ))
        });
    }
    overall.finish_and_clear();
    Ok(())
}

/// All finished results in `out`, each base method followed by its ensembles.
pub fn results(out: &Path) -> Result<Vec<SelectivityResult>> {
    let mut all = vec![];
    for m in Estimator::all() {
        if let Some(r) = read_json::<SelectivityResult>(&dir(out).join(format!("{}.json", m.file_id())))? {
            all.push(r);
        }
    }
    Ok(all)
}
