//! The methods, listed once. Each method is a file in `methods/` named after it that describes itself with a
//! [`Descriptor`]: its id and label, its paper, its typed parameters ([`ParamSpec`], with defaults and ranges),
//! what it needs of a model, how its map is shown, and how it is built. The command line's flags and value lists,
//! the page's method menu and parameter controls, the compare view and the reports read this list; adding a method
//! is one new file and one line in `REGISTRY`.

use super::methods;
use super::Attribution;
use crate::models::Classifier;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every method, in the order the command line, the page and the figures list them.
static REGISTRY: [Method; 28] = [
    Method(&methods::vanilla_gradient::DESCRIPTOR),
    Method(&methods::input_x_gradient::DESCRIPTOR),
    Method(&methods::deconvnet::DESCRIPTOR),
    Method(&methods::guided_backprop::DESCRIPTOR),
    Method(&methods::integrated_gradients::DESCRIPTOR),
    Method(&methods::gradient_shap::DESCRIPTOR),
    Method(&methods::guided_ig::DESCRIPTOR),
    Method(&methods::blur_ig::DESCRIPTOR),
    Method(&methods::deep_lift::DESCRIPTOR),
    Method(&methods::lrp::DESCRIPTOR),
    Method(&methods::grad_cam::DESCRIPTOR),
    Method(&methods::guided_grad_cam::DESCRIPTOR),
    Method(&methods::cam::DESCRIPTOR),
    Method(&methods::grad_cam_plus_plus::DESCRIPTOR),
    Method(&methods::xgrad_cam::DESCRIPTOR),
    Method(&methods::hires_cam::DESCRIPTOR),
    Method(&methods::layer_cam::DESCRIPTOR),
    Method(&methods::score_cam::DESCRIPTOR),
    Method(&methods::ablation_cam::DESCRIPTOR),
    Method(&methods::eigen_cam::DESCRIPTOR),
    Method(&methods::occlusion::DESCRIPTOR),
    Method(&methods::feature_ablation::DESCRIPTOR),
    Method(&methods::rise::DESCRIPTOR),
    Method(&methods::kernel_shap::DESCRIPTOR),
    Method(&methods::lime::DESCRIPTOR),
    Method(&methods::conv_output::DESCRIPTOR),
    Method(&methods::random_map::DESCRIPTOR),
    Method(&methods::sobel::DESCRIPTOR),
];

/// The feature layer of the layer methods (Grad-CAM, Guided Grad-CAM, ConvOutput, …): one parameter they share.
pub static LAYER: ParamSpec = ParamSpec {
    key: "layer",
    aliases: &[],
    label: "Layer",
    help: "Feature layer, by index (`whitebox info` lists them; SimpleCNN: the seed's features 0–11)",
    kind: ParamKind::Layer,
};

/// What a method says about itself.
pub struct Descriptor {
    /// The id the command line, the page and result files use (`gb`, `sg-sq:gb` inside an ensemble).
    pub id: &'static str,
    /// Other spellings [`Method::parse`] accepts (compared without case, `-` and `_`).
    pub aliases: &'static [&'static str],
    /// The short label of figures and tables (`GB`).
    pub label: &'static str,
    /// The name people know it by (`Guided Backpropagation`).
    pub title: &'static str,
    /// The paper it comes from.
    pub paper: &'static str,
    pub family: Family,
    /// Its parameters; a parameter shared by several methods is one [`ParamSpec`] they all list.
    pub params: &'static [&'static ParamSpec],
    pub needs: Needs,
    pub display: Display,
    /// One of the seven methods of the seed (WhiteBox-Part1), which its figures and evaluations show.
    pub seed: bool,
    /// The method configured by `settings` for `model`.
    pub build: fn(&Settings, &dyn Classifier) -> Result<Box<dyn Attribution>>,
}

/// How a method reads the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// A backward pass to the input.
    Gradient,
    /// A feature layer's activations and gradients, up-sampled to the input.
    Layer,
    /// Relevance sent back to the input by rules of the method's own (DeepLIFT, LRP).
    Propagation,
    /// Forward passes on perturbed copies of the input (Occlusion, RISE, LIME, …).
    Perturbation,
    /// No model at all: the evaluations' controls.
    Control,
}

/// What a method needs of a model beyond a forward and a backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Needs {
    Nothing,
    /// A head of global average pooling and one linear layer (CAM).
    CamHead,
    /// The engine that runs the model's graph (constant weights on the CPU), for rules of the method's own.
    Graph,
    /// Layers LRP has rules for (convolution, BatchNorm, ReLU, pooling, linear), run by the graph's engine.
    LrpRules,
}

/// How a map is scaled for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Display {
    /// |a|, the channel maximum, scaled by the 99th percentile: the sign is evidence for or against.
    AbsMax,
    /// The channel mean scaled min–max: the sign is not evidence (CAM).
    MinMax,
}

/// A method's parameter: its key (also its command-line flag, `--KEY`), its type, default and range.
#[derive(Debug, PartialEq, Serialize)]
pub struct ParamSpec {
    pub key: &'static str,
    /// Other flags accepted for it (`--ig-steps`).
    pub aliases: &'static [&'static str],
    /// The page's label.
    pub label: &'static str,
    pub help: &'static str,
    #[serde(flatten)]
    pub kind: ParamKind,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ParamKind {
    /// A whole number within `min..=max`.
    Count { default: usize, min: usize, max: usize },
    /// A finite number within `min..=max`.
    Real { default: f64, min: f64, max: f64 },
    /// One of `values`.
    Choice { values: &'static [&'static str], default: &'static str },
    /// A feature layer of the model, by index (`whitebox info` lists them); the default is the model's own choice.
    Layer,
}

/// A parameter's value, as [`Params`] holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Count(usize),
    Real(f64),
    Text(String),
}

/// Parameter values by key; a key not set takes its [`ParamSpec`]'s default. Keys only some methods use are
/// ignored by the others, so one set of values can configure every method of a sweep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Params(BTreeMap<String, Value>);

impl Params {
    /// Sets `key` from its text (a command-line value or a page control), checked against its spec.
    pub fn set(&mut self, key: &str, text: &str) -> Result<()> {
        let spec = param(key)?;
        let text = text.trim();
        let value = match spec.kind {
            ParamKind::Count { .. } | ParamKind::Layer => Value::Count(
                text.parse()
                    .map_err(|_| Error::InvalidArgument(format!("--{key} must be a whole number, got '{text}'")))?,
            ),
            ParamKind::Real { .. } => Value::Real(
                text.parse().map_err(|_| Error::InvalidArgument(format!("--{key} must be a number, got '{text}'")))?,
            ),
            ParamKind::Choice { .. } => Value::Text(text.to_ascii_lowercase()),
        };
        check(spec, &value)?;
        self.0.insert(spec.key.to_string(), value);
        Ok(())
    }

    /// `self` with `key` set to `value` (checked).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Result<Self> {
        let spec = param(key)?;
        let value = value.into();
        check(spec, &value)?;
        self.0.insert(spec.key.to_string(), value);
        Ok(self)
    }

    /// Checks every value against its spec (values read from a file or a page are input too).
    pub fn validate(&self) -> Result<()> {
        self.0.iter().try_for_each(|(k, v)| check(param(k)?, v))
    }

    pub fn count(&self, spec: &ParamSpec) -> usize {
        match (&spec.kind, self.0.get(spec.key)) {
            (_, Some(Value::Count(v))) => *v,
            (ParamKind::Count { default, .. }, _) => *default,
            _ => panic!("{} is not a count", spec.key),
        }
    }

    pub fn real(&self, spec: &ParamSpec) -> f64 {
        match (&spec.kind, self.0.get(spec.key)) {
            (_, Some(Value::Real(v))) => *v,
            (_, Some(Value::Count(v))) => *v as f64,
            (ParamKind::Real { default, .. }, _) => *default,
            _ => panic!("{} is not a number", spec.key),
        }
    }

    pub fn choice(&self, spec: &ParamSpec) -> &str {
        match (&spec.kind, self.0.get(spec.key)) {
            (_, Some(Value::Text(v))) => v,
            (ParamKind::Choice { default, .. }, _) => default,
            _ => panic!("{} is not a choice", spec.key),
        }
    }

    /// A [`ParamKind::Layer`] value: `None` for the model's own choice.
    pub fn layer(&self, spec: &ParamSpec) -> Option<usize> {
        match self.0.get(spec.key) {
            Some(Value::Count(v)) => Some(*v),
            _ => None,
        }
    }

    /// The values set, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self` without `key`'s value.
    pub fn without(mut self, key: &str) -> Self {
        self.0.remove(key);
        self
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Count(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_ascii_lowercase())
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Count(v) => write!(f, "{v}"),
            Value::Real(v) => write!(f, "{v}"),
            Value::Text(v) => f.write_str(v),
        }
    }
}

fn check(spec: &ParamSpec, value: &Value) -> Result<()> {
    let key = spec.key;
    match (&spec.kind, value) {
        (ParamKind::Count { min, max, .. }, Value::Count(v)) if !(min..=max).contains(&v) => {
            crate::invalid!("--{key} must be within {min}..={max}, got {v}")
        }
        (ParamKind::Count { .. } | ParamKind::Layer, Value::Count(_)) => Ok(()),
        (ParamKind::Real { min, max, .. }, Value::Real(v)) if !(v.is_finite() && (min..=max).contains(&v)) => {
            crate::invalid!("--{key} must be a number within [{min}, {max}], got {v}")
        }
        (ParamKind::Real { .. }, Value::Real(_) | Value::Count(_)) => Ok(()),
        (ParamKind::Choice { values, .. }, Value::Text(v)) if !values.contains(&v.as_str()) => {
            crate::invalid!("--{key} must be one of {}, got '{v}'", values.join(", "))
        }
        (ParamKind::Choice { .. }, Value::Text(_)) => Ok(()),
        (_, v) => crate::invalid!("--{key} cannot be '{v}'"),
    }
}

/// Every distinct parameter of the registered methods, in the order the methods list them.
pub fn params() -> Vec<&'static ParamSpec> {
    let mut out: Vec<&'static ParamSpec> = Vec::new();
    for m in &REGISTRY {
        for &p in m.0.params {
            if !out.iter().any(|q| q.key == p.key) {
                out.push(p);
            }
        }
    }
    out
}

/// The parameter with this key or alias.
pub fn param(key: &str) -> Result<&'static ParamSpec> {
    let key = key.trim_start_matches('-');
    params().into_iter().find(|p| p.key == key || p.aliases.contains(&key)).ok_or_else(|| {
        let keys: Vec<&str> = params().iter().map(|p| p.key).collect();
        Error::InvalidArgument(format!("no method has a parameter '{key}' (parameters: {})", keys.join(", ")))
    })
}

/// How a method runs: its parameter values, images per internal batch and the seed of its random draws.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub params: Params,
    /// Model inputs per internal batch (IG steps, ensemble samples and perturbed copies are batched).
    pub batch: usize,
    /// The seed of random draws (the random map, the ensembles' noise, RISE's masks, LIME's and KernelSHAP's
    /// coalitions).
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { params: Params::default(), batch: 128, seed: 0 }
    }
}

impl Settings {
    /// `self` with parameter `key` set to `value`; panics on a value out of its range (for literals in code).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.params = self.params.with(key, value).expect("a valid parameter literal");
        self
    }
}

/// A registered method: a handle on its [`Descriptor`], compared, hashed and serialised by id.
#[derive(Clone, Copy)]
pub struct Method(&'static Descriptor);

impl Method {
    pub const VBP: Method = Method(&methods::vanilla_gradient::DESCRIPTOR);
    pub const IB: Method = Method(&methods::input_x_gradient::DESCRIPTOR);
    pub const DECONVNET: Method = Method(&methods::deconvnet::DESCRIPTOR);
    pub const GB: Method = Method(&methods::guided_backprop::DESCRIPTOR);
    pub const IG: Method = Method(&methods::integrated_gradients::DESCRIPTOR);
    pub const GC: Method = Method(&methods::grad_cam::DESCRIPTOR);
    pub const GBGC: Method = Method(&methods::guided_grad_cam::DESCRIPTOR);
    pub const CAM: Method = Method(&methods::cam::DESCRIPTOR);
    pub const CO: Method = Method(&methods::conv_output::DESCRIPTOR);
    pub const RANDOM: Method = Method(&methods::random_map::DESCRIPTOR);
    pub const SOBEL: Method = Method(&methods::sobel::DESCRIPTOR);

    /// Every registered method.
    pub fn all() -> &'static [Method] {
        &REGISTRY
    }

    /// The ids of [`Method::all`], for value lists.
    pub fn ids() -> Vec<&'static str> {
        REGISTRY.iter().map(|m| m.id()).collect()
    }

    /// The seed's seven methods, in its order.
    pub fn seed_methods() -> Vec<Method> {
        REGISTRY.iter().copied().filter(|m| m.0.seed).collect()
    }

    /// An id or alias, case-insensitive, ignoring `-` and `_`.
    pub fn parse(s: &str) -> Result<Self> {
        let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
        let key = norm(s);
        REGISTRY.iter().copied().find(|m| norm(m.id()) == key || m.0.aliases.iter().any(|a| norm(a) == key)).ok_or_else(
            || Error::InvalidArgument(format!("unknown method '{s}' (expected one of {})", Method::ids().join(", "))),
        )
    }

    pub fn id(self) -> &'static str {
        self.0.id
    }

    pub fn label(self) -> &'static str {
        self.0.label
    }

    pub fn descriptor(self) -> &'static Descriptor {
        self.0
    }

    /// Whether the method reads this parameter.
    pub fn uses(self, spec: &ParamSpec) -> bool {
        self.0.params.iter().any(|p| p.key == spec.key)
    }

    /// Whether the method can explain this model.
    pub fn applies_to(self, model: &dyn Classifier) -> bool {
        match self.0.needs {
            Needs::Nothing => true,
            Needs::CamHead => model.cam_head().is_some(),
            Needs::Graph => model.propagator().is_some_and(|e| e.can_propagate(&methods::deep_lift::probe())),
            Needs::LrpRules => model.propagator().is_some_and(|e| e.can_propagate(&methods::lrp::probe())),
        }
    }

    /// The method configured by `settings` for `model`: a clear error when a value is out of range or the model
    /// lacks what the method needs.
    pub fn build(self, settings: &Settings, model: &dyn Classifier) -> Result<Box<dyn Attribution>> {
        settings.params.validate()?;
        if settings.batch == 0 {
            crate::invalid!("the batch size must be at least 1");
        }
        self.check_applies(model)?;
        (self.0.build)(settings, model)
    }

    /// A clear error when the method cannot explain `model`.
    pub fn check_applies(self, model: &dyn Classifier) -> Result<()> {
        match self.0.needs {
            _ if self.applies_to(model) => Ok(()),
            Needs::CamHead => crate::invalid!(
                "{} needs a model with a CAM head (global average pooling + linear), not {}",
                self.label(),
                model.spec().arch
            ),
            Needs::Graph => crate::invalid!(
                "{} needs the model's graph with constant weights on the CPU (a checkpoint, not a model in training)",
                self.label()
            ),
            Needs::LrpRules => crate::invalid!(
                "{} needs a network of convolutions, BatchNorm, ReLU, pooling and linear layers with constant \
                 weights (SimpleCNN, CAM), not {}",
                self.label(),
                model.spec().arch
            ),
            Needs::Nothing => Ok(()),
        }
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Method {}

impl std::hash::Hash for Method {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state)
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.id)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.id)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::parse(s)
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0.id)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Method::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What the page and `whitebox methods` show of a method (its descriptor, without the build function).
#[derive(Serialize)]
pub struct Summary {
    pub id: &'static str,
    pub label: &'static str,
    pub title: &'static str,
    pub paper: &'static str,
    pub family: Family,
    pub needs: Needs,
    pub display: Display,
    pub seed: bool,
    pub params: &'static [&'static ParamSpec],
}

impl Method {
    pub fn summary(self) -> Summary {
        let d = self.0;
        Summary {
            id: d.id,
            label: d.label,
            title: d.title,
            paper: d.paper,
            family: d.family,
            needs: d.needs,
            display: d.display,
            seed: d.seed,
            params: d.params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for &m in Method::all() {
            assert_eq!(Method::parse(m.id()).unwrap(), m);
            assert_eq!(Method::parse(&m.id().to_uppercase()).unwrap(), m);
            assert_eq!(serde_json::to_value(m).unwrap(), m.id(), "result files spell methods by their id");
            assert_eq!(serde_json::from_value::<Method>(serde_json::json!(m.id())).unwrap(), m);
            let same = Method::all().iter().filter(|o| o.id() == m.id() || o.label() == m.label()).count();
            assert_eq!(same, 1, "{} is listed once", m.id());
            for a in m.descriptor().aliases {
                assert_eq!(Method::parse(a).unwrap(), m);
            }
        }
        assert_eq!(Method::parse("Grad-CAM").unwrap(), Method::GC);
        assert!(Method::parse("nope").unwrap_err().to_string().contains("expected one of vbp, ib"));
        assert_eq!(Method::seed_methods().len(), 7);
    }

    /// One definition of each parameter: two methods sharing a key share the spec itself.
    #[test]
    fn parameters_are_defined_once_and_checked() {
        for &m in Method::all() {
            for &p in m.descriptor().params {
                let shared = param(p.key).unwrap();
                assert!(std::ptr::eq(shared, p), "{} defines its own '{}'", m.id(), p.key);
                if let ParamKind::Count { default, min, max } = p.kind {
                    assert!((min..=max).contains(&default), "{}", p.key);
                }
            }
        }
        let mut p = Params::default();
        p.set("steps", "12").unwrap();
        assert_eq!(p.count(param("ig-steps").unwrap()), 12);
        assert!(p.set("ig-steps", "0").unwrap_err().to_string().contains("--ig-steps must be within 1..="));
        assert!(p.set("steps", "x").unwrap_err().to_string().contains("whole number"));
        assert!(p.set("riemann", "simpson").unwrap_err().to_string().contains("one of left, right"));
        assert!(p.set("nope", "1").unwrap_err().to_string().contains("no method has a parameter 'nope'"));
        let read: Params = serde_json::from_str(r#"{"ig-steps": 0}"#).unwrap();
        assert!(read.validate().is_err(), "values read from files are checked too");
    }
}
