//! Deterministic split of a list of work units over `count` workers (Slurm job arrays, Kubernetes Indexed Jobs).

use crate::{Error, Result};

/// Worker `index` of `count`: it takes the units whose position modulo `count` is `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::InvalidArgument(format!("shard {index}/{count}: expected 0 ≤ I < N")));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`, e.g. `0/4`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("bad shard '{s}' (expected I/N, e.g. 0/4)"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        Shard::new(i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?)
    }

    pub fn owns(self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// The units of this shard, in order.
    pub fn select<T: Clone>(self, units: &[T]) -> Vec<T> {
        units.iter().enumerate().filter(|(i, _)| self.owns(*i)).map(|(_, u)| u.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_unit_once() {
        let units: Vec<usize> = (0..11).collect();
        let mut seen = vec![];
        for i in 0..3 {
            seen.extend(Shard::new(i, 3).unwrap().select(&units));
        }
        seen.sort();
        assert_eq!(seen, units);
        assert_eq!(Shard::parse("1/3").unwrap().select(&units), vec![1, 4, 7, 10]);
        assert!(Shard::parse("3/3").is_err() && Shard::parse("x").is_err() && Shard::parse("0/0").is_err());
    }
}
