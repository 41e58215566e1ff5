//! `whitebox report DIR`: merges the finished units of a directory (from any number of workers) into the seed's
//! figures (ROAR and KAR accuracy against the fraction of pixels removed; Selectivity score and accuracy against the
//! step) and a markdown table, with the seed's published numbers beside ours (dashed in the figures, in parentheses
//! in the tables). The seed's numbers come from its logs (`assets/seed_results.json`, written by
//! `tests/reference/seed_results.py`).

use super::remove_retrain::{self, UnitResult};
use super::selectivity;
use crate::chart::{figure, Chart, Series};
use crate::fsutil;
use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use whitebox_core::attribution::{Estimator, Method};
use whitebox_core::evaluation::Mode;

const SEED_RESULTS: &str = include_str!("../../assets/seed_results.json");

#[derive(Deserialize)]
struct SeedResults {
    roar_kar: Vec<SeedRoarKar>,
    selectivity: Vec<SeedSelectivity>,
}

#[derive(Deserialize)]
struct SeedRoarKar {
    dataset: String,
    model: String,
    method: Method,
    mode: Mode,
    threshold: f64,
    test_accuracy: f64,
}

#[derive(Deserialize)]
struct SeedSelectivity {
    dataset: String,
    model: String,
    method: Method,
    accuracy: Vec<f64>,
    mean_score: Vec<f64>,
}

fn seed_results() -> Result<SeedResults> {
    Ok(serde_json::from_str(SEED_RESULTS)?)
}

/// A curve's colour: its estimator's place among those the report shows (each base method followed by its
/// ensembles, as `Estimator::all` orders them), so that every curve of a figure differs.
fn color(shown: &[Estimator], m: Estimator) -> usize {
    shown.iter().position(|&x| x == m).unwrap_or(shown.len())
}

/// The seed published base methods only: its numbers stand beside ours for those.
fn seed_method(m: Estimator) -> Option<Method> {
    m.ensemble.is_none().then_some(m.method)
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Mean (and std over seeds) test accuracy per mode, method and threshold; the baseline sits at threshold 0 of
/// every curve.
type Curves = BTreeMap<(Mode, String), BTreeMap<String, (f64, Vec<f64>)>>;

fn curves(units: &[UnitResult]) -> Curves {
    let mut out: Curves = BTreeMap::new();
    let baseline: Vec<f64> = units.iter().filter(|u| u.unit.mode.is_none()).map(|u| u.test_accuracy).collect();
    for u in units {
        if let (Some(mode), Some(method)) = (u.unit.mode, u.unit.method) {
            let per = out.entry((mode, method.id())).or_default();
            per.entry(format!("{:.2}", u.unit.threshold)).or_insert((u.unit.threshold, vec![])).1.push(u.test_accuracy);
            if !baseline.is_empty() {
                per.entry("0.00".into()).or_insert((0.0, baseline.clone()));
            }
        }
    }
    out
}

/// Writes `roar-kar.svg`, `selectivity.svg` and `report.md` (whatever the directory has results for) into `to`
/// (default `DIR/report`); returns the files written.
pub fn write(dir: &Path, to: Option<&Path>) -> Result<Vec<PathBuf>> {
    let to = to.map(Path::to_path_buf).unwrap_or_else(|| dir.join("report"));
    let seed = seed_results()?;
    let units = remove_retrain::results(dir)?;
    let sel = selectivity::results(dir)?;
    let which = remove_retrain::dataset_of(dir)?;
    let sel_settings: Option<serde_json::Value> = super::read_json(&selectivity::dir(dir).join("settings.json"))?;
    let mut md = format!("# Evaluation report for `{}`\n\n", dir.display());
    let mut written = vec![];
    if !units.is_empty() {
        let (arch, dataset) = which.clone().map(|(a, d)| (a, d.name().to_string())).unwrap_or_default();
        let curves = curves(&units);
        let shown: Vec<Estimator> =
            Estimator::all().into_iter().filter(|m| curves.keys().any(|(_, id)| *id == m.id())).collect();
        let mut charts = vec![];
        for mode in [Mode::Roar, Mode::Kar] {
            let mut series = vec![];
            let mut table = String::new();
            let thresholds: Vec<String> = {
                let mut t: Vec<(f64, String)> = curves
                    .iter()
                    .filter(|((m, _), _)| *m == mode)
                    .flat_map(|(_, c)| c.iter().map(|(k, v)| (v.0, k.clone())))
                    .collect();
                t.sort_by(|a, b| a.0.total_cmp(&b.0));
                t.dedup_by(|a, b| a.1 == b.1);
                t.into_iter().map(|x| x.1).collect()
            };
            if thresholds.is_empty() {
                continue;
            }
            let _ = writeln!(
                table,
                "## {} — test accuracy after retraining, by fraction of pixels removed (seed's in parentheses)\n",
                mode.name().to_uppercase()
            );
            let _ = writeln!(table, "| method | {} |", thresholds.join(" | "));
            let _ = writeln!(table, "|---|{}", "---:|".repeat(thresholds.len()));
            for &m in &shown {
                let Some(curve) = curves.get(&(mode, m.id())) else { continue };
                let points: Vec<(f64, f64)> = curve.values().map(|(t, accs)| (*t, mean_std(accs).0)).collect();
                series.push(Series { name: m.label(), points, color: color(&shown, m), dashed: false });
                let theirs: Vec<&SeedRoarKar> = seed
                    .roar_kar
                    .iter()
                    .filter(|s| {
                        s.dataset == dataset && s.model == arch && Some(s.method) == seed_method(m) && s.mode == mode
                    })
                    .collect();
                if !theirs.is_empty() {
                    let mut pts: Vec<(f64, f64)> = theirs.iter().map(|s| (s.threshold, s.test_accuracy)).collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    series.push(Series {
                        name: format!("{} (seed)", m.label()),
                        points: pts,
                        color: color(&shown, m),
                        dashed: true,
                    });
                }
                let cells: Vec<String> = thresholds
                    .iter()
                    .map(|t| match curve.get(t) {
                        Some((tv, accs)) => {
                            let (mean, std) = mean_std(accs);
                            let mut cell =
                                if accs.len() > 1 { format!("{mean:.4} ± {std:.4}") } else { format!("{mean:.4}") };
                            if let Some(s) = theirs.iter().find(|s| (s.threshold - tv).abs() < 1e-6) {
                                cell.push_str(&format!(" ({:.4})", s.test_accuracy));
                            }
                            cell
                        }
                        None => "".into(),
                    })
                    .collect();
                let _ = writeln!(table, "| {} | {} |", m.label(), cells.join(" | "));
            }
            md.push_str(&table);
            md.push('\n');
            let what = match mode {
                Mode::Roar => "ROAR: most relevant pixels removed",
                Mode::Kar => "KAR: least relevant pixels removed",
            };
            charts.push(Chart {
                title: format!("{what} ({dataset}, {arch})"),
                x_label: "fraction of pixels removed".into(),
                y_label: "test accuracy after retraining".into(),
                series,
            });
        }
        let path = to.join("roar-kar.svg");
        fsutil::write_atomic(&path, figure(&charts, 2).as_bytes())?;
        written.push(path);
        let seconds: f64 = units.iter().map(|u| u.seconds).sum();
        let _ = writeln!(
            md,
            "{} units, {:.1} CPU-hours of work in all; figure: `roar-kar.svg`.\n",
            units.len(),
            seconds / 3600.0
        );
    }
    if !sel.is_empty() {
        let (arch, dataset) = sel_settings
            .as_ref()
            .map(|s| {
                (
                    s["arch"].as_str().unwrap_or_default().to_string(),
                    s["dataset"].as_str().unwrap_or_default().to_string(),
                )
            })
            .unwrap_or_default();
        let shown: Vec<Estimator> = sel.iter().map(|r| r.method).collect();
        let mut score = vec![];
        let mut accuracy = vec![];
        let _ = writeln!(
            md,
            "## Selectivity ({dataset}, {arch}) — area under the curve (lower is better; seed's in parentheses)\n"
        );
        let _ = writeln!(md, "| method | images | steps × pixels | accuracy: start → end | accuracy AUC | score AUC | time (s) |\n|---|---:|---:|---:|---:|---:|---:|");
        for r in &sel {
            let pts =
                |v: &[f64]| v.iter().enumerate().map(|(i, &y)| ((i * r.pixels_per_step) as f64, y)).collect::<Vec<_>>();
            score.push(Series {
                name: r.label.clone(),
                points: pts(&r.mean_score),
                color: color(&shown, r.method),
                dashed: false,
            });
            accuracy.push(Series {
                name: r.label.clone(),
                points: pts(&r.accuracy),
                color: color(&shown, r.method),
                dashed: false,
            });
            let theirs = seed
                .selectivity
                .iter()
                .find(|s| s.dataset == dataset && s.model == arch && Some(s.method) == seed_method(r.method));
            let (seed_acc, seed_score) = match theirs {
                Some(s) => {
                    let p = |v: &[f64]| v.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect::<Vec<_>>();
                    score.push(Series {
                        name: format!("{} (seed)", r.label),
                        points: p(&s.mean_score),
                        color: color(&shown, r.method),
                        dashed: true,
                    });
                    accuracy.push(Series {
                        name: format!("{} (seed)", r.label),
                        points: p(&s.accuracy),
                        color: color(&shown, r.method),
                        dashed: true,
                    });
                    let auc = whitebox_core::evaluation::area_under_curve;
                    (format!(" ({:.4})", auc(&s.accuracy)), format!(" ({:.4})", auc(&s.mean_score)))
                }
                None => (String::new(), String::new()),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} × {} | {:.3} → {:.3} | {:.4}{seed_acc} | {:.4}{seed_score} | {:.0} |",
                r.label,
                r.images,
                r.steps,
                r.pixels_per_step,
                r.accuracy[0],
                r.accuracy.last().unwrap_or(&0.0),
                r.accuracy_auc,
                r.score_auc,
                r.seconds
            );
        }
        let charts = [
            Chart {
                title: format!("Selectivity: score of the true class ({dataset})"),
                x_label: "pixels removed".into(),
                y_label: "mean softmax score".into(),
                series: score,
            },
            Chart {
                title: format!("Selectivity: accuracy ({dataset})"),
                x_label: "pixels removed".into(),
                y_label: "accuracy".into(),
                series: accuracy,
            },
        ];
        let path = to.join("selectivity.svg");
        fsutil::write_atomic(&path, figure(&charts, 2).as_bytes())?;
        written.push(path);
        md.push_str("\nFigure: `selectivity.svg`.\n");
    }
    let metric_results = super::metrics::results(dir)?;
    if !metric_results.is_empty() {
        let _ = writeln!(md, "\n## Metrics without retraining — mean over the images (↑/↓: which way is better)\n");
        md.push_str(&super::metrics::summary(dir)?);
        let path = to.join("metrics.svg");
        fsutil::write_atomic(&path, figure(&metric_charts(&metric_results), 3).as_bytes())?;
        written.push(path);
        md.push_str("\nFigure: `metrics.svg` (the mean curves behind the numbers).\n");
    }
    if written.is_empty() {
        anyhow::bail!("{} holds no finished evaluation units yet", dir.display());
    }
    let path = to.join("report.md");
    fsutil::write_atomic(&path, md.as_bytes())?;
    written.push(path);
    Ok(written)
}

/// One panel per curve the metrics keep (insertion, deletion, pixel flipping, ROAD's MoRF and LeRF, the MPRT and
/// sMPRT similarity by randomisation step), a line per method.
fn metric_charts(results: &[super::metrics::MetricResult]) -> Vec<Chart> {
    let shown: Vec<Estimator> =
        Estimator::all().into_iter().filter(|m| results.iter().any(|r| r.method == *m)).collect();
    let mut panels: Vec<(whitebox_core::metrics::Metric, String)> = Vec::new();
    for r in results {
        for name in r.curves.keys() {
            if !panels.contains(&(r.metric, name.clone())) {
                panels.push((r.metric, name.clone()));
            }
        }
    }
    panels
        .into_iter()
        .map(|(metric, name)| {
            let mut x_label = "fraction of pixels changed".to_string();
            let series = results
                .iter()
                .filter(|r| r.metric == metric)
                .filter_map(|r| {
                    let c = r.curves.get(&name)?;
                    let points =
                        c.x.iter()
                            .zip(&c.mean)
                            .enumerate()
                            .map(|(i, (x, y))| match x.parse::<f64>() {
                                Ok(v) => (v, *y),
                                Err(_) => {
                                    x_label = format!("layers re-initialised ({} … {})", c.x[0], c.x[c.x.len() - 1]);
                                    ((i + 1) as f64, *y)
                                }
                            })
                            .collect();
                    Some(Series { name: r.label.clone(), points, color: color(&shown, r.method), dashed: false })
                })
                .collect();
            let (title, y_label) = match (metric, name.as_str()) {
                (_, "morf") => ("ROAD, most relevant first".to_string(), "class probability"),
                (_, "lerf") => ("ROAD, least relevant first".to_string(), "class probability"),
                (whitebox_core::metrics::Metric::Mprt | whitebox_core::metrics::Metric::Smprt, _) => {
                    (format!("{} (top-down)", metric.id().to_uppercase()), "Spearman ρ to the original map")
                }
                _ => (metric.id().replace('-', " "), "class probability"),
            };
            let title = if metric == whitebox_core::metrics::Metric::Smprt {
                "sMPRT (bottom-up, denoised)".into()
            } else {
                title
            };
            Chart { title, x_label, y_label: y_label.into(), series }
        })
        .collect()
}
