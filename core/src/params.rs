//! Parameters: seeded initialisation for training, and checkpoints as safetensors files whose keys are the seed's
//! PyTorch `state_dict` keys and whose header metadata names the architecture.

use crate::models::{Arch, Classifier, ModelSpec};
use crate::nn::is_buffer;
use crate::{data::DatasetKind, Error, Result};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A [`VarMap`] whose missing variables are created from their init hint with a seeded generator, so training
/// starts from the same weights for the same seed (candle's CPU generator cannot be seeded).
struct SeededVarMap {
    map: VarMap,
    rng: Mutex<rand::rngs::StdRng>,
    /// Names in creation order: the model's definition order, as PyTorch's `state_dict`.
    order: std::sync::Arc<Mutex<Vec<String>>>,
}

impl candle_nn::var_builder::SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut data = self.map.data().lock().expect("varmap lock");
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("{name}: existing variable has shape {:?}, asked for {s:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let n = s.elem_count();
        let mut rng = self.rng.lock().expect("rng lock");
        let values: Vec<f32> = match h {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo as f32..up as f32)).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| {
                    // Box–Muller transform.
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                    (mean + stdev * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                })
                .collect(),
            other => candle_core::bail!("{name}: unsupported init {other:?}"),
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        self.order.lock().expect("order lock").push(name.to_string());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: a seeded initialiser needs a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().expect("varmap lock").contains_key(name)
    }
}

/// A freshly initialised, trainable model: its variables live in the returned [`VarMap`].
pub fn init_model(spec: ModelSpec, seed: u64, device: &Device) -> Result<(VarMap, Box<dyn Classifier>)> {
    let (map, _, model) = init_in_order(spec, seed, device)?;
    Ok((map, model))
}

/// [`init_model`], with the variables' names in creation order.
fn init_in_order(spec: ModelSpec, seed: u64, device: &Device) -> Result<(VarMap, Vec<String>, Box<dyn Classifier>)> {
    let map = VarMap::new();
    let order = std::sync::Arc::new(Mutex::new(Vec::new()));
    let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(seed));
    let backend = SeededVarMap { map: map.clone(), rng, order: order.clone() };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
    let model = crate::engine::build(spec, vb)?;
    let order = order.lock().expect("order lock").clone();
    Ok((map, order, model))
}

/// Names and shapes of a model's tensors (parameters and buffers) as PyTorch orders a `state_dict`: layers in
/// definition order, and within a layer `weight`, `bias`, then the buffers. For RAN and WARN this is the seed's order
/// (tested); the SimpleCNN family defines each CBAM module right after its block.
pub fn tensor_shapes(spec: ModelSpec) -> Result<Vec<(String, Vec<usize>)>> {
    let (map, order, _) = init_in_order(spec, 0, &Device::Cpu)?;
    let data = map.data().lock().expect("varmap lock");
    let layer = |k: &str| k.rsplit_once('.').map_or(String::new(), |(l, _)| l.to_string());
    let mut layers: Vec<String> = Vec::new();
    for k in &order {
        if !layers.contains(&layer(k)) {
            layers.push(layer(k));
        }
    }
    let rank =
        |k: &str| ["weight", "bias", "running_mean", "running_var"].iter().position(|s| k.ends_with(s)).unwrap_or(4);
    let mut named: Vec<(usize, usize, String)> =
        order.into_iter().map(|k| (layers.iter().position(|l| *l == layer(&k)).unwrap_or(0), rank(&k), k)).collect();
    named.sort();
    Ok(named.into_iter().map(|(_, _, k)| (k.clone(), data[&k].dims().to_vec())).collect())
}

/// Number of trainable parameters (as PyTorch's `sum(p.numel() for p in model.parameters())`).
pub fn parameter_count(spec: ModelSpec) -> Result<usize> {
    Ok(tensor_shapes(spec)?.iter().filter(|(k, _)| !is_buffer(k)).map(|(_, s)| s.iter().product::<usize>()).sum())
}

/// Header metadata key naming the format.
const FORMAT_KEY: &str = "format";
const FORMAT: &str = "whitebox-checkpoint-v1";

/// A model's tensors with the metadata needed to rebuild it.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub spec: ModelSpec,
    pub tensors: HashMap<String, Tensor>,
    /// Free-form provenance (command, seed, epochs, accuracy), as stored in the safetensors header.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Snapshot of the variables of a model being trained.
    pub fn from_varmap(spec: ModelSpec, map: &VarMap, metadata: BTreeMap<String, String>) -> Result<Self> {
        let data = map.data().lock().expect("varmap lock");
        let tensors = data.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
        Ok(Checkpoint { spec, tensors, metadata })
    }

    /// Serialises to safetensors, storing floats as `dtype` (F32 or F16).
    pub fn to_bytes(&self, dtype: DType) -> Result<Vec<u8>> {
        let mut info: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        info.insert(FORMAT_KEY.into(), FORMAT.into());
        info.insert("arch".into(), self.spec.arch.name().into());
        info.insert("dataset".into(), self.spec.dataset.name().into());
        let mut converted = Vec::with_capacity(self.tensors.len());
        for (k, t) in &self.tensors {
            converted.push((k.clone(), t.to_dtype(dtype)?.to_device(&Device::Cpu)?));
        }
        converted.sort_by(|a, b| a.0.cmp(&b.0));
        safetensors::serialize(converted, Some(info)).map_err(|e| Error::Checkpoint(e.to_string()))
    }

    /// Parses a checkpoint written by [`Checkpoint::to_bytes`] and checks that its tensors are exactly those of its
    /// architecture; `name` is used in error messages.
    pub fn from_bytes(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        let ck = Self::from_bytes_unchecked(name, bytes, device)?;
        ck.check_keys().map_err(|e| Error::Checkpoint(format!("{name}: {e}")))?;
        Ok(ck)
    }

    /// Parses a file written by [`Checkpoint::to_bytes`] without checking its tensor names (for containers that hold
    /// more than a model, such as a training state).
    pub fn from_bytes_unchecked(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        let bad = |what: String| Error::Checkpoint(format!("{name}: {what}"));
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let mut metadata: BTreeMap<String, String> =
            header.metadata().clone().unwrap_or_default().into_iter().collect();
        drop(st);
        if metadata.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "missing '{FORMAT_KEY}: {FORMAT}' in the header metadata (not a whitebox checkpoint)"
            )));
        }
        let arch = Arch::parse(metadata.get("arch").ok_or_else(|| bad("no 'arch' in metadata".into()))?)?;
        let dataset =
            DatasetKind::parse(metadata.get("dataset").ok_or_else(|| bad("no 'dataset' in metadata".into()))?)?;
        for k in [FORMAT_KEY, "arch", "dataset"] {
            metadata.remove(k);
        }
        let mut tensors = candle_core::safetensors::load_buffer(bytes, device).map_err(|e| bad(e.to_string()))?;
        for t in tensors.values_mut() {
            *t = t.to_dtype(DType::F32)?;
        }
        // A NaN or infinite weight would only show later, as a chance-level accuracy or maps of NaN.
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let values = tensors[name].flatten_all()?.to_vec1::<f32>()?;
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(bad(format!("tensor '{name}' holds a non-finite value ({v} at flat index {i})")));
            }
        }
        Ok(Checkpoint { spec: ModelSpec { arch, dataset }, tensors, metadata })
    }

    /// Every tensor the architecture needs is present with the right shape, and nothing else is.
    fn check_keys(&self) -> std::result::Result<(), String> {
        let want = tensor_shapes(self.spec).map_err(|e| e.to_string())?;
        for (k, shape) in &want {
            match self.tensors.get(k) {
                None => return Err(format!("missing tensor '{k}' for {}", self.spec.arch)),
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(format!("tensor '{k}' has shape {:?}, {} needs {shape:?}", t.dims(), self.spec.arch))
                }
                _ => {}
            }
        }
        if let Some(extra) = self.tensors.keys().find(|k| !want.iter().any(|(w, _)| w == *k)) {
            return Err(format!("unexpected tensor '{extra}' for {}", self.spec.arch));
        }
        Ok(())
    }

    /// The model with these weights (constants: no gradients are kept for them).
    pub fn model(&self) -> Result<Box<dyn Classifier>> {
        let device = self.tensors.values().next().map(|t| t.device().clone()).unwrap_or(Device::Cpu);
        let vb = VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &device);
        crate::engine::build(self.spec, vb)
    }

    /// Copies these weights into the variables of a model being trained (to resume).
    pub fn copy_into(&self, map: &VarMap) -> Result<()> {
        let data = map.data().lock().expect("varmap lock");
        for (k, var) in data.iter() {
            let t = self.tensors.get(k).ok_or_else(|| Error::Checkpoint(format!("missing tensor '{k}'")))?;
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_init_is_deterministic_and_pytorch_shaped() -> Result<()> {
        let spec = ModelSpec { arch: Arch::SimpleCnn, dataset: DatasetKind::Mnist };
        let (a, _) = init_model(spec, 3, &Device::Cpu)?;
        let (b, _) = init_model(spec, 3, &Device::Cpu)?;
        let get = |m: &VarMap, k: &str| {
            m.data().lock().unwrap()[k].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(get(&a, "features.0.weight"), get(&b, "features.0.weight"));
        // U(±1/√fan_in) with fan_in = 1·3·3 = 9: every value within ±1/3, and they spread across it.
        let w = get(&a, "features.0.weight");
        assert!(w.iter().all(|v| v.abs() <= 1.0 / 3.0) && w.iter().any(|v| v.abs() > 0.3));
        assert_eq!(get(&a, "features.1.running_var"), vec![1.0; 32]);
        Ok(())
    }

    #[test]
    fn checkpoint_round_trip_and_errors() -> Result<()> {
        let spec = ModelSpec { arch: Arch::Cam, dataset: DatasetKind::Mnist };
        let (map, model) = init_model(spec, 1, &Device::Cpu)?;
        let ck = Checkpoint::from_varmap(spec, &map, BTreeMap::from([("seed".to_string(), "1".to_string())]))?;
        let bytes = ck.to_bytes(DType::F32)?;
        let back = Checkpoint::from_bytes("ck", &bytes, &Device::Cpu)?;
        assert_eq!((back.spec, back.metadata.get("seed").cloned()), (spec, Some("1".into())));
        let x = Tensor::ones((2, 1, 28, 28), DType::F32, &Device::Cpu)?;
        let (y0, y1) = (model.forward(&x, &crate::nn::Pass::EVAL)?, back.model()?.forward(&x, &crate::nn::Pass::EVAL)?);
        assert_eq!(y0.to_vec2::<f32>()?, y1.to_vec2::<f32>()?);
        let err = Checkpoint::from_bytes("ck", &bytes[..bytes.len() - 10], &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("ck: not a safetensors file"), "{err}");
        let mut wrong = back.clone();
        wrong.spec.arch = Arch::Cbam;
        let err = Checkpoint::from_bytes("ck", &wrong.to_bytes(DType::F16)?, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("missing tensor 'cbam0."), "{err}");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut poisoned = back.clone();
            let w = poisoned.tensors["features.4.weight"].flatten_all()?.to_vec1::<f32>()?;
            let mut w2 = w.clone();
            w2[7] = bad;
            poisoned.tensors.insert(
                "features.4.weight".into(),
                Tensor::from_vec(w2, poisoned.tensors["features.4.weight"].shape(), &Device::Cpu)?,
            );
            for dtype in [DType::F32, DType::F16] {
                let err =
                    Checkpoint::from_bytes("ck", &poisoned.to_bytes(dtype)?, &Device::Cpu).unwrap_err().to_string();
                assert!(
                    err.contains("tensor 'features.4.weight' holds a non-finite value") && err.contains("index 7"),
                    "{err}"
                );
            }
        }
        Ok(())
    }
}
