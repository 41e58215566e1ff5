//! core's modules depend one way: a module may use only modules of lower layers (test code aside). The layers, from
//! the bottom: the data formats and kernels; the network description with the contracts every layer shares
//! (`graph`: `Score`, `Engine`, `Gradients`) and the candle building blocks; the models; the engines; checkpoints;
//! the attribution methods; the GPU engine and the evaluations; training (on the CPU or the GPU), the metrics and
//! rendering.

use std::path::{Path, PathBuf};

const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("ops", 0),
    ("data", 0),
    ("testing", 0),
    ("graph", 1),
    ("nn", 1),
    ("models", 2),
    ("engine", 3),
    ("params", 4),
    ("attribution", 4),
    ("gpu", 5),
    ("train", 6),
    ("evaluation", 5),
    ("metrics", 6),
    ("render", 6),
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::NAME` paths in `code`, and `use crate::{A, B}` groups.
fn used_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|p| p.trim().split("::").next().unwrap_or("").to_string()));
        } else {
            out.push(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

#[test]
fn modules_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || rel.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
        let Some(own) = layer(&top) else { panic!("{}: module {top} has no layer in this test", rel.display()) };
        let text = std::fs::read_to_string(&file).unwrap();
        // Test code (a file's trailing `#[cfg(test)]` items) may use anything.
        let code = text.split("\n#[cfg(test)]\n").next().unwrap();
        for used in used_modules(code) {
            if let Some(l) = layer(&used) {
                checked += 1;
                if used != top && l >= own {
                    wrong.push(format!("{} ({top}, layer {own}) uses crate::{used} (layer {l})", rel.display()));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} uses found: is the scan broken?");
    assert!(wrong.is_empty(), "upward or sideways dependencies:\n{}", wrong.join("\n"));
}
