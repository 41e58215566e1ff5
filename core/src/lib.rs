//! whitebox-core: small image classifiers (the seed's SimpleCNN family), their data, training and inspection, on
//! candle. Builds for native targets and `wasm32-unknown-unknown`.

pub mod data;
mod error;
pub mod ops;

pub use error::{Error, Result};
pub mod attribution;
pub mod engine;
pub mod evaluation;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod graph;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod params;
pub mod render;
#[doc(hidden)]
pub mod testing;
pub mod train;
