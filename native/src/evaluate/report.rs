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
use whitebox_core::models::Arch;

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
type Curves = BTreeMap<(Mode, String), Curve>;

/// One method's test accuracies by threshold (its key, to two decimals): the threshold and the accuracy per seed.
type Curve = BTreeMap<String, (f64, Vec<f64>)>;

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

/// One curve pair of a ROAR/KAR figure: a sweep directory's method.
struct Row {
    label: String,
    arch: String,
    dataset: String,
    method: Estimator,
    curves: BTreeMap<Mode, Curve>,
}

/// A sweep directory's protocol in one line, so that a comparison shows what each curve was trained under.
fn protocol(dir: &Path) -> Result<String> {
    let Some(v) = super::read_json::<serde_json::Value>(&dir.join("sweep.json"))? else { return Ok(String::new()) };
    let c = &v["config"];
    Ok(format!(
        "{} on {}: {} training images, {} test images, {} epochs at lr {} ({}), fill {}, ranking {}{}",
        v["arch"].as_str().unwrap_or_default(),
        v["dataset"].as_str().unwrap_or_default(),
        v["limit"].as_u64().map_or("all".into(), |n| n.to_string()),
        v["test_limit"].as_u64().map_or("all".into(), |n| n.to_string()),
        c["epochs"],
        c["lr"],
        c["schedule"].as_str().unwrap_or_default(),
        v["fill"].as_str().unwrap_or_default(),
        v["ranking"].as_str().unwrap_or_default(),
        if v["seed_variant"].as_bool() == Some(true) { ", the seed's protocol (--seed-variant)" } else { "" },
    ))
}

/// The ROAR/KAR rows of the given sweep directories (only `methods`, if given), in `Estimator::all`'s order per
/// directory; with several directories each label starts with its model's name.
fn rows(dirs: &[PathBuf], methods: Option<&[Estimator]>) -> Result<(Vec<Row>, usize, f64)> {
    let mut rows = vec![];
    let (mut count, mut seconds) = (0, 0.0);
    for dir in dirs {
        let units = remove_retrain::results(dir)?;
        if units.is_empty() {
            if dirs.len() > 1 {
                anyhow::bail!("{} holds no finished ROAR/KAR units to overlay", dir.display());
            }
            continue;
        }
        // The units behind the curves shown: the baselines and the kept methods' units.
        let shown: Vec<_> = units
            .iter()
            .filter(|u| u.unit.method.is_none_or(|m| methods.is_none_or(|keep| keep.contains(&m))))
            .collect();
        count += shown.len();
        seconds += shown.iter().map(|u| u.seconds).sum::<f64>();
        let (arch, dataset) =
            remove_retrain::dataset_of(dir)?.map(|(a, d)| (a, d.name().to_string())).unwrap_or_default();
        let model = Arch::parse(&arch).map(Arch::label).unwrap_or(arch.as_str()).to_string();
        let mut by_method = curves(&units);
        for m in Estimator::all() {
            if methods.is_some_and(|keep| !keep.contains(&m)) {
                continue;
            }
            let mut per_mode = BTreeMap::new();
            for mode in [Mode::Roar, Mode::Kar] {
                if let Some(c) = by_method.remove(&(mode, m.id())) {
                    per_mode.insert(mode, c);
                }
            }
            if !per_mode.is_empty() {
                let label = if dirs.len() > 1 { format!("{model} {}", m.label()) } else { m.label() };
                rows.push(Row { label, arch: arch.clone(), dataset: dataset.clone(), method: m, curves: per_mode });
            }
        }
    }
    Ok((rows, count, seconds))
}

/// Distinct values, in order.
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Writes `roar-kar.svg`, `selectivity.svg` and `report.md` (whatever the directory has results for) into `to`
/// (default `DIR/report`); returns the files written. With several directories (say one ROAR/KAR sweep per model,
/// as the seed's "ROAR/KAR by model" figure), their ROAR/KAR curves are overlaid in one figure and one table, each
/// labelled with its model, and `to` is required; `methods` keeps only those methods' curves.
pub fn write(dirs: &[PathBuf], to: Option<&Path>, methods: Option<&[Estimator]>) -> Result<Vec<PathBuf>> {
    let [dir, ..] = dirs else { anyhow::bail!("no directory to report on") };
    if dirs.len() > 1 && to.is_none() {
        anyhow::bail!("several directories are overlaid into one report: say where it goes with --out");
    }
    let to = to.map(Path::to_path_buf).unwrap_or_else(|| dir.join("report"));
    let seed = seed_results()?;
    let (rows, unit_count, unit_seconds) = rows(dirs, methods)?;
    let sel = if dirs.len() == 1 { selectivity::results(dir)? } else { vec![] };
    let sel_settings: Option<serde_json::Value> = super::read_json(&selectivity::dir(dir).join("settings.json"))?;
    let names: Vec<String> = dirs.iter().map(|d| format!("`{}`", d.display())).collect();
    let mut md = format!("# Evaluation report for {}\n\n", names.join(", "));
    let mut written = vec![];
    if !rows.is_empty() {
        let dataset = distinct(rows.iter().map(|r| r.dataset.clone())).join(" / ");
        let archs = distinct(rows.iter().map(|r| r.arch.clone()));
        if dirs.len() > 1 {
            md.push_str("Sweeps overlaid:\n\n");
            for d in dirs {
                let _ = writeln!(md, "- `{}`: {}", d.display(), protocol(d)?);
            }
            md.push('\n');
        }
        let mut charts = vec![];
        for mode in [Mode::Roar, Mode::Kar] {
            let mut series = vec![];
            let mut table = String::new();
            let thresholds: Vec<String> = {
                let mut t: Vec<(f64, String)> = rows
                    .iter()
                    .filter_map(|r| r.curves.get(&mode))
                    .flat_map(|c| c.iter().map(|(k, v)| (v.0, k.clone())))
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
            for (color, row) in rows.iter().enumerate() {
                let Some(curve) = row.curves.get(&mode) else { continue };
                let points: Vec<(f64, f64)> = curve.values().map(|(t, accs)| (*t, mean_std(accs).0)).collect();
                series.push(Series { name: row.label.clone(), points, color, dashed: false });
                let theirs: Vec<&SeedRoarKar> = seed
                    .roar_kar
                    .iter()
                    .filter(|s| {
                        s.dataset == row.dataset
                            && s.model == row.arch
                            && Some(s.method) == seed_method(row.method)
                            && s.mode == mode
                    })
                    .collect();
                if !theirs.is_empty() {
                    let mut pts: Vec<(f64, f64)> = theirs.iter().map(|s| (s.threshold, s.test_accuracy)).collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    series.push(Series { name: format!("{} (seed)", row.label), points: pts, color, dashed: true });
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
                let _ = writeln!(table, "| {} | {} |", row.label, cells.join(" | "));
            }
            md.push_str(&table);
            md.push('\n');
            let what = match mode {
                Mode::Roar => "ROAR: most relevant pixels removed",
                Mode::Kar => "KAR: least relevant pixels removed",
            };
            charts.push(Chart {
                // Several models: each curve's label names its model, and the title stays short.
                title: match archs.as_slice() {
                    [arch] => format!("{what} ({dataset}, {arch})"),
                    _ => format!("{what} ({dataset})"),
                },
                x_label: "fraction of pixels removed".into(),
                y_label: "test accuracy after retraining".into(),
                series,
            });
        }
        let path = to.join("roar-kar.svg");
        fsutil::write_atomic(&path, figure(&charts, 2).as_bytes())?;
        written.push(path);
        let _ = writeln!(
            md,
            "{unit_count} units, {:.1} CPU-hours of work in all; figure: `roar-kar.svg`.\n",
            unit_seconds / 3600.0
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
    let metric_results = if dirs.len() == 1 { super::metrics::results(dir)? } else { vec![] };
    if !metric_results.is_empty() {
        let _ = writeln!(md, "\n## Metrics without retraining — mean over the images (↑/↓: which way is better)\n");
        md.push_str(&super::metrics::summary(dir)?);
        let path = to.join("metrics.svg");
        fsutil::write_atomic(&path, figure(&metric_charts(&metric_results), 3).as_bytes())?;
        written.push(path);
        md.push_str("\nFigure: `metrics.svg` (the mean curves behind the numbers).\n");
    }
    if written.is_empty() {
        match dirs {
            [_] => anyhow::bail!("{} holds no finished evaluation units yet", dir.display()),
            // Several directories each hold units (rows() refuses an empty one): `methods` kept none of them.
            _ => anyhow::bail!("{}: no ROAR/KAR units of the methods asked for", names.join(", ")),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use remove_retrain::Unit;

    /// A sweep directory with the given units (mode, method, threshold, seed, accuracy), as workers leave it.
    fn sweep(root: &Path, name: &str, arch: &str, units: &[(Option<Mode>, &str, f64, u64, f64)]) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("units")).unwrap();
        let settings = serde_json::json!({
            "arch": arch, "dataset": "mnist", "limit": 4000, "test_limit": 2000, "fill": "mean",
            "ranking": "signed", "seed_variant": false, "config": { "epochs": 3, "lr": 0.05, "schedule": "cosine" },
        });
        std::fs::write(dir.join("sweep.json"), settings.to_string()).unwrap();
        for (k, &(mode, method, threshold, seed, test_accuracy)) in units.iter().enumerate() {
            let method = mode.map(|_| Estimator::parse(method).unwrap());
            let unit = UnitResult {
                unit: Unit { mode, method, threshold, seed },
                test_accuracy,
                test_images: 2000,
                train_images: 3200,
                epochs: vec![],
                seconds: 10.0,
                shard: "0/1".into(),
                seed_variant: false,
            };
            std::fs::write(dir.join(format!("units/{k}.json")), serde_json::to_string(&unit).unwrap()).unwrap();
        }
        dir
    }

    #[test]
    fn several_sweeps_overlay_in_one_figure_labelled_by_model() {
        let root = std::env::temp_dir().join(format!("whitebox-report-{}", std::process::id()));
        let roar = Some(Mode::Roar);
        let cam = sweep(
            &root,
            "cam",
            "cam",
            &[(None, "", 0.0, 223, 0.9), (roar, "cam", 0.5, 223, 0.7), (roar, "cam", 0.5, 224, 0.5)],
        );
        let cbam = sweep(
            &root,
            "cbam",
            "cbam",
            &[(None, "", 0.0, 223, 0.95), (roar, "gc", 0.5, 223, 0.8), (roar, "co", 0.5, 223, 0.3)],
        );
        let both = [cam.clone(), cbam.clone()];
        let err = write(&both, None, None).unwrap_err().to_string();
        assert!(err.contains("--out"), "{err}");
        // A directory without units (a typo, a sweep not run yet) is named, not silently left out.
        let err = write(&[cam.clone(), root.join("nothing")], Some(&root.join("x")), None).unwrap_err().to_string();
        assert!(err.contains("nothing holds no finished ROAR/KAR units"), "{err}");

        let out = root.join("together");
        let keep = [Estimator::parse("cam").unwrap(), Estimator::parse("gc").unwrap()];
        write(&both, Some(&out), Some(&keep)).unwrap();
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        // Mean ± std over the two seeds, the baseline at 0, and the seed's published MNIST CAM value beside it.
        assert!(md.contains("| CAM CAM | 0.9000 | 0.6000 ± 0.1414 (0.5227) |"), "{md}");
        assert!(md.contains("| CBAM GC | 0.9500 | 0.8000 (0.9092) |"), "{md}");
        assert!(!md.contains("CBAM CO"), "--methods keeps only CAM and GC:\n{md}");
        assert!(md.contains("cbam on mnist: 4000 training images, 2000 test images, 3 epochs"), "{md}");
        let svg = std::fs::read_to_string(out.join("roar-kar.svg")).unwrap();
        assert!(svg.contains("CAM CAM (seed)") && svg.contains("CBAM GC (seed)") && svg.contains("(mnist)</text>"));

        // One directory alone keeps the plain method labels and its default place.
        write(std::slice::from_ref(&cam), None, None).unwrap();
        let md = std::fs::read_to_string(cam.join("report/report.md")).unwrap();
        assert!(md.contains("| CAM | 0.9000 | 0.6000 ± 0.1414 (0.5227) |"), "{md}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
