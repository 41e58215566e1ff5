//! The demo page's engine: `whitebox-core` compiled to WebAssembly. The page's web worker (`web/js/worker.js`)
//! loads a model's shipped weights into an [`Engine`], asks it for class probabilities, and explains the digit with
//! a [`Task`] that it advances step by step, so that a newer drawing can replace stale work between steps.
//!
//! When the browser offers WebGPU, [`request_gpu`] gives a [`GpuDevice`] and [`Engine::explain_gpu`] computes the same
//! maps with the GPU engine (`whitebox_core::gpu`), awaiting the GPU without blocking.
//!
//! Everything here is plain Rust as well (errors are strings), so the native tests call the same functions.

use candle_core::{Device, Tensor};
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use whitebox_core::attribution::{Ensemble, Explanation, Job, Method, Params, Score, Settings};
use whitebox_core::data::DatasetKind;
use whitebox_core::gpu::{Gpu, GpuPlan};
use whitebox_core::models::{Arch, Classifier, ModelSpec};
use whitebox_core::params::Checkpoint;
use whitebox_core::render::{self, Colormap};

type Res<T> = std::result::Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A model with its weights, ready to classify and explain.
#[wasm_bindgen]
pub struct Engine {
    model: Arc<dyn Classifier>,
    spec: ModelSpec,
    /// The weights (for the sanity check's re-initialised copies); none for engines built around a model in tests.
    ck: Option<Arc<Checkpoint>>,
    /// The model on the GPU, once [`Engine::use_gpu`] attached one.
    gpu: Option<Arc<GpuPlan>>,
}

/// A GPU adapter and device (WebGPU in the browser).
#[wasm_bindgen]
pub struct GpuDevice {
    gpu: Arc<Gpu>,
}

#[wasm_bindgen]
impl GpuDevice {
    /// The adapter's name ("SwiftShader Device", …).
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.gpu.name.clone()
    }

    /// Whether the adapter runs on the CPU (SwiftShader): there the WebAssembly path is faster.
    #[wasm_bindgen(getter)]
    pub fn software(&self) -> bool {
        self.gpu.software
    }
}

/// Asks for a GPU (in the browser: `navigator.gpu`); fails when there is none.
#[wasm_bindgen(js_name = requestGpu)]
pub async fn request_gpu() -> Res<GpuDevice> {
    Ok(GpuDevice { gpu: Arc::new(Gpu::new().await.map_err(err)?) })
}

#[wasm_bindgen]
impl Engine {
    /// Loads a whitebox checkpoint (safetensors bytes, f16 or f32).
    #[wasm_bindgen(constructor)]
    pub fn new(weights: &[u8]) -> Res<Engine> {
        let ck = Checkpoint::from_bytes("weights", weights, &Device::Cpu).map_err(err)?;
        let model: Arc<dyn Classifier> = Arc::from(ck.model().map_err(err)?);
        Ok(Engine { spec: ck.spec, model, gpu: None, ck: Some(Arc::new(ck)) })
    }

    /// The layers with parameters, from the input up (`features.0`, …, `classifier.2`): the sanity check
    /// re-initialises them from the top down.
    #[wasm_bindgen(getter, js_name = parameterLayers)]
    pub fn parameter_layers(&self) -> Res<Vec<String>> {
        whitebox_core::metrics::mprt::parameter_layers(self.spec).map_err(err)
    }

    /// A copy of this model with its top `layers` parameter layers re-initialised as a fresh model's (seeded), as
    /// MPRT (Adebayo et al. 2018) randomises them: the sanity check's model.
    pub fn randomised(&self, layers: usize, seed: u32) -> Res<Engine> {
        use whitebox_core::metrics::mprt::{fresh_checkpoint, randomised_layers, with_layers_from, Order};
        let ck = self.ck.as_ref().ok_or("this engine has no weights to randomise")?;
        let all = self.parameter_layers()?;
        if layers > all.len() {
            return Err(format!("{} has {} layers with parameters, not {layers}", self.spec.arch, all.len()));
        }
        let chosen = if layers == 0 { vec![] } else { randomised_layers(&all, Order::TopDown, layers - 1) };
        let fresh = fresh_checkpoint(self.spec, seed as u64).map_err(err)?;
        let copy = with_layers_from(ck, &fresh, &chosen).map_err(err)?;
        let model: Arc<dyn Classifier> = Arc::from(copy.model().map_err(err)?);
        Ok(Engine { spec: self.spec, model, gpu: None, ck: Some(Arc::new(copy)) })
    }

    /// The page's live metrics of `map` (the raw map `explain` gave for `pixels` and `target`), in the order of
    /// [`live_metric_names`]: deletion and insertion AUC (RISE; 28 steps), ROAD's MoRF and LeRF probabilities at
    /// 20, 50 and 80 % removed (noise 0.01, seed 0), and infidelity (normalised; 20 Gaussian perturbations of σ 0.2,
    /// seed 0, on the logit).
    #[wasm_bindgen(js_name = liveMetrics)]
    pub fn live_metrics(&self, pixels: &[f32], map: &[f32], target: u32) -> Res<Vec<f64>> {
        use whitebox_core::metrics::infidelity::{infidelity, Infidelity};
        use whitebox_core::metrics::insertion_deletion::{causal_curves, Causal, CausalConfig};
        use whitebox_core::metrics::road::{road, RoadConfig};
        use whitebox_core::metrics::{Batch, Scorer};
        let x: Vec<f32> = self.input(pixels)?.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?;
        let (c, s) = (self.spec.dataset.channels(), self.spec.dataset.side());
        let targets = [target];
        let batch = Batch::new(&x, (1, c, s, s), &targets, map).map_err(err)?;
        let prob = Scorer::new(self.model.as_ref());
        let config = CausalConfig::with_steps(s * s, 28);
        let mut out = Vec::with_capacity(LIVE_METRICS.len());
        for which in [Causal::Deletion, Causal::Insertion] {
            out.push(causal_curves(&prob, &batch, which, &config).map_err(err)?.areas[0]);
        }
        let config = RoadConfig { fractions: vec![0.2, 0.5, 0.8], ..RoadConfig::default() };
        let r = road(&prob, &batch, &config).map_err(err)?;
        out.extend(r.morf[0].iter().chain(&r.lerf[0]).map(|&v| v as f64));
        let config = Infidelity { samples: 20, ..Infidelity::default() };
        let perturbations = config.perturbations(1, x.len()).map_err(err)?;
        let logit = Scorer::new(self.model.as_ref()).with_score(Score::Logit);
        out.push(infidelity(&logit, &batch, &config, &perturbations).map_err(err)?[0]);
        Ok(out)
    }

    /// Uploads the model to `device`; `explainGpu` then computes on it.
    #[wasm_bindgen(js_name = useGpu)]
    pub fn use_gpu(&mut self, device: &GpuDevice) -> Res<()> {
        let plan = self
            .model
            .engine()
            .and_then(whitebox_core::engine::plan_of)
            .ok_or_else(|| format!("{} has no GPU plan", self.spec.arch))?;
        self.gpu = Some(Arc::new(GpuPlan::new(device.gpu.clone(), plan).map_err(err)?));
        Ok(())
    }

    /// Whether a GPU is attached.
    #[wasm_bindgen(getter, js_name = hasGpu)]
    pub fn has_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// [`Engine::explain`] on the GPU, as a promise of the raw map (`C×H×W`).
    #[wasm_bindgen(js_name = explainGpu)]
    pub fn explain_gpu(&self, pixels: &[f32], request: &Request, target: u32) -> Res<js_sys::Promise> {
        let map = self.gpu_map(pixels, request, target)?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let v = map.await.map_err(|e| JsValue::from_str(&e))?;
            Ok(js_sys::Float32Array::from(v.as_slice()).into())
        }))
    }

    #[wasm_bindgen(getter)]
    pub fn arch(&self) -> String {
        self.spec.arch.name().to_string()
    }

    #[wasm_bindgen(getter)]
    pub fn dataset(&self) -> String {
        self.spec.dataset.name().to_string()
    }

    /// Image side (28 for MNIST, 32 for CIFAR-10).
    #[wasm_bindgen(getter)]
    pub fn side(&self) -> usize {
        self.spec.dataset.side()
    }

    #[wasm_bindgen(getter)]
    pub fn channels(&self) -> usize {
        self.spec.dataset.channels()
    }

    #[wasm_bindgen(getter)]
    pub fn classes(&self) -> usize {
        self.spec.dataset.num_classes()
    }

    /// The classes' names as the page labels them (digits for MNIST).
    #[wasm_bindgen(getter, js_name = classNames)]
    pub fn class_names(&self) -> Vec<String> {
        class_labels(self.spec.dataset)
    }

    /// Grad-CAM can look at `features[0..tap_points]`.
    #[wasm_bindgen(getter, js_name = tapPoints)]
    pub fn tap_points(&self) -> usize {
        self.model.tap_points()
    }

    #[wasm_bindgen(getter, js_name = defaultLayer)]
    pub fn default_layer(&self) -> usize {
        self.model.default_gradcam_layer()
    }

    /// Whether the model classifies with a CAM head (so the CAM method applies).
    #[wasm_bindgen(getter, js_name = hasCam)]
    pub fn has_cam(&self) -> bool {
        self.model.cam_head().is_some()
    }

    /// The ids of the methods that can explain this model (CAM only where there is a CAM head).
    #[wasm_bindgen(getter, js_name = applicableMethods)]
    pub fn applicable_methods(&self) -> Vec<String> {
        Method::all().iter().filter(|m| m.applies_to(self.model.as_ref())).map(|m| m.id().to_string()).collect()
    }

    /// Softmax probabilities for one image: `pixels` are `C×H×W` values in [0, 1] (not yet normalised).
    pub fn probabilities(&self, pixels: &[f32]) -> Res<Vec<f32>> {
        let x = self.input(pixels)?;
        let p = whitebox_core::attribution::probabilities(self.model.as_ref(), &x).map_err(err)?;
        p.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)
    }

    /// Starts explaining `pixels` (as for [`Engine::probabilities`]) for class `target`.
    pub fn explain(&self, pixels: &[f32], request: &Request, target: u32) -> Res<Task> {
        let x = self.input(pixels)?;
        let job = request.explanation.job(self.model.clone(), &x, &[target]).map_err(err)?;
        Ok(Task { job: Some(job), map: None })
    }

    fn input(&self, pixels: &[f32]) -> Res<Tensor> {
        normalized(pixels, self.spec.dataset)
    }
}

/// The Rust side of the engine (not exported to JavaScript).
impl Engine {
    /// The wrapper around an already built model (tests).
    #[doc(hidden)]
    pub fn from_model(model: Arc<dyn Classifier>) -> Engine {
        Engine { spec: model.spec(), model, gpu: None, ck: None }
    }

    /// The future behind [`Engine::explain_gpu`] (owning what it needs, so that it outlives the call).
    pub fn gpu_map(
        &self,
        pixels: &[f32],
        request: &Request,
        target: u32,
    ) -> std::result::Result<impl std::future::Future<Output = Res<Vec<f32>>> + 'static, String> {
        let gpu = self.gpu.clone().ok_or("no GPU is attached (call useGpu first)")?;
        let x = self.input(pixels)?;
        let (model, explanation) = (self.model.clone(), request.explanation.clone());
        Ok(async move {
            let map = whitebox_core::gpu::explain(&explanation, model, &gpu, &x, &[target]).await.map_err(err)?;
            map.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)
        })
    }
}

/// `pixels` in [0, 1] → the model's normalised `1×C×H×W` input.
fn normalized(pixels: &[f32], kind: DatasetKind) -> Res<Tensor> {
    let (c, s) = (kind.channels(), kind.side());
    if pixels.len() != c * s * s {
        return Err(format!("{} expects {c}×{s}×{s} = {} pixel values, got {}", kind.name(), c * s * s, pixels.len()));
    }
    if let Some(i) = pixels.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(format!("pixel value {i} is {}, not a number in [0, 1]", pixels[i]));
    }
    let plane = s * s;
    let values: Vec<f32> =
        pixels.iter().enumerate().map(|(i, &v)| (v - kind.mean()[i / plane]) / kind.std()[i / plane]).collect();
    Tensor::from_vec(values, (1, c, s, s), &Device::Cpu).map_err(err)
}

/// What [`Engine::live_metrics`] returns, in order.
const LIVE_METRICS: [&str; 9] = [
    "deletion AUC",
    "insertion AUC",
    "ROAD MoRF 20 %",
    "ROAD MoRF 50 %",
    "ROAD MoRF 80 %",
    "ROAD LeRF 20 %",
    "ROAD LeRF 50 %",
    "ROAD LeRF 80 %",
    "infidelity",
];

/// The names of [`Engine::live_metrics`]'s values.
#[wasm_bindgen(js_name = liveMetricNames)]
pub fn live_metric_names() -> Vec<String> {
    LIVE_METRICS.iter().map(|s| s.to_string()).collect()
}

/// Spearman's rank correlation of two maps of the same length (the sanity check's similarity).
#[wasm_bindgen(js_name = mapSimilarity)]
pub fn map_similarity(a: &[f32], b: &[f32]) -> Res<f64> {
    if a.len() != b.len() || a.is_empty() {
        return Err(format!("maps of {} and {} values cannot be compared", a.len(), b.len()));
    }
    Ok(whitebox_core::metrics::similarity::Similarity::Spearman.of(a, b))
}

/// The page's class labels: MNIST's digits, CIFAR-10's names.
fn class_labels(kind: DatasetKind) -> Vec<String> {
    let names = kind.class_names();
    match kind {
        DatasetKind::Mnist => (0..names.len()).map(|c| c.to_string()).collect(),
        DatasetKind::Cifar10 => names.iter().map(|n| n.to_string()).collect(),
    }
}

/// What to explain: a method, optionally inside an ensemble, with its settings.
#[wasm_bindgen]
pub struct Request {
    explanation: Explanation,
}

#[wasm_bindgen]
impl Request {
    /// `method`: an id of [`method_list`]; `ensemble`: "" (none), sg, sg-sq or sg-var; `params`: a JSON object of
    /// the method's parameter values by key (`{"ig-steps": 20, "layer": 3}`; a key left out takes its default);
    /// `score`: "logit" or "prob".
    #[wasm_bindgen(constructor)]
    pub fn new(method: &str, ensemble: &str, samples: usize, noise: f64, params: &str, score: &str) -> Res<Request> {
        let method = Method::parse(method).map_err(err)?;
        let ensemble = if ensemble.is_empty() { None } else { Some(Ensemble::parse(ensemble).map_err(err)?) };
        let score = match score {
            "logit" | "" => Score::Logit,
            "prob" => Score::Prob,
            other => return Err(format!("unknown score '{other}' (logit or prob)")),
        };
        let params: Params = if params.trim().is_empty() {
            Params::default()
        } else {
            serde_json::from_str(params).map_err(|e| format!("method parameters: {e}"))?
        };
        // Small steps keep the page responsive; one batch of 16 costs about as much per map as larger ones.
        let settings = Settings { params, batch: 16, seed: 0 };
        let explanation = Explanation { method, ensemble, samples, noise_level: noise, settings, score };
        explanation.validate().map_err(err)?;
        Ok(Request { explanation })
    }

    #[wasm_bindgen(getter)]
    pub fn label(&self) -> String {
        self.explanation.label()
    }
}

/// An explanation being computed: call `step()` until it returns true, then read `map()`.
#[wasm_bindgen]
pub struct Task {
    job: Option<Job>,
    map: Option<Vec<f32>>,
}

#[wasm_bindgen]
impl Task {
    /// Runs the next step; true once the map is ready.
    pub fn step(&mut self) -> Res<bool> {
        let Some(job) = self.job.as_mut() else { return Ok(true) };
        if !job.step().map_err(err)? {
            return Ok(false);
        }
        let job = self.job.take().expect("checked above");
        let map = job.finish().map_err(err)?;
        self.map = Some(map.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)?);
        Ok(true)
    }

    /// Fraction done, in [0, 1].
    pub fn progress(&self) -> f64 {
        self.job.as_ref().map_or(1.0, Job::progress)
    }

    /// The raw attributions (`C×H×W`), once `step()` returned true.
    pub fn map(&self) -> Res<Vec<f32>> {
        self.map.clone().ok_or_else(|| "the task is not finished".to_string())
    }
}

/// A map as RGBA pixels (`H×W×4`) in `colormap`: over the image (`overlay` true, mixed by `opacity` × value) or
/// alone. Scaling for display follows the method (see `render::display_values`).
#[wasm_bindgen(js_name = renderMap)]
pub fn render_map(
    pixels: &[f32],
    map: &[f32],
    dataset: &str,
    method: &str,
    colormap: &str,
    opacity: f32,
    overlay: bool,
) -> Res<Vec<u8>> {
    let kind = DatasetKind::parse(dataset).map_err(err)?;
    let method = Method::parse(method).map_err(err)?;
    let colormap = Colormap::parse(colormap).map_err(err)?;
    if pixels.len() != map.len() {
        return Err(format!("{} pixel values for a map of {}", pixels.len(), map.len()));
    }
    if !(0.0..=1.0).contains(&opacity) {
        return Err(format!("opacity must be a number in [0, 1], got {opacity}"));
    }
    let values = render::display_values(map, kind.channels(), method).map_err(err)?;
    let image = render::denormalize_rgb(
        normalized(pixels, kind)?.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?.as_slice(),
        kind,
    );
    let rgb =
        if overlay { render::overlay(&image, &values, colormap, opacity) } else { render::heat_rgb(&values, colormap) };
    Ok(rgb.iter().flat_map(|p| [p[0], p[1], p[2], 255]).collect())
}

/// Display values (`H×W` in [0, 1]) of a map, as the page shows it: for tests and for the page's statistics.
#[wasm_bindgen(js_name = displayValues)]
pub fn display_values(map: &[f32], channels: usize, method: &str) -> Res<Vec<f32>> {
    let method = Method::parse(method).map_err(err)?;
    render::display_values(map, channels, method).map_err(err)
}

/// A drawing (`height×width` ink values in [0, 1]) → the 28×28 MNIST digit in [0, 1], or `undefined` when empty.
#[wasm_bindgen(js_name = mnistFromDrawing)]
pub fn mnist_from_drawing(ink: &[f32], width: usize, height: usize) -> Res<Option<Vec<f32>>> {
    whitebox_core::data::mnist_from_drawing(ink, width, height).map_err(err)
}

/// A picture (`height×width` RGBA bytes, as a canvas's `ImageData`) as `dataset`'s model input in [0, 1]: the
/// centre square resized for CIFAR-10, the ink made into a digit for MNIST (`undefined` when there is none).
#[wasm_bindgen(js_name = inputFromImage)]
pub fn input_from_image(dataset: &str, rgba: &[u8], width: usize, height: usize) -> Res<Option<Vec<f32>>> {
    let kind = DatasetKind::parse(dataset).map_err(err)?;
    whitebox_core::data::input_from_image(kind, rgba, width, height).map_err(err)
}

/// The methods the page offers, in the registry's order: a JSON array of their descriptors (id, label, title,
/// paper, family, display, parameters with their types, defaults and ranges), from which the page builds its
/// method menu and each method's parameter controls.
#[wasm_bindgen(js_name = methodList)]
pub fn method_list() -> Res<String> {
    let all: Vec<_> = Method::all().iter().map(|m| m.summary()).collect();
    serde_json::to_string(&all).map_err(err)
}

/// The ensembles the page offers (id, name).
#[wasm_bindgen(js_name = ensembleList)]
pub fn ensemble_list() -> Vec<String> {
    Ensemble::ALL.iter().map(|e| format!("{}:{}", e.id(), e.title())).collect()
}

/// The colormaps the page offers, its default first.
#[wasm_bindgen(js_name = colormapList)]
pub fn colormap_list() -> Vec<String> {
    Colormap::ALL.iter().map(|c| c.id().to_string()).collect()
}

/// The models whose weights the repository ships (`weights/<dataset>/<arch>.safetensors`, small enough for the
/// browser), in the page's order.
pub const SHIPPED: [(DatasetKind, Arch); 6] = [
    (DatasetKind::Mnist, Arch::SimpleCnn),
    (DatasetKind::Mnist, Arch::Cam),
    (DatasetKind::Mnist, Arch::Cbam),
    (DatasetKind::Cifar10, Arch::SimpleCnn),
    (DatasetKind::Cifar10, Arch::Cam),
    (DatasetKind::Cifar10, Arch::Cbam),
];

/// The models the page can load, `dataset/arch:name`: the shipped ones.
#[wasm_bindgen(js_name = modelList)]
pub fn model_list() -> Vec<String> {
    SHIPPED.iter().map(|(d, a)| format!("{}/{}:{}", d.name(), a.name(), a.title())).collect()
}

/// The data sets (id, name), in the page's order.
#[wasm_bindgen(js_name = datasetList)]
pub fn dataset_list() -> Vec<String> {
    DatasetKind::ALL.iter().map(|d| format!("{}:{}", d.name(), d.title())).collect()
}

/// The largest request the engine accepts: `[samples, IG steps, noise level]` (the page's input limits).
#[wasm_bindgen(js_name = requestLimits)]
pub fn request_limits() -> Vec<f64> {
    use whitebox_core::attribution::limits;
    vec![limits::SAMPLES as f64, limits::NOISE]
}

#[doc(hidden)]
pub mod parity;

#[cfg(test)]
mod tests;
