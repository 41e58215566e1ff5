//! A random map, the ROAR paper's random baseline (Hooker et al. 2019, "A Benchmark for Interpretability Methods in
//! Deep Neural Networks"): uniform values in [0, 1), drawn from the run's seed; uses no model.

use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings};
use crate::attribution::{Attribution, Score};
use crate::models::Classifier;
use crate::Result;
use candle_core::Tensor;
use rand::{Rng, SeedableRng};

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "random",
    aliases: &[],
    label: "Random",
    title: "Random",
    paper: "Hooker et al. 2019, A Benchmark for Interpretability Methods in Deep Neural Networks",
    family: Family::Control,
    params: &[],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, _: &dyn Classifier| Ok(Box::new(RandomMap { seed: s.seed })),
};

pub struct RandomMap {
    pub seed: u64,
}

impl Attribution for RandomMap {
    fn name(&self) -> String {
        "Random".into()
    }

    /// Uniform values in [0, 1), the same for the same seed and shape.
    fn attribute(&self, _model: &dyn Classifier, x: &Tensor, _targets: &[u32], _score: Score) -> Result<Tensor> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let v: Vec<f32> = (0..x.elem_count()).map(|_| rng.random::<f32>()).collect();
        Ok(Tensor::from_vec(v, x.shape(), x.device())?)
    }
}
