//! `whitebox eval`, `whitebox info` and `whitebox convert`.

use crate::{fsutil, ui};
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use std::path::Path;
use whitebox_core::data::DatasetKind;
use whitebox_core::models::ModelSpec;
use whitebox_core::params::{parameter_count, tensor_shapes, Checkpoint};
use whitebox_core::train::{evaluate, Evaluation};

pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    Ok(Checkpoint::from_bytes(&path.display().to_string(), &fsutil::read(path)?, device)?)
}

/// The seed README's table: one row per model, a column per class, then the total.
pub fn accuracy_table(spec: ModelSpec, eval: &Evaluation) -> Result<String> {
    let names = spec.dataset.class_names();
    let title = match spec.dataset {
        DatasetKind::Mnist => "MNIST",
        DatasetKind::Cifar10 => "CIFAR10",
    };
    let mut header = format!("| {title:<17} | Number of Parameters |");
    let mut rule = "| ----------------- | -------------------- |".to_string();
    let mut row = format!("| {:<17} | {:<20} |", spec.arch.title(), parameter_count(spec)?);
    for (c, name) in names.iter().enumerate() {
        let w = name.len().max(5);
        header += &format!(" {name:<w$} |");
        rule += &format!(" {} |", "-".repeat(w));
        row += &format!(" {:<w$} |", format!("{:.3}", eval.class_accuracy(c)));
    }
    header += " Total |";
    rule += " ----- |";
    row += &format!(" {:.3} |", eval.accuracy());
    Ok(format!("{header}\n{rule}\n{row}"))
}

pub fn eval(
    checkpoint: &Path,
    dataset: Option<DatasetKind>,
    data_dir: &Path,
    limit: Option<usize>,
    gpu: Option<std::sync::Arc<whitebox_core::gpu::Gpu>>,
    device: &Device,
) -> Result<()> {
    let ck = load_checkpoint(checkpoint, device)?;
    if let Some(d) = dataset.filter(|d| *d != ck.spec.dataset) {
        bail!("{} is a {} model; it cannot be evaluated on {d}", checkpoint.display(), ck.spec.dataset);
    }
    let model = match gpu {
        Some(gpu) => crate::explain::with_gpu(ck.model()?, gpu)?,
        None => ck.model()?,
    };
    let test = crate::datasets::load(ck.spec.dataset, data_dir)?.test;
    let n = limit.unwrap_or(test.len()).min(test.len());
    let indices: Vec<usize> = (0..n).collect();
    let pb = ui::bar(n as u64, "evaluating");
    let result = evaluate(model.as_ref(), &test, &indices, 500, device, &mut |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    println!(
        "test accuracy: {:.4} ({}/{}) loss {:.4}",
        result.accuracy(),
        result.correct.iter().sum::<usize>(),
        result.count(),
        result.loss()
    );
    println!();
    println!("{}", accuracy_table(ck.spec, &result)?);
    Ok(())
}

pub fn info(spec: ModelSpec) -> Result<()> {
    println!("model: {} ({}) for {}", spec.arch, spec.arch.title(), spec.dataset);
    println!("parameters: {}", parameter_count(spec)?);
    println!();
    let shapes = tensor_shapes(spec)?;
    let mut layers: Vec<(String, Vec<String>, usize)> = Vec::new();
    for (name, shape) in shapes {
        let (layer, tensor) = name.rsplit_once('.').unwrap_or(("", &name));
        let count = if whitebox_core::nn::is_buffer(&name) { 0 } else { shape.iter().product() };
        let desc = format!("{tensor}{shape:?}");
        match layers.iter_mut().find(|(l, _, _)| l == layer) {
            Some(entry) => {
                entry.1.push(desc);
                entry.2 += count;
            }
            None => layers.push((layer.to_string(), vec![desc], count)),
        }
    }
    let width = layers.iter().map(|(l, _, _)| l.len()).max().unwrap_or(0);
    for (layer, tensors, count) in layers {
        println!("{layer:<width$}  {count:>9}  {}", tensors.join(" "));
    }
    let (_, model) = whitebox_core::params::init_model(spec, 0, &Device::Cpu)?;
    let taps: Vec<String> = model.tap_names().iter().enumerate().map(|(k, name)| format!("{k} {name}")).collect();
    println!();
    println!("layers for --layer: {}", taps.join(", "));
    Ok(())
}

pub fn convert(input: &Path, output: &Path, dtype: DType) -> Result<()> {
    let ck = load_checkpoint(input, &Device::Cpu)?;
    fsutil::write_atomic(output, &ck.to_bytes(dtype)?)?;
    ui::note(format!("wrote {} ({:?})", output.display(), dtype));
    Ok(())
}

/// `whitebox methods`: the registry as a table (id, label, paper, parameters), or as JSON.
pub fn methods(json: bool) -> Result<()> {
    use whitebox_core::attribution::registry::ParamKind;
    use whitebox_core::attribution::Method;
    if json {
        let all: Vec<_> = Method::all().iter().map(|m| m.summary()).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for m in Method::all() {
        let d = m.descriptor();
        println!("{:<10} {:<10} {} — {}", d.id, d.label, d.title, d.paper);
        for p in d.params {
            let range = match &p.kind {
                ParamKind::Count { default, min, max } => format!("{default} ({min}..={max})"),
                ParamKind::Real { default, min, max } => format!("{default} ([{min}, {max}])"),
                ParamKind::Choice { values, default } => format!("{default} ({})", values.join(", ")),
                ParamKind::Layer => "the model's choice".into(),
            };
            println!("{:<10} --{:<16} {}; default {range}", "", p.key, p.help);
        }
    }
    Ok(())
}
