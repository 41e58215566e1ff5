//! One spelling for "a method, optionally inside an ensemble", shared by `attribute`, the evaluations (Selectivity,
//! ROAR, KAR) and their result files: `gb`, `sg:gb`, `sg-sq:gb`, `sg-var:ig` — the ensemble (Smilkov et al. 2017's
//! SmoothGrad, its square, Adebayo et al. 2018's VarGrad) before the method it averages. Hooker et al. (2019)
//! compare exactly these estimators under ROAR.

use super::{Ensemble, Method};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A base method, or a base method inside an ensemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Estimator {
    pub ensemble: Option<Ensemble>,
    pub method: Method,
}

impl Estimator {
    pub fn plain(method: Method) -> Self {
        Estimator { ensemble: None, method }
    }

    /// Every estimator, each base method followed by its ensembles (the order reports group them in).
    pub fn all() -> Vec<Estimator> {
        Method::all()
            .iter()
            .flat_map(|&method| {
                std::iter::once(None).chain(Ensemble::ALL.map(Some)).map(move |ensemble| Estimator { ensemble, method })
            })
            .collect()
    }

    /// `method` or `ensemble:method` (case-insensitive; the ensembles' and methods' aliases are accepted).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        match parts.as_slice() {
            [method] => Ok(Estimator::plain(Method::parse(method)?)),
            [ensemble, method] => {
                if method.is_empty() {
                    crate::invalid!("'{s}' names no method after the ensemble (e.g. {ensemble}:gb)");
                }
                let ensemble = Ensemble::parse(ensemble).map_err(|e| Error::InvalidArgument(format!("'{s}': {e}")))?;
                Ok(Estimator { ensemble: Some(ensemble), method: Method::parse(method)? })
            }
            _ => crate::invalid!("'{s}' is not a method: write METHOD or ENSEMBLE:METHOD (e.g. gb, sg-sq:gb)"),
        }
    }

    /// The spelling [`Estimator::parse`] reads back: `gb`, `sg-sq:gb`.
    pub fn id(&self) -> String {
        match self.ensemble {
            Some(e) => format!("{}:{}", e.id(), self.method.id()),
            None => self.method.id().to_string(),
        }
    }

    /// [`Estimator::id`] usable in a file name on every system (`sg-sq+gb`).
    pub fn file_id(&self) -> String {
        self.id().replace(':', "+")
    }

    /// As figures label it: `GB`, `SG-SQ-GB`.
    pub fn label(&self) -> String {
        match self.ensemble {
            Some(e) => format!("{}-{}", e.label(), self.method.label()),
            None => self.method.label().to_string(),
        }
    }
}

impl std::fmt::Display for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

impl TryFrom<String> for Estimator {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Estimator::parse(&s)
    }
}

impl From<Estimator> for String {
    fn from(e: Estimator) -> String {
        e.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_back() {
        for &m in Method::all() {
            for e in std::iter::once(None).chain(Ensemble::ALL.map(Some)) {
                let est = Estimator { ensemble: e, method: m };
                assert_eq!(Estimator::parse(&est.id()).unwrap(), est);
                let json = serde_json::to_string(&est).unwrap();
                assert_eq!(serde_json::from_str::<Estimator>(&json).unwrap(), est, "{json}");
            }
        }
        let spaced = Estimator::parse(" SG-SQ : GB ").unwrap();
        assert_eq!(spaced, Estimator { ensemble: Some(Ensemble::SmoothGradSquared), method: Method::GB });
        let e = Estimator::parse("VarGrad:ig").unwrap();
        assert_eq!((e.id(), e.file_id(), e.label()), ("sg-var:ig".into(), "sg-var+ig".into(), "SG-VAR-IG".into()));
        // Result files written before ensembles existed ("method": "gb") still read.
        assert_eq!(serde_json::from_str::<Estimator>("\"gb\"").unwrap(), Estimator::plain(Method::GB));
    }

    #[test]
    fn malformed_names_are_clear_errors() {
        let e = |s: &str| Estimator::parse(s).unwrap_err().to_string();
        assert!(e("sg:").contains("names no method"), "{}", e("sg:"));
        assert!(e("sg:sg:gb").contains("write METHOD or ENSEMBLE:METHOD"));
        assert!(e("smooth:gb").contains("'smooth:gb'") && e("smooth:gb").contains("unknown ensemble 'smooth'"));
        assert!(e("sg:nope").contains("unknown method 'nope'"));
        assert!(e("").contains("unknown method ''"));
        assert!(serde_json::from_str::<Estimator>("\"sg:\"").is_err());
    }
}
