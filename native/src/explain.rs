//! `whitebox attribute` and `whitebox coherence`: attribution maps for test images, as raw tensors, PNG files and
//! the seed's coherence figures.

use crate::{fsutil, inspect::load_checkpoint, ui};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use whitebox_core::attribution::registry::Display;
use whitebox_core::attribution::{self as attr, Attribution, Explanation, Method, Score, Settings};
use whitebox_core::data::{parse_indices, DatasetKind, ImageSet};
use whitebox_core::engine::EngineModel;
use whitebox_core::models::Classifier;
use whitebox_core::render::{self, Aggregation, Canvas, Colormap};

/// The rows of one image: input, heat map, overlay.
fn image_png(input: &[f32], map: &[f32], kind: DatasetKind, title: &str, colormap: Colormap) -> Result<Vec<u8>> {
    let side = kind.side();
    let scale = 6;
    let cell = side * scale;
    let values = render::normalize(map, kind.channels(), Aggregation::MaxAbs, 99.0)?;
    let image = render::denormalize_rgb(input, kind);
    let mut canvas = Canvas::new(3 * cell + 4 * 8, cell + 28, [255, 255, 255]);
    canvas.text(title, 8, 6, 2, [0, 0, 0]);
    let y = 24;
    canvas.blit(&image, side, side, 8, y, scale);
    canvas.blit(&render::heat_rgb(&values, colormap), side, side, 16 + cell, y, scale);
    canvas.blit(&render::overlay(&image, &values, colormap, 0.8), side, side, 24 + 2 * cell, y, scale);
    Ok(canvas.encode_png()?)
}

pub struct AttributeArgs {
    pub checkpoint: PathBuf,
    pub dataset: Option<DatasetKind>,
    pub data_dir: PathBuf,
    pub indices: String,
    pub class: Option<u32>,
    pub explanation: Explanation,
    pub raw: Option<PathBuf>,
    /// With `raw`: a perturbation method's draws too.
    pub draws: bool,
    pub png: Option<PathBuf>,
    pub colormap: Colormap,
    /// Compute the gradients on this GPU (wgpu).
    pub gpu: Option<Arc<whitebox_core::gpu::Gpu>>,
}

/// The GPU of `--backend` and `--adapter`: `None` for the CPU; an error for `--adapter` without `--backend wgpu`
/// or when no adapter matches.
pub fn open_gpu(backend: &str, adapter: Option<&str>) -> Result<Option<Arc<whitebox_core::gpu::Gpu>>> {
    use whitebox_core::gpu::{block_on, Gpu};
    match (backend, adapter) {
        ("wgpu", adapter) => {
            let gpu = block_on(Gpu::with_adapter(adapter))?;
            ui::note(format!("GPU: {} ({})", gpu.name, gpu.backend));
            Ok(Some(Arc::new(gpu)))
        }
        (_, Some(_)) => bail!("--adapter chooses a GPU: give --backend wgpu too"),
        _ => Ok(None),
    }
}

/// `model` with its logits and gradients computed on `gpu`: by the fused plan (SimpleCNN, CAM, CBAM), else by the
/// network graph (RAN, WARN).
pub fn with_gpu(model: Box<dyn Classifier>, gpu: Arc<whitebox_core::gpu::Gpu>) -> Result<Box<dyn Classifier>> {
    use whitebox_core::engine::{plan_of, Engine, GraphEngine};
    use whitebox_core::gpu::{GpuGraph, GpuPlan};
    let Some(cpu) = model.engine() else {
        bail!("{} has no evaluation engine (weights being trained?)", model.spec().arch);
    };
    let engine: Arc<dyn Engine> = if let Some(plan) = plan_of(cpu) {
        Arc::new(GpuPlan::new(gpu, plan)?)
    } else if let Some(g) = cpu.as_any().downcast_ref::<GraphEngine>() {
        let (graph, values) = g.parts();
        Arc::new(GpuGraph::new(gpu, graph, values)?)
    } else {
        bail!("{} has no engine the GPU can run", model.spec().arch);
    };
    Ok(Box::new(EngineModel { model: Arc::from(model), engine }))
}

pub fn attribute(args: AttributeArgs, device: &Device) -> Result<()> {
    let ck = load_checkpoint(&args.checkpoint, device)?;
    if let Some(d) = args.dataset.filter(|d| *d != ck.spec.dataset) {
        bail!("{} is a {} model, not a {d} one", args.checkpoint.display(), ck.spec.dataset);
    }
    if args.raw.is_none() && args.png.is_none() {
        bail!("nothing to write: give --raw FILE.safetensors and/or --png DIR");
    }
    let kind = ck.spec.dataset;
    let model = match &args.gpu {
        Some(gpu) => with_gpu(ck.model()?, gpu.clone())?,
        None => ck.model()?,
    };
    let test = crate::datasets::load(kind, &args.data_dir)?.test;
    let indices = parse_indices(&args.indices, test.len())?;
    let (x, _) = test.batch(&indices, kind, device)?;
    let targets = match args.class {
        Some(c) if c as usize >= kind.num_classes() => bail!("--class {c} is outside 0..{}", kind.num_classes()),
        Some(c) => vec![c; indices.len()],
        None => attr::predict(model.as_ref(), &x)?,
    };
    let label = args.explanation.label();
    let pb = ui::bar(indices.len() as u64, label.clone());
    let maps = args.explanation.run(model.as_ref(), &x, &targets, &mut |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    if let Some(path) = &args.raw {
        let mut tensors: HashMap<String, Tensor> = HashMap::from([
            ("attributions".to_string(), maps.clone()),
            ("inputs".to_string(), x.clone()),
            ("targets".to_string(), Tensor::new(targets.as_slice(), device)?),
            (
                "indices".to_string(),
                Tensor::new(indices.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), device)?,
            ),
        ]);
        if args.draws {
            let e = &args.explanation;
            let method = e.method.build(&e.settings, model.as_ref())?;
            let Some(perturbation) = method.perturbation() else {
                bail!("--draws: {} draws nothing (it is not a perturbation method)", e.method.label());
            };
            let (_, c, h, w) = x.dims4()?;
            for (k, &i) in indices.iter().enumerate() {
                let image = x.get(k)?.flatten_all()?.to_vec1::<f32>()?;
                for (name, values, shape) in perturbation.design(&image, (c, h, w))?.draws() {
                    tensors.insert(format!("draws/{name}/{i}"), Tensor::from_vec(values, shape, device)?);
                }
            }
        }
        let bytes = safetensors_bytes(&tensors, &label)?;
        fsutil::write_atomic(path, &bytes)?;
        ui::note(format!("wrote {} ({} maps)", path.display(), indices.len()));
    }
    if let Some(dir) = &args.png {
        let xs = x.flatten_from(1)?.to_vec2::<f32>()?;
        let ms = maps.flatten_from(1)?.to_vec2::<f32>()?;
        for (k, &i) in indices.iter().enumerate() {
            let title = format!("#{i} {label} class {}", targets[k]);
            let png = image_png(&xs[k], &ms[k], kind, &title, args.colormap)?;
            fsutil::write_atomic(&dir.join(format!("{i:05}-{}.png", label.to_lowercase())), &png)?;
        }
        ui::note(format!("wrote {} PNG files to {}", indices.len(), dir.display()));
    }
    Ok(())
}

fn safetensors_bytes(tensors: &HashMap<String, Tensor>, method: &str) -> Result<Vec<u8>> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(k, _)| k.as_str());
    let info = HashMap::from([("method".to_string(), method.to_string())]);
    Ok(safetensors::serialize(sorted, Some(info))?)
}

/// The first test image of each class, in class order.
fn one_per_class(test: &ImageSet, classes: usize) -> Result<Vec<usize>> {
    (0..classes as u8)
        .map(|c| test.labels.iter().position(|&l| l == c).with_context(|| format!("no test image of class {c}")))
        .collect()
}

/// A column of a figure: its label, one flattened map per row (class), and how those maps are shown.
struct Column {
    label: String,
    maps: Vec<Vec<f32>>,
    channels: usize,
    /// CAM-like maps (the models' own attention maps too) are min–max scaled; attributions by |a| percentile.
    display: Display,
}

impl Column {
    fn new(label: impl Into<String>, maps: &Tensor, display: Display) -> Result<Self> {
        Ok(Column {
            label: label.into(),
            channels: maps.dim(1)?,
            maps: maps.flatten_from(1)?.to_vec2::<f32>()?,
            display,
        })
    }
}

/// One model's part of the coherence figures.
struct ModelFigure {
    title: String,
    methods: Vec<Column>,
    /// ConvOutput at every `features[k]` (the seed's per-layer figure).
    layers: Vec<Column>,
    /// Grad-CAM at each named layer (blocks, stages, groups).
    layers_gc: Vec<Column>,
    attention: Vec<Column>,
    /// One image: a row per method, a column per ensemble (none, SG, SG-SQ, SG-VAR).
    ensembles: Vec<Column>,
}

/// The ensemble figure's samples and noise level (the seed's notebooks: n = 50, σ = 0.15 of the range).
const ENSEMBLE_N: usize = 50;
const ENSEMBLE_NOISE: f64 = 0.15;

/// The seed's coherence figure (one test image per class × every method, for each model side by side), the seed's
/// per-layer figure (ConvOutput — the channel mean of the feature maps — at every `features[k]`, and for RAN and
/// WARN at every named tap: the seed's "saliency maps of RAN by layers"), the same with Grad-CAM at each named layer
/// (blocks, stages, groups: `<out>-layers-gc.png`), and, for models with attention maps of their own (RAN's soft
/// masks, WARN's heads), the attention figure; and the ensemble figure (`<out>-ensembles.png`): the first test
/// image, a row per method, a column per ensemble (none, SmoothGrad, SmoothGrad², VarGrad), each model beside the
/// other.
pub fn coherence(
    checkpoints: &[PathBuf],
    out: &Path,
    layers_out: Option<&Path>,
    data_dir: &Path,
    device: &Device,
) -> Result<()> {
    let scale = 3;
    let mut figures: Vec<ModelFigure> = Vec::new();
    let mut kind = None;
    let mut inputs = Vec::new();
    for path in checkpoints {
        let ck = load_checkpoint(path, device)?;
        if *kind.get_or_insert(ck.spec.dataset) != ck.spec.dataset {
            bail!("all checkpoints of one figure must be for the same data set");
        }
        let model = ck.model()?;
        let test = crate::datasets::load(ck.spec.dataset, data_dir)?.test;
        let idx = one_per_class(&test, ck.spec.dataset.num_classes())?;
        let (x, y) = test.batch(&idx, ck.spec.dataset, device)?;
        let targets = y.to_vec1::<u32>()?;
        inputs = x.flatten_from(1)?.to_vec2::<f32>()?;
        // The seed's seven, and CAM for models with a CAM head.
        let mut methods = Method::seed_methods();
        if Method::CAM.applies_to(model.as_ref()) {
            methods.push(Method::CAM);
        }
        let settings = Settings::default();
        let taps = model.tap_names();
        let units = methods.len() + taps.len() + model.layer_names().len() + Method::seed_methods().len();
        let pb = ui::bar(units as u64, format!("{}", ck.spec.arch));
        let mut columns = Vec::new();
        for m in methods {
            let maps =
                attr::method(m, &settings, model.as_ref())?.attribute(model.as_ref(), &x, &targets, Score::Logit)?;
            columns.push(Column::new(m.label(), &maps, m.descriptor().display)?);
            pb.inc(1);
        }
        let mut layers = Vec::new();
        for (layer, name) in taps.iter().enumerate() {
            let maps = attr::ConvOutput { layer }.attribute(model.as_ref(), &x, &targets, Score::Logit)?;
            // "f8 conv": the seed's features[k] index and the layer's kind (or its block, for RAN and WARN).
            let kind = name.rsplit([' ', '.']).next().unwrap_or(name);
            layers.push(Column::new(format!("f{layer} {kind}"), &maps, Display::AbsMax)?);
            pb.inc(1);
        }
        let mut layers_gc = Vec::new();
        for (layer, name) in model.layer_names() {
            let maps = attr::GradCam { layer }.attribute(model.as_ref(), &x, &targets, Score::Logit)?;
            layers_gc.push(Column::new(name, &maps, Display::AbsMax)?);
            pb.inc(1);
        }
        // The ensemble figure: the first image, every method plain and in each ensemble.
        let (x0, t0) = (x.narrow(0, 0, 1)?, &targets[..1]);
        let mut ensembles: Vec<Column> = std::iter::once("none")
            .chain(attr::Ensemble::ALL.iter().map(|e| e.label()))
            .map(|label| Column { label: label.into(), maps: Vec::new(), channels: 0, display: Display::AbsMax })
            .collect();
        for m in Method::seed_methods() {
            for (col, ensemble) in ensembles.iter_mut().zip(std::iter::once(None).chain(attr::Ensemble::ALL.map(Some)))
            {
                let explanation = Explanation {
                    method: m,
                    ensemble,
                    samples: ENSEMBLE_N,
                    noise_level: ENSEMBLE_NOISE,
                    settings: settings.clone(),
                    score: Score::Logit,
                };
                let map = explanation.run(model.as_ref(), &x0, t0, &mut |_| {})?;
                col.channels = map.dim(1)?;
                col.maps.push(map.flatten_all()?.to_vec1::<f32>()?);
            }
            pb.inc(1);
        }
        let side = ck.spec.dataset.side();
        let mut attention = Vec::new();
        for (name, map) in model.attention_maps(&x)? {
            let map = attr::resize(&map.unsqueeze(1)?, side, side, attr::Interpolation::Bilinear)?;
            attention.push(Column::new(name, &map, Display::MinMax)?);
        }
        pb.finish_and_clear();
        figures.push(ModelFigure {
            title: ck.spec.arch.title().to_string(),
            methods: columns,
            layers,
            layers_gc,
            attention,
            ensembles,
        });
    }
    let kind = kind.context("no checkpoint given")?;
    let classes: Vec<String> = kind.class_names().iter().map(|n| n.to_string()).collect();
    let method_rows: Vec<String> = Method::seed_methods().iter().map(|m| m.label().to_string()).collect();
    let first = vec![inputs[0].clone(); method_rows.len()];
    // A row per label (and its input image), each model's columns side by side.
    let grid = |rows: &[String], inputs: &[Vec<f32>], pick: &dyn Fn(&ModelFigure) -> &Vec<Column>| -> Result<Vec<u8>> {
        let side = kind.side();
        let cell = side * scale + 4;
        let label_w = 9 * 8;
        let block_w = |cols: usize| (cols + 1) * cell + 16;
        let width = label_w + figures.iter().map(|f| block_w(pick(f).len())).sum::<usize>();
        let height = 40 + rows.len() * cell;
        let mut canvas = Canvas::new(width, height, [255, 255, 255]);
        for (r, name) in rows.iter().enumerate() {
            let short: String = name.chars().take(9).collect();
            canvas.text(&short, 0, 40 + r * cell + cell / 2 - 4, 1, [0, 0, 0]);
        }
        let mut x0 = label_w;
        for f in &figures {
            let cols = pick(f);
            canvas.text(&f.title, x0, 4, 1, [0, 0, 0]);
            canvas.text("Input", x0, 22, 1, [80, 80, 80]);
            for (c, col) in cols.iter().enumerate() {
                let label: String = col.label.chars().take(cell / 8 - 1).collect();
                canvas.text(&label, x0 + (c + 1) * cell, 22, 1, [80, 80, 80]);
            }
            for (r, input) in inputs.iter().enumerate().take(rows.len()) {
                let y = 40 + r * cell;
                canvas.blit(&render::denormalize_rgb(input, kind), side, side, x0, y, scale);
                for (c, col) in cols.iter().enumerate() {
                    let v = render::scale_for_display(&col.maps[r], col.channels, col.display)?;
                    canvas.blit(&render::heat_rgb(&v, Colormap::Hot), side, side, x0 + (c + 1) * cell, y, scale);
                }
            }
            x0 += block_w(cols.len());
        }
        Ok(canvas.encode_png()?)
    };
    let draw = |pick: &dyn Fn(&ModelFigure) -> &Vec<Column>| grid(&classes, &inputs, pick);
    fsutil::write_atomic(out, &draw(&|f| &f.methods)?)?;
    let layers_path = layers_out.map(Path::to_path_buf).unwrap_or_else(|| sibling(out, "layers"));
    fsutil::write_atomic(&layers_path, &draw(&|f| &f.layers)?)?;
    let layers_gc_path = sibling(&layers_path, "gc");
    fsutil::write_atomic(&layers_gc_path, &draw(&|f| &f.layers_gc)?)?;
    println!("{}", out.display());
    println!("{}", layers_path.display());
    println!("{}", layers_gc_path.display());
    let ensembles_path = sibling(out, "ensembles");
    fsutil::write_atomic(&ensembles_path, &grid(&method_rows, &first, &|f| &f.ensembles)?)?;
    println!("{}", ensembles_path.display());
    if figures.iter().any(|f| !f.attention.is_empty()) {
        let path = sibling(out, "attention");
        fsutil::write_atomic(&path, &draw(&|f| &f.attention)?)?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `dir/name-<suffix>.png` beside `dir/name.png`.
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "coherence".into());
    out.with_file_name(format!("{stem}-{suffix}.png"))
}
