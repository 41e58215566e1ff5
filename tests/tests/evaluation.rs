//! Selectivity, ROAR and KAR through the command line: a reduced sweep end to end, kill-and-resume at random moments
//! (results equal an uninterrupted run, no partial result file is ever visible), and shards run as separate
//! processes covering every unit exactly once.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use whitebox_e2e::*;

const CHECKPOINT: &str = "weights/mnist/simple-cnn.safetensors";

/// A small sweep: 600 training images (480 train, 120 validation), 200 test images, two epochs, two thresholds; VBP,
/// random, and VBP in a SmoothGrad² ensemble of 4 samples.
fn sweep_args<'a>(mode: &'a str, out: &'a str, data: &'a str, checkpoint: &'a str) -> Vec<&'a str> {
    vec![
        mode,
        "--checkpoint",
        checkpoint,
        "--methods",
        "vbp,random,sg-sq:vbp",
        "--ensemble-n",
        "4",
        "--thresholds",
        "0.3,0.9",
        "--limit",
        "600",
        "--test-limit",
        "200",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--data-dir",
        data,
        "--out",
        out,
        "--quiet",
    ]
}

fn checkpoint() -> String {
    repo_root().join(CHECKPOINT).to_string_lossy().into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not complete JSON: {e}", path.display()))
}

/// Every visible (not dot-prefixed) file under `units/` and `selectivity/` is a complete result.
fn results(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for sub in ["units", "selectivity"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            out.insert(format!("{sub}/{name}"), json(&e.path()));
        }
    }
    out
}

/// What must not depend on interruptions: accuracies and the per-epoch losses of each unit.
fn outcome(v: &Value) -> Value {
    match v.get("unit") {
        Some(_) => serde_json::json!({
            "unit": v["unit"],
            "test_accuracy": v["test_accuracy"],
            "losses": v["epochs"].as_array().unwrap().iter().map(|e| e["train_loss"].clone()).collect::<Vec<_>>(),
        }),
        None => match v.get("accuracy") {
            Some(_) => serde_json::json!({ "accuracy": v["accuracy"], "mean_score": v["mean_score"] }),
            None => v.clone(), // settings
        },
    }
}

#[test]
fn reduced_roar_kar_and_selectivity_sweep_end_to_end() {
    let dir = TempDir::new("sweep");
    let out = dir.path().to_string_lossy().into_owned();
    let data = shared_data().to_string_lossy().into_owned();
    let ck = checkpoint();
    for mode in ["roar", "kar"] {
        let o = whitebox(&sweep_args(mode, &out, &data, &ck));
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
    }
    let units = results(dir.path());
    // One baseline shared by both modes, and 3 methods × 2 thresholds per mode.
    assert_eq!(units.len(), 13, "{:?}", units.keys());
    assert_eq!(units["units/roar-sg-sq+vbp-t0.30-s223.json"]["unit"]["method"], "sg-sq:vbp");
    let acc = |id: &str| units[&format!("units/{id}.json")]["test_accuracy"].as_f64().unwrap();
    let baseline = acc("baseline-s223");
    assert!(baseline > 0.5, "two epochs on 480 images should learn something: {baseline}");
    // Removing 90 % of the pixels at random must hurt; keeping the 10 % VBP ranks highest must hurt less than
    // keeping a random 10 %.
    assert!(acc("roar-random-t0.90-s223") < baseline - 0.1, "{units:?}");
    for (k, v) in &units {
        assert_eq!(v["test_images"], 200, "{k}");
        assert_eq!(v["train_images"], 480, "{k}");
        assert_eq!(v["epochs"].as_array().unwrap().len(), 2, "{k}");
    }
    // A rerun finds everything done and changes nothing.
    let again = whitebox(&sweep_args("roar", &out, &data, &ck));
    assert!(again.status.success());
    assert_eq!(results(dir.path()), units);
    // Other settings in the same directory are refused with a message.
    let mut other = sweep_args("roar", &out, &data, &ck);
    let epochs = other.iter().position(|a| *a == "--epochs").unwrap() + 1;
    other[epochs] = "3";
    let refused = whitebox(&other);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("other settings"), "{}", stderr(&refused));

    let sel = whitebox(&[
        "selectivity",
        "--checkpoint",
        &ck,
        "--methods",
        "vbp,random",
        "--steps",
        "4",
        "--pixels-per-step",
        "3",
        "--sample",
        "0.005",
        "--data-dir",
        &data,
        "--out",
        &out,
        "--quiet",
    ]);
    assert!(sel.status.success(), "{}", stderr(&sel));
    let all = results(dir.path());
    let (vbp, random) = (&all["selectivity/vbp.json"], &all["selectivity/random.json"]);
    assert_eq!(vbp["accuracy"].as_array().unwrap().len(), 5);
    // Before any removal both methods measure the same 50 untouched images.
    assert_eq!(vbp["accuracy"][0], random["accuracy"][0]);
    assert_eq!(vbp["mean_score"][0], random["mean_score"][0]);
    assert_eq!(vbp["images"], 50);
    let csv = std::fs::read_to_string(dir.path().join("selectivity/vbp.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6);
    assert!(csv.lines().nth(5).unwrap().starts_with("4,12,"), "{csv}");

    let report = whitebox(&["report", &out]);
    assert!(report.status.success(), "{}", stderr(&report));
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    for needle in ["## ROAR", "## KAR", "## Selectivity", "| VBP |", "| Random |", "| SG-SQ-VBP |"] {
        assert!(md.contains(needle), "report lacks {needle}:\n{md}");
    }
    // The unit count covers the curves shown: every unit here, only the baseline and VBP's with `--methods vbp`.
    assert!(md.contains(&format!("{} units,", units.len())), "{md}");
    let only = dir.path().join("only-vbp");
    let filtered = whitebox(&["report", &out, "--methods", "vbp", "--out", only.to_str().unwrap()]);
    assert!(filtered.status.success(), "{}", stderr(&filtered));
    let kept = ["units/baseline", "units/roar-vbp-", "units/kar-vbp-"];
    let kept = units.keys().filter(|k| kept.iter().any(|p| k.starts_with(p))).count();
    let md = std::fs::read_to_string(only.join("report.md")).unwrap();
    assert!(kept == 5 && md.contains(&format!("{kept} units,")), "{kept} units kept:\n{md}");
    let svg = std::fs::read_to_string(dir.path().join("report/roar-kar.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("VBP (seed)") && svg.contains("<polyline"),
        "the seed's curves are drawn beside ours"
    );
    assert!(std::fs::read_to_string(dir.path().join("report/selectivity.svg")).unwrap().contains("Random"));
}

/// A small xorshift generator: the kill moments differ from run to run (seeded by the clock) and are printed.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// Runs `args` uninterrupted into `straight`, then into `killed` with `kills` SIGKILLs at random moments within
/// the first half of the uninterrupted run's duration (each restart resumes, so later kills land later in the
/// work) before letting it finish; after every kill each visible result file must be
/// complete. Returns how many kills hit a running process.
fn straight_and_killed(
    args: impl Fn(&str) -> Vec<String>,
    straight: &Path,
    killed: &Path,
    kills: usize,
    moments: &mut Moments,
) -> usize {
    let run = |dir: &Path| {
        let a = args(&dir.to_string_lossy());
        let o = Command::new(whitebox_bin()).args(&a).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let t0 = Instant::now();
    run(straight);
    let duration = t0.elapsed().as_millis() as u64;
    let mut hits = 0;
    for k in 0..kills {
        let a = args(&killed.to_string_lossy());
        let mut child =
            Command::new(whitebox_bin()).args(&a).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Early enough to land while the process still runs even when this run goes faster than the straight one.
        let wait = moments.next_ms(duration / 8, duration.max(8) / 2);
        let started = Instant::now();
        let mut finished = false;
        while started.elapsed() < Duration::from_millis(wait) {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        hits += !finished as usize;
        eprintln!("{}: kill {k} after {wait} of {duration} ms: {} results so far", a[0], results(killed).len());
    }
    run(killed);
    hits
}

#[test]
fn killed_sweeps_resume_to_the_uninterrupted_results() {
    let data = shared_data().to_string_lossy().into_owned();
    let ck = checkpoint();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill moments seeded with {seed}");
    let mut moments = Moments(seed);
    let straight = TempDir::new("straight");
    let killed = TempDir::new("killed");
    let owned = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
    let mut hits = 0;
    for mode in ["roar", "kar"] {
        hits += straight_and_killed(
            |out| owned(sweep_args(mode, out, &data, &ck)),
            straight.path(),
            killed.path(),
            3,
            &mut moments,
        );
    }
    let selectivity = |out: &str| {
        owned(vec![
            "selectivity",
            "--checkpoint",
            &ck,
            "--methods",
            "vbp,sg:gb",
            "--ensemble-n",
            "3",
            "--steps",
            "30",
            "--sample",
            "0.02",
            "--data-dir",
            &data,
            "--out",
            out,
            "--quiet",
        ])
    };
    hits += straight_and_killed(selectivity, straight.path(), killed.path(), 3, &mut moments);
    assert!(hits >= 3, "only {hits} kills hit a running sweep");

    let (a, b) = (results(straight.path()), results(killed.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, v) in &a {
        assert_eq!(outcome(v), outcome(&b[name]), "{name} differs after kills and resumes");
    }
    assert_eq!(a.len(), 13 + 2 + 1, "units, selectivity results and settings");
    assert!(a.contains_key("selectivity/sg+gb.json") && a.contains_key("units/kar-sg-sq+vbp-t0.90-s223.json"));
}

#[test]
fn two_shards_in_separate_processes_cover_every_unit_once() {
    let dir = TempDir::new("shards");
    let out = dir.path().to_string_lossy().into_owned();
    let data = shared_data().to_string_lossy().into_owned();
    let ck = checkpoint();
    let args = sweep_args("roar", &out, &data, &ck);
    // Shard 0 as a Kubernetes Indexed Job pod, shard 1 as a Slurm array task; both at once, one directory.
    let mut k8s = Command::new(whitebox_bin());
    k8s.args(&args).args(["--shard-count", "2"]).env("JOB_COMPLETION_INDEX", "0");
    let mut slurm = Command::new(whitebox_bin());
    slurm
        .args(&args)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .env("SLURM_ARRAY_TASK_MIN", "0");
    let children: Vec<_> = [k8s, slurm].iter_mut().map(|c| c.stderr(Stdio::piped()).spawn().unwrap()).collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let units = results(dir.path());
    // The sweep's order: baseline, then vbp, random and sg-sq:vbp, each at 0.3 and 0.9.
    let order = [
        "baseline-s223",
        "roar-vbp-t0.30-s223",
        "roar-vbp-t0.90-s223",
        "roar-random-t0.30-s223",
        "roar-random-t0.90-s223",
        "roar-sg-sq+vbp-t0.30-s223",
        "roar-sg-sq+vbp-t0.90-s223",
    ];
    assert_eq!(units.len(), order.len(), "{:?}", units.keys());
    for (i, id) in order.iter().enumerate() {
        let v = &units[&format!("units/{id}.json")];
        assert_eq!(v["shard"], format!("{}/2", i % 2), "{id} ran in the wrong shard");
    }
    // A worker without an index but with a count is a usage mistake, said clearly.
    let o = whitebox(&[&args[..], &["--shard-count", "2"]].concat());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("without a shard index"), "{}", stderr(&o));
}

/// One spelling of ensembles everywhere: `attribute --method sg-sq:gb` is `--method gb --ensemble sg-sq`; malformed
/// names are refused with a message saying what is wrong, before any work.
#[test]
fn ensemble_spelling_is_shared_and_checked() {
    let data = shared_data().to_string_lossy().into_owned();
    let ck = checkpoint();
    let dir = TempDir::new("spelling");
    let attribute = |extra: &[&str], name: &str| {
        let raw = dir.path().join(name).to_string_lossy().into_owned();
        let mut args =
            vec!["attribute", "--quiet", "--checkpoint", &ck, "--indices", "0..2", "--n", "3", "--data-dir", &data];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--raw", &raw]);
        let out = whitebox(&args);
        (out.status.code(), stderr(&out), std::fs::read(&raw).ok())
    };
    let (code, err, joined) = attribute(&["--method", "sg-sq:gb"], "a.safetensors");
    assert_eq!(code, Some(0), "{err}");
    let (code, err, split) = attribute(&["--method", "gb", "--ensemble", "sg-sq"], "b.safetensors");
    assert_eq!(code, Some(0), "{err}");
    assert!(joined.is_some() && joined == split, "the two spellings give the same maps");
    let (code, err, _) = attribute(&["--method", "sg:gb", "--ensemble", "sg-var"], "c.safetensors");
    assert!(code != Some(0) && err.contains("two ensembles"), "{err}");
    let (code, err, _) = attribute(&["--method", "sg:"], "d.safetensors");
    assert!(code != Some(0) && err.contains("names no method"), "{err}");
    for (methods, says) in
        [("vbp,sg:", "names no method"), ("smooth:gb", "unknown ensemble 'smooth'"), ("sg:sg:gb", "ENSEMBLE:METHOD")]
    {
        let out_dir = dir.path().join("sweep").to_string_lossy().into_owned();
        let mut args = sweep_args("roar", &out_dir, &data, &ck);
        let m = args.iter().position(|a| *a == "--methods").unwrap() + 1;
        args[m] = methods;
        let out = whitebox(&args);
        assert_eq!(out.status.code(), Some(1), "{methods}");
        assert!(stderr(&out).contains(says), "{methods}: {}", stderr(&out));
        assert!(!dir.path().join("sweep/units").exists(), "{methods}: nothing ran");
    }
    let mut args = sweep_args("kar", "unused", &data, &ck);
    let n = args.iter().position(|a| *a == "--ensemble-n").unwrap() + 1;
    args[n] = "0";
    assert!(stderr(&whitebox(&args)).contains("--ensemble-n must be within 1..=1000"));
}

/// `whitebox metrics`: one result per (metric, method), a rerun changes nothing, two shards in separate processes
/// cover the units of a whole run once, the summary ranks the methods, and bad names are refused before any work.
#[test]
fn metrics_units_resume_shard_and_summarise() {
    let data = shared_data().to_string_lossy().into_owned();
    let ck = checkpoint();
    let args = |out: &str| -> Vec<String> {
        [
            "metrics",
            "--checkpoint",
            &ck,
            "--methods",
            "vbp,random,sg:vbp",
            "--ensemble-n",
            "3",
            "--metrics",
            "road,deletion,faithfulness-correlation,mprt,smprt",
            "--road-fractions",
            "0.3,0.7",
            "--fc-runs",
            "10",
            "--smprt-samples",
            "3",
            "--indices",
            "0..6",
            "--data-dir",
            &data,
            "--out",
            out,
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let units = |dir: &Path| -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for metric in ["road", "deletion", "faithfulness-correlation", "mprt", "smprt"] {
            for e in std::fs::read_dir(dir.join("metrics").join(metric)).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") {
                    let mut v = json(&e.path());
                    v.as_object_mut().unwrap().remove("seconds");
                    out.insert(format!("{metric}/{name}"), v);
                }
            }
        }
        out
    };
    let whole = TempDir::new("metrics");
    let w = whole.path().to_string_lossy().into_owned();
    let a = args(&w);
    let o = whitebox(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let first = units(whole.path());
    assert_eq!(first.len(), 15, "{:?}", first.keys());
    // The summary table on standard output and in summary.md, VBP before its ensemble.
    let table = stdout(&o);
    assert!(table.contains("| VBP |") && table.contains("| SG-VBP |") && table.contains("Rank agreement"), "{table}");
    assert!(table.starts_with(&std::fs::read_to_string(whole.path().join("metrics/summary.md")).unwrap()), "{table}");
    // The report draws the metrics' curves and repeats the table.
    let svg = std::fs::read_to_string(whole.path().join("report/metrics.svg")).unwrap();
    assert!(svg.contains("ROAD, most relevant first") && svg.contains("MPRT (top-down)") && svg.contains("SG-VBP"));
    assert!(std::fs::read_to_string(whole.path().join("report/report.md")).unwrap().contains("| SG-VBP |"));
    // The sanity check: a random map ignores the model (similarity 1), the gradient does not.
    let mprt = |m: &str| first[&format!("mprt/{m}.json")]["mean"].as_f64().unwrap();
    assert!((mprt("random") - 1.0).abs() < 1e-9 && mprt("vbp") < 0.5, "{} {}", mprt("random"), mprt("vbp"));
    let fc = &first["faithfulness-correlation/vbp.json"];
    assert_eq!(fc["per_image"].as_array().unwrap().len(), 6);
    assert_eq!(fc["images"], serde_json::json!([0, 1, 2, 3, 4, 5]));
    // A rerun finds every unit done; with `--roar-kar` the committed MNIST sweep's mean accuracy per method joins
    // the summary (VBP's: the mean of its ROAR units, read here from their files), and the report keeps it.
    let sweep = whitebox_e2e::repo_root().join("results/mnist-simple-cnn");
    let mut with_sweep = a.clone();
    with_sweep.extend(["--roar-kar".to_string(), sweep.to_string_lossy().into_owned()]);
    let again = whitebox(&with_sweep.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(units(whole.path()), first);
    let accs: Vec<f64> = std::fs::read_dir(sweep.join("units"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("roar-vbp-"))
        .map(|e| json(&e.path())["test_accuracy"].as_f64().unwrap())
        .collect();
    assert!(!accs.is_empty());
    let roar_vbp = format!("{:.4}", accs.iter().sum::<f64>() / accs.len() as f64);
    let table = stdout(&again);
    assert!(table.contains(" roar ↓ | kar ↑ |"), "{table}");
    let vbp_row = table.lines().find(|l| l.starts_with("| VBP |")).unwrap();
    assert!(vbp_row.contains(&roar_vbp) && table.contains("| SG-VBP |"), "{roar_vbp}: {table}");
    let report = std::fs::read_to_string(whole.path().join("report/report.md")).unwrap();
    assert!(report.contains(" roar ↓ | kar ↑ |"), "{report}");
    // Two shards at once in separate processes: together the same results.
    let sharded = TempDir::new("metrics-shards");
    let s = sharded.path().to_string_lossy().into_owned();
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(whitebox_bin())
                .args(args(&s))
                .args(["--shard", &format!("{i}/2")])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(units(sharded.path()), first);
    // Bad names, checked before any work.
    for (flag, value, says) in [
        ("--metrics", "road,roadd", "unknown metric 'roadd'"),
        ("--methods", "vbp,sg:", "names no method"),
        ("--road-fractions", "0.3,x", "'x' is not a number"),
    ] {
        let mut bad = args(&w);
        let k = bad.iter().position(|v| v == flag).unwrap() + 1;
        bad[k] = value.to_string();
        let o = whitebox(&bad.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(1), "{flag} {value}");
        assert!(stderr(&o).contains(says), "{flag} {value}: {}", stderr(&o));
    }
}

/// `roar --backend wgpu` (maps from the GPU engine, retraining on the GPU trainer; lavapipe in CI) against the same
/// reduced sweep on the CPU: the same units, the maps equal image by image (a pooling near-tie may route one image's
/// gradient elsewhere: at most 1 % of the images), the first epoch's mean training loss within 1e-3, and every
/// test accuracy within 0.02 (4 of the 200 test images). Not 1e-3: retraining amplifies float32 rounding — the same CPU
/// sweep with the learning rate one float32 step higher (0.05 → 0.050000004) moved a unit by 0.005 (one image), and
/// the GPU's by at most 0.01 (measured 2026-12-03, two epochs). The test prints the one-step distance it measures.
#[test]
fn roar_on_the_gpu_equals_the_cpu() {
    let dir = TempDir::new("roar-gpu");
    let data = shared_data().to_string_lossy().into_owned();
    let ck = checkpoint();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name).to_string_lossy().into_owned();
        let mut args = vec!["roar", "--checkpoint", &ck, "--methods", "vbp,random", "--thresholds", "0.3,0.9"];
        args.extend(["--limit", "600", "--test-limit", "200", "--epochs", "1", "--data-dir", &data, "--quiet"]);
        args.extend(["--out", &out]);
        args.extend(extra);
        let o = whitebox(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        results(&dir.path().join(name))
    };
    let cpu = run("cpu", &["--lr", "0.05"]);
    let gpu = run("gpu", &["--lr", "0.05", "--backend", "wgpu"]);
    let nudged = run("nudged", &["--lr", "0.050000004"]);
    assert_eq!(cpu.keys().collect::<Vec<_>>(), gpu.keys().collect::<Vec<_>>());
    assert_eq!(cpu.len(), 5, "baseline and two methods at two thresholds: {:?}", cpu.keys());
    let accuracy = |v: &Value| v["test_accuracy"].as_f64().unwrap();
    let (mut worst, mut reference) = (0f64, 0f64);
    for (id, c) in &cpu {
        let (g, r) = (&gpu[id], &nudged[id]);
        let loss = |v: &Value| v["epochs"][0]["train_loss"].as_f64().unwrap();
        let d = (loss(g) - loss(c)).abs() / loss(c);
        assert!(d < 1e-3, "{id}: first-epoch loss {} on the GPU, {} on the CPU", loss(g), loss(c));
        worst = worst.max((accuracy(g) - accuracy(c)).abs());
        reference = reference.max((accuracy(r) - accuracy(c)).abs());
        assert!(
            (accuracy(g) - accuracy(c)).abs() <= 0.02 + 1e-9,
            "{id}: test accuracy {} on the GPU, {} on the CPU",
            accuracy(g),
            accuracy(c)
        );
    }
    eprintln!(
        "largest accuracy difference: GPU vs CPU {worst:.3}; CPU vs CPU at lr one float32 step higher {reference:.3}"
    );
    for split in ["train-000000-600", "test-000000-200"] {
        let read = |name: &str| {
            let path = dir.path().join(name).join("maps/vbp").join(format!("{split}.safetensors"));
            let loaded = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
            let v = &loaded["relevance"];
            let plane = v.dim(1).unwrap();
            let values: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            (values, plane)
        };
        let ((c, plane), (g, _)) = (read("cpu"), read("gpu"));
        let images = c.len() / plane;
        let differing = (0..images)
            .filter(|&i| {
                let (a, b) = (&c[i * plane..(i + 1) * plane], &g[i * plane..(i + 1) * plane]);
                let scale = a.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
                a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale > 1e-4
            })
            .count();
        assert!(differing * 100 <= images, "{split}: {differing} of {images} VBP maps differ on the GPU");
    }
}

/// `selectivity --backend wgpu` (maps and the removal steps' forward passes on the GPU engine; lavapipe in CI) gives
/// the CPU's curves: every probability within 1e-5.
#[test]
fn selectivity_on_the_gpu_equals_the_cpu() {
    let dir = TempDir::new("selectivity-gpu");
    let data = shared_data().to_string_lossy().into_owned();
    let ck = checkpoint();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name).to_string_lossy().into_owned();
        let mut args = vec!["selectivity", "--checkpoint", &ck, "--methods", "vbp,gc", "--steps", "5"];
        args.extend(["--sample", "0.002", "--data-dir", &data, "--quiet", "--out", &out]);
        args.extend(extra);
        let o = whitebox(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        results(&dir.path().join(name))
    };
    let (cpu, gpu) = (run("cpu", &[]), run("gpu", &["--backend", "wgpu"]));
    assert_eq!(cpu.keys().collect::<Vec<_>>(), gpu.keys().collect::<Vec<_>>());
    let mut compared = 0;
    for (id, c) in &cpu {
        let numbers = |v: &Value| -> Vec<f64> {
            let mut out = Vec::new();
            let mut walk = vec![v.clone()];
            while let Some(v) = walk.pop() {
                match v {
                    Value::Number(n) => out.push(n.as_f64().unwrap()),
                    Value::Array(a) => walk.extend(a),
                    Value::Object(o) => walk.extend(o.into_iter().filter(|(k, _)| k != "seconds").map(|(_, v)| v)),
                    _ => {}
                }
            }
            out
        };
        let (a, b) = (numbers(c), numbers(&gpu[id]));
        assert_eq!(a.len(), b.len(), "{id}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{id}: {x} on the CPU, {y} on the GPU");
        }
        compared += a.len();
    }
    assert!(compared > 20, "too little compared ({compared} numbers)");
}
