//! `whitebox metrics`: the metrics of `whitebox_core::metrics` for chosen methods on chosen test images, one unit
//! per (metric, method). Each method's maps are computed once and cached (`metrics/maps/<method>.safetensors`); a
//! unit writes `metrics/<metric>/<method>.json` and `.csv` atomically when done, so a rerun skips finished units and
//! `--shard I/N` splits the units between workers. `summary.md` ranks the methods by each metric and gives the rank
//! correlation between metrics.

use super::{check_settings, checkpoint_explained, explanation, read_json, write_json, EnsembleSettings, Explained};
use crate::{datasets, fsutil, ui};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use whitebox_core::attribution::{standard_normal, Estimator};
use whitebox_core::data::parse_indices;
use whitebox_core::evaluation::{Ranking, Shard};
use whitebox_core::graph::Score;
use whitebox_core::metrics::faithfulness_correlation::{faithfulness_correlation, FaithfulnessCorrelation};
use whitebox_core::metrics::infidelity::{infidelity, Infidelity};
use whitebox_core::metrics::insertion_deletion::{causal_curves, Causal, CausalConfig, Curves};
use whitebox_core::metrics::mprt::{
    efficient_mprt, fresh_checkpoint, mprt, other_classes, random_logit, smoothed, Order, Randomisation,
};
use whitebox_core::metrics::pixel_flipping::{pixel_flipping, PixelFlipping};
use whitebox_core::metrics::road::{road, RoadConfig};
use whitebox_core::metrics::sensitivity_max::{sensitivity_max, SensitivityMax};
use whitebox_core::metrics::similarity::{spearman, Similarity};
use whitebox_core::metrics::{Baseline, Batch, Metric, Scorer};
use whitebox_core::models::Classifier;

/// The metrics' settings (one set for a directory).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetricsConfig {
    /// ROAD's fractions removed.
    pub road_fractions: Vec<f64>,
    /// Steps of the insertion, deletion and pixel-flipping curves.
    pub curve_steps: usize,
    /// Perturbations per image for infidelity and max-sensitivity.
    pub samples: usize,
    /// Faithfulness correlation: subsets per image and pixels per subset.
    pub fc_runs: usize,
    pub fc_subset: usize,
    /// sMPRT: noisy copies per map (plus the clean input) and their σ as a fraction of the image's range.
    pub smprt_samples: usize,
    pub smprt_noise: f64,
    /// Seed of every random draw (imputation noise, subsets, perturbations, re-initialised layers, other classes).
    pub seed: u64,
}

pub struct MetricsArgs {
    pub checkpoint: PathBuf,
    pub methods: Vec<Estimator>,
    pub metrics: Vec<Metric>,
    pub ensemble: EnsembleSettings,
    pub params: whitebox_core::attribution::Params,
    pub indices: String,
    pub config: MetricsConfig,
    pub out: PathBuf,
    pub shard: Shard,
    pub data_dir: PathBuf,
    /// A ROAR/KAR sweep's directory whose results join the summary (kept in `metrics/roar-kar.json`, so that
    /// `whitebox report` finds it again).
    pub roar_kar: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Settings {
    #[serde(flatten)]
    explained: Explained,
    indices: Vec<usize>,
    config: MetricsConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ensemble: Option<EnsembleSettings>,
}

/// Numbers that may be undefined (a correlation of a constant map): NaN is written as JSON `null` and read back.
mod nullable {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }

    pub mod one {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
            match v.is_finite() {
                true => s.serialize_some(v),
                false => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
        }
    }
}

/// A mean curve over the images: its points' labels and values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Curve {
    pub x: Vec<String>,
    #[serde(with = "nullable")]
    pub mean: Vec<f64>,
}

/// The result of one (metric, method) unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricResult {
    pub metric: Metric,
    pub method: Estimator,
    pub label: String,
    /// What `per_image` holds.
    pub summary: String,
    pub higher_is_better: bool,
    /// Test-set indices of the images.
    pub images: Vec<usize>,
    /// One number per image; undefined (null in JSON) where the metric is, e.g. the correlation of a constant map.
    #[serde(with = "nullable")]
    pub per_image: Vec<f64>,
    /// Mean and standard deviation over the images where the number is defined.
    #[serde(with = "nullable::one")]
    pub mean: f64,
    #[serde(with = "nullable::one")]
    pub std: f64,
    pub curves: BTreeMap<String, Curve>,
    pub seconds: f64,
}

pub fn dir(out: &Path) -> PathBuf {
    out.join("metrics")
}

/// The metrics named in a comma-separated list, in order, without repeats.
pub fn parse_metrics(list: &str) -> Result<Vec<Metric>> {
    super::parse_list(list, "metric", Metric::parse)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Column means of equally long rows.
fn column_means<T: Copy + Into<f64>>(rows: &[Vec<T>]) -> Vec<f64> {
    let len = rows.iter().map(Vec::len).min().unwrap_or(0);
    (0..len).map(|k| rows.iter().map(|r| r[k].into()).sum::<f64>() / rows.len() as f64).collect()
}

fn curve_of(curves: &Curves, step: usize, plane: usize) -> Curve {
    let mean = column_means(&curves.curves);
    let x = (0..mean.len()).map(|s| format!("{:.3}", ((s * step).min(plane)) as f64 / plane as f64)).collect();
    Curve { x, mean }
}

fn randomisation_curve(r: &Randomisation) -> Curve {
    Curve { x: r.layers.clone(), mean: column_means(&transpose(&r.similarity)) }
}

fn transpose(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = rows.first().map_or(0, Vec::len);
    (0..n).map(|i| rows.iter().map(|r| r[i]).collect()).collect()
}

/// The maps of `method` for the images, cached in `maps/`.
fn maps_of(
    model: &dyn Classifier,
    method: Estimator,
    args: &MetricsArgs,
    x: &Tensor,
    targets: &[u32],
) -> Result<Tensor> {
    let path = dir(&args.out).join("maps").join(format!("{}.safetensors", method.file_id()));
    if path.exists() {
        let loaded = candle_core::safetensors::load_buffer(&fsutil::read(&path)?, &Device::Cpu)
            .with_context(|| format!("reading cached maps {}", path.display()))?;
        return loaded.get("maps").cloned().with_context(|| format!("{} has no maps tensor", path.display()));
    }
    let e = explanation(method, &args.params, 128, args.ensemble, 0);
    let pb = ui::bar(targets.len() as u64, format!("maps {}", e.label()));
    let maps = e.run(model, x, targets, &mut |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let bytes = safetensors::serialize([("maps", maps.clone())], None).map_err(|e| anyhow::anyhow!("{e}"))?;
    fsutil::write_atomic(&path, &bytes)?;
    Ok(maps)
}

pub fn run(args: MetricsArgs) -> Result<()> {
    let (ck, explained) = checkpoint_explained(&args.checkpoint, &args.params)?;
    let spec = ck.spec;
    let kind = spec.dataset;
    let model = ck.model()?;
    let test = datasets::load(kind, &args.data_dir)?.test;
    let indices = parse_indices(&args.indices, test.len())?;
    let images = test.select(&indices)?;
    let (x, y) = images.batch(&(0..images.len()).collect::<Vec<_>>(), kind, &Device::Cpu)?;
    let targets: Vec<u32> = y.to_vec1()?;
    let shape = x.dims4()?;
    let (_, c, h, w) = shape;
    let plane = h * w;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let c_ = &args.config;
    if c_.curve_steps == 0 || c_.samples == 0 || c_.smprt_samples == 0 {
        bail!("--curve-steps, --samples and --smprt-samples must be at least 1");
    }
    let fc_subset = if c_.fc_subset == 0 { plane / 16 } else { c_.fc_subset };
    let out_dir = dir(&args.out);
    let settings = Settings {
        explained,
        indices: indices.clone(),
        config: args.config.clone(),
        ensemble: args.ensemble.recorded(&args.methods),
    };
    check_settings(&out_dir.join("settings.json"), &settings)?;
    let units: Vec<(Estimator, Metric)> =
        args.methods.iter().flat_map(|&m| args.metrics.iter().map(move |&k| (m, k))).collect();
    let mine = args.shard.select(&units);
    let todo: Vec<(Estimator, Metric)> = mine
        .into_iter()
        .filter(|(m, k)| !out_dir.join(k.id()).join(format!("{}.json", m.file_id())).exists())
        .collect();
    ui::note(format!(
        "metrics: {} units ({} methods × {} metrics) on {} images, {} to run here",
        units.len(),
        args.methods.len(),
        args.metrics.len(),
        indices.len(),
        todo.len()
    ));
    let overall = ui::bar(todo.len() as u64, "metrics");
    let mut cached: Option<(Estimator, Vec<f32>)> = None;
    for (method, metric) in todo {
        let started = Instant::now();
        if cached.as_ref().is_none_or(|(m, _)| *m != method) {
            let maps = overall.suspend(|| maps_of(model.as_ref(), method, &args, &x, &targets))?;
            cached = Some((method, maps.flatten_all()?.to_vec1()?));
        }
        let maps = &cached.as_ref().expect("maps of this method").1;
        let batch = Batch::new(&xs, shape, &targets, maps).with_context(|| format!("the maps of {method}"))?;
        let e = explanation(method, &args.params, 128, args.ensemble, 0);
        let mut explain = |m: &dyn Classifier, xv: &[f32], t: &[u32]| -> whitebox_core::Result<Vec<f32>> {
            let xt = Tensor::from_slice(xv, (t.len(), c, h, w), &Device::Cpu)?;
            Ok(e.run(m, &xt, t, &mut |_| {})?.flatten_all()?.to_vec1::<f32>()?)
        };
        let probability = Scorer::new(model.as_ref());
        let logit = Scorer::new(model.as_ref()).with_score(Score::Logit);
        let mut curves = BTreeMap::new();
        let pb = ui::spinner(format!("{} {}", metric.id(), e.label()));
        let per_image: Vec<f64> = match metric {
            Metric::Road => {
                let config = RoadConfig {
                    fractions: c_.road_fractions.clone(),
                    noise: 0.01,
                    ranking: Ranking::Signed,
                    seed: c_.seed,
                };
                let r = road(&probability, &batch, &config)?;
                let x: Vec<String> = c_.road_fractions.iter().map(|f| format!("{f:.2}")).collect();
                curves.insert("morf".into(), Curve { x: x.clone(), mean: column_means(&r.morf) });
                curves.insert("lerf".into(), Curve { x, mean: column_means(&r.lerf) });
                r.morf
                    .iter()
                    .zip(&r.lerf)
                    .map(|(m, l)| {
                        l.iter().zip(m).map(|(l, m)| (*l as f64 - *m as f64) / 2.0).sum::<f64>() / m.len() as f64
                    })
                    .collect()
            }
            Metric::Insertion | Metric::Deletion => {
                let config = CausalConfig::with_steps(plane, c_.curve_steps);
                let which = if metric == Metric::Insertion { Causal::Insertion } else { Causal::Deletion };
                let r = causal_curves(&probability, &batch, which, &config)?;
                curves.insert(metric.id().into(), curve_of(&r, config.step, plane));
                r.areas
            }
            Metric::PixelFlipping => {
                let config = PixelFlipping { step: plane.div_ceil(c_.curve_steps), ..PixelFlipping::default() };
                let r = pixel_flipping(&probability, &batch, &config)?;
                curves.insert(metric.id().into(), curve_of(&r, config.step, plane));
                r.areas
            }
            Metric::FaithfulnessCorrelation => {
                let config = FaithfulnessCorrelation {
                    runs: c_.fc_runs,
                    subset: fc_subset,
                    baseline: Baseline::Min,
                    seed: c_.seed,
                };
                let subsets = config.subsets(batch.len(), plane)?;
                faithfulness_correlation(&logit, &batch, &config, &subsets)?
            }
            Metric::Infidelity => {
                let config = Infidelity { samples: c_.samples, seed: c_.seed, ..Infidelity::default() };
                let p = config.perturbations(batch.len(), batch.image_len())?;
                infidelity(&logit, &batch, &config, &p)?
            }
            Metric::SensitivityMax => {
                let config = SensitivityMax { samples: c_.samples, seed: c_.seed, ..SensitivityMax::default() };
                let p = config.perturbations(batch.len(), batch.image_len())?;
                let m = model.as_ref();
                sensitivity_max(&batch, &mut |xv: &[f32], t: &[u32]| explain(m, xv, t), config.samples, &p)?
            }
            Metric::Mprt => {
                let fresh = fresh_checkpoint(spec, c_.seed)?;
                let r = mprt(&ck, &fresh, Order::TopDown, &batch, Similarity::Spearman, &mut explain)?;
                curves.insert("similarity".into(), randomisation_curve(&r));
                r.similarity.last().cloned().unwrap_or_default()
            }
            Metric::Smprt => {
                let fresh = fresh_checkpoint(spec, c_.seed)?;
                let noise =
                    standard_normal(&[(c_.smprt_samples - 1) * xs.len()], c_.seed, &Device::Cpu)?.to_vec1::<f32>()?;
                let mut smooth = smoothed(&mut explain, c_.smprt_noise as f32, &noise, batch.image_len());
                let denoised = smooth(model.as_ref(), &xs, &targets)?;
                let smooth_batch = Batch::new(&xs, shape, &targets, &denoised)?;
                let r = mprt(&ck, &fresh, Order::BottomUp, &smooth_batch, Similarity::Spearman, &mut smooth)?;
                curves.insert("similarity".into(), randomisation_curve(&r));
                r.similarity.last().cloned().unwrap_or_default()
            }
            Metric::Emprt => efficient_mprt(&ck, &fresh_checkpoint(spec, c_.seed)?, &batch, &mut explain)?,
            Metric::RandomLogit => {
                let others = other_classes(&targets, kind.num_classes(), c_.seed);
                random_logit(model.as_ref(), &batch, &others, Similarity::Ssim, &mut explain)?
            }
        };
        pb.finish_and_clear();
        let (mean, std) = mean_std(&per_image);
        let result = MetricResult {
            metric,
            method,
            label: e.label(),
            summary: metric.summary().into(),
            higher_is_better: metric.higher_is_better(),
            images: indices.clone(),
            per_image,
            mean,
            std,
            curves,
            seconds: started.elapsed().as_secs_f64(),
        };
        let unit_dir = out_dir.join(metric.id());
        let mut csv = String::from("index,target,value\n");
        for ((i, t), v) in result.images.iter().zip(&targets).zip(&result.per_image) {
            csv.push_str(&format!("{i},{t},{v}\n"));
        }
        fsutil::write_atomic(&unit_dir.join(format!("{}.csv", method.file_id())), csv.as_bytes())?;
        write_json(&unit_dir.join(format!("{}.json", method.file_id())), &result)?;
        overall.inc(1);
        overall.suspend(|| {
            ui::note(format!(
                "{:<24} {:<12} {:>9.4} ± {:.4} ({:.1} s)",
                metric.id(),
                result.label,
                result.mean,
                result.std,
                result.seconds
            ))
        });
    }
    overall.finish_and_clear();
    if let Some(sweep) = &args.roar_kar {
        write_json(&out_dir.join("roar-kar.json"), &RetrainLink { dir: sweep.clone() })?;
    }
    let summary = summary(&args.out)?;
    fsutil::write_atomic(&out_dir.join("summary.md"), summary.as_bytes())?;
    Ok(())
}

/// Every finished result in `out`, by metric then method (each base method followed by its ensembles).
pub fn results(out: &Path) -> Result<Vec<MetricResult>> {
    let mut all = Vec::new();
    for metric in Metric::ALL {
        for m in Estimator::all() {
            let path = dir(out).join(metric.id()).join(format!("{}.json", m.file_id()));
            if let Some(r) = read_json::<MetricResult>(&path)? {
                all.push(r);
            }
        }
    }
    Ok(all)
}

/// Where a metrics run's ROAR/KAR sweep lies (`--roar-kar`).
#[derive(Serialize, Deserialize)]
struct RetrainLink {
    dir: PathBuf,
}

/// One column of the summary: a metric, or ROAR/KAR from a sweep; a value per method (`None`: not measured).
struct Column {
    id: String,
    higher_is_better: bool,
    values: Vec<Option<f64>>,
}

/// Each method's mean test accuracy under ROAR and under KAR in a sweep's units (over its thresholds above 0 and
/// its seeds): ROAR's lower is better (removing the pixels a map ranks first hurts most), KAR's higher.
fn retrain_means(units: &[super::remove_retrain::UnitResult], methods: &[Estimator]) -> Vec<Column> {
    use whitebox_core::evaluation::Mode;
    [(Mode::Roar, false), (Mode::Kar, true)]
        .into_iter()
        .map(|(mode, higher_is_better)| Column {
            id: mode.name().to_string(),
            higher_is_better,
            values: methods
                .iter()
                .map(|&m| {
                    let accs: Vec<f64> = units
                        .iter()
                        .filter(|u| u.unit.mode == Some(mode) && u.unit.method == Some(m) && u.unit.threshold > 0.0)
                        .map(|u| u.test_accuracy)
                        .collect();
                    (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64)
                })
                .collect(),
        })
        .filter(|c| c.values.iter().any(Option::is_some))
        .collect()
}

/// A markdown table (method × metric means, each metric's best in bold) and the Spearman rank correlation between
/// every two metrics' orderings of the methods (each metric oriented so that higher is better). With ROAR/KAR
/// units in the sweep `metrics/roar-kar.json` names (else in `out` itself), each method's mean accuracy under ROAR
/// and KAR joins both tables.
pub fn summary(out: &Path) -> Result<String> {
    let all = results(out)?;
    let retrain =
        read_json::<RetrainLink>(&dir(out).join("roar-kar.json"))?.map_or_else(|| out.to_path_buf(), |l| l.dir);
    let metrics: Vec<Metric> = Metric::ALL.into_iter().filter(|k| all.iter().any(|r| r.metric == *k)).collect();
    let mut methods: Vec<Estimator> = Vec::new();
    for r in &all {
        if !methods.contains(&r.method) {
            methods.push(r.method);
        }
    }
    methods.sort_by_key(|m| Estimator::all().iter().position(|a| a == m));
    let mut columns: Vec<Column> = metrics
        .iter()
        .map(|&k| Column {
            id: k.id().to_string(),
            higher_is_better: k.higher_is_better(),
            values: methods
                .iter()
                .map(|&m| all.iter().find(|r| r.method == m && r.metric == k).map(|r| r.mean))
                .collect(),
        })
        .collect();
    columns.extend(retrain_means(&super::remove_retrain::results(&retrain)?, &methods));
    let mut s = String::from("| method |");
    for c in &columns {
        s.push_str(&format!(" {} {} |", c.id, if c.higher_is_better { "↑" } else { "↓" }));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(columns.len()));
    s.push('\n');
    for (i, m) in methods.iter().enumerate() {
        s.push_str(&format!("| {} |", m.label()));
        for c in &columns {
            let best = c.values.iter().flatten().copied().filter(|v| v.is_finite()).fold(None, |b: Option<f64>, v| {
                Some(match b {
                    None => v,
                    Some(b) if c.higher_is_better => b.max(v),
                    Some(b) => b.min(v),
                })
            });
            match c.values[i] {
                Some(v) if Some(v) == best && methods.len() > 1 => s.push_str(&format!(" **{v:.4}** |")),
                Some(v) => s.push_str(&format!(" {v:.4} |")),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    let undefined: Vec<String> = all
        .iter()
        .filter_map(|r| {
            let n = r.per_image.iter().filter(|v| !v.is_finite()).count();
            (n > 0).then(|| format!("{} {} ({n} of {})", r.metric.id(), r.label, r.per_image.len()))
        })
        .collect();
    if !undefined.is_empty() {
        s.push_str(&format!(
            "\nUndefined for some images (a constant map has no correlation; means are over the rest): {}.\n",
            undefined.join(", ")
        ));
    }
    let complete: Vec<&Column> =
        columns.iter().filter(|c| c.values.iter().all(|v| v.is_some_and(f64::is_finite))).collect();
    if complete.len() >= 2 && methods.len() >= 3 {
        s.push_str("\nRank agreement between metrics (Spearman ρ over the methods, each metric oriented higher = better):\n\n| |");
        for c in &complete {
            s.push_str(&format!(" {} |", c.id));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(complete.len()));
        s.push('\n');
        let oriented = |c: &Column| -> Vec<f64> {
            let sign = if c.higher_is_better { 1.0 } else { -1.0 };
            c.values.iter().map(|v| v.unwrap_or(f64::NAN) * sign).collect()
        };
        for a in &complete {
            s.push_str(&format!("| {} |", a.id));
            for b in &complete {
                s.push_str(&format!(" {:.2} |", spearman(&oriented(a), &oriented(b))));
            }
            s.push('\n');
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_numbers_survive_a_round_trip() {
        let r = MetricResult {
            metric: Metric::FaithfulnessCorrelation,
            method: Estimator::parse("gc").unwrap(),
            label: "GC".into(),
            summary: String::new(),
            higher_is_better: true,
            images: vec![0, 1],
            per_image: vec![0.5, f64::NAN],
            mean: 0.5,
            std: f64::NAN,
            curves: BTreeMap::from([("x".to_string(), Curve { x: vec!["0".into()], mean: vec![f64::NAN] })]),
            seconds: 1.0,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("[0.5,null]"), "{text}");
        let back: MetricResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back.per_image[0], 0.5);
        assert!(back.per_image[1].is_nan() && back.std.is_nan() && back.curves["x"].mean[0].is_nan());
        assert_eq!(mean_std(&r.per_image).0, 0.5);
    }

    /// ROAR's and KAR's column: each method's mean accuracy over its units above threshold 0 (every seed), by hand.
    #[test]
    fn retrain_columns_average_a_methods_units() {
        use super::super::remove_retrain::{Unit, UnitResult};
        use whitebox_core::evaluation::Mode;
        let vbp = Estimator::parse("vbp").unwrap();
        let gb = Estimator::parse("gb").unwrap();
        let unit = |mode: Option<Mode>, threshold: f64, seed: u64, acc: f64| UnitResult {
            unit: Unit { mode, method: mode.map(|_| vbp), threshold, seed },
            test_accuracy: acc,
            test_images: 10,
            train_images: 10,
            epochs: vec![],
            seconds: 0.0,
            shard: "0/1".into(),
            seed_variant: false,
        };
        let units = [
            unit(None, 0.0, 1, 0.95),
            unit(Some(Mode::Roar), 0.0, 1, 0.99),
            unit(Some(Mode::Roar), 0.5, 1, 0.8),
            unit(Some(Mode::Roar), 0.9, 1, 0.6),
            unit(Some(Mode::Roar), 0.5, 2, 0.7),
            unit(Some(Mode::Kar), 0.1, 1, 0.5),
        ];
        let cols = retrain_means(&units, &[vbp, gb]);
        assert_eq!(cols.len(), 2);
        assert_eq!((cols[0].id.as_str(), cols[0].higher_is_better), ("roar", false));
        assert!((cols[0].values[0].unwrap() - 0.7).abs() < 1e-12 && cols[0].values[1].is_none());
        assert_eq!((cols[1].id.as_str(), cols[1].higher_is_better), ("kar", true));
        assert_eq!(cols[1].values, vec![Some(0.5), None]);
        // A sweep without KAR units gives no KAR column.
        assert_eq!(retrain_means(&units[..5], &[vbp]).len(), 1);
    }
}
