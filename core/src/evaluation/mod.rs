//! How much does the ranking of pixels an attribution method gives matter to the model?
//!
//! - [`selectivity`]: Selectivity (Montavon, Samek & Müller 2018, "Methods for interpreting and understanding deep
//!   neural networks", §4.1; Bach et al. 2015's pixel-flipping): remove the most relevant pixel, recompute the map,
//!   repeat, and watch the accuracy and the class score fall. A good map makes them fall fast.
//! - [`remove_pixels`]: the masking of ROAR and KAR (Hooker, Erhan, Kindermans & Kim 2019, "A Benchmark for
//!   Interpretability Methods in Deep Neural Networks"): replace the most (ROAR) or least (KAR) relevant fraction of
//!   the pixels of every train and test image by the data set's mean, retrain from scratch and measure test accuracy.
//!   A good map makes ROAR accuracy fall fast and KAR accuracy stay high.
//!
//! Both rank pixels (all channels of a location together) by one [`Ranking`] of the map.

mod ranking;
mod remove;
mod selectivity;
mod shard;

pub use ranking::{most_relevant_first, pixel_relevance, Ranking};
pub use remove::{remove_pixels, Fill, Mode};
pub use selectivity::{area_under_curve, selectivity, SelectivityConfig, SelectivityState};
pub use shard::Shard;
