//! How alike two maps are, as the randomisation tests compare them (Adebayo, Gilmer, Muelly, Goodfellow, Hardt &
//! Kim 2018, "Sanity Checks for Saliency Maps", §3): Spearman's rank correlation, Pearson's correlation, the
//! structural similarity index (Wang, Bovik, Sheikh & Simoncelli 2004; scikit-image's defaults: a 7-wide uniform
//! window, sample covariances, K1 = 0.01, K2 = 0.03, the data range of both maps together, borders cropped) and the
//! intersection of the top-k locations.

use super::pearson;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Similarity {
    Spearman,
    Pearson,
    /// SSIM over the maps flattened to one dimension (as Quantus compares them).
    Ssim,
    /// The share of the `k` highest locations of one map that are also among the `k` highest of the other, k as a
    /// fraction of the locations.
    TopK(f64),
}

impl Similarity {
    pub fn id(&self) -> String {
        match self {
            Similarity::Spearman => "spearman".into(),
            Similarity::Pearson => "pearson".into(),
            Similarity::Ssim => "ssim".into(),
            Similarity::TopK(k) => format!("top-{k}"),
        }
    }

    pub fn of(&self, a: &[f32], b: &[f32]) -> f64 {
        let (a, b): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
        match self {
            Similarity::Spearman => spearman(&a, &b),
            Similarity::Pearson => pearson(&a, &b),
            Similarity::Ssim => ssim(&a, &b),
            Similarity::TopK(k) => top_k_intersection(&a, &b, *k),
        }
    }
}

/// Ranks from 1, ties sharing their average rank (scipy's `rankdata(method="average")`).
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut out = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            out[i] = rank;
        }
        start = end;
    }
    out
}

pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// SSIM of two equally long 1-D signals.
pub fn ssim(a: &[f64], b: &[f64]) -> f64 {
    const WIN: usize = 7;
    let n = a.len().min(b.len());
    if n < WIN {
        return f64::NAN;
    }
    let (lo, hi) = a.iter().chain(b).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let range = hi - lo;
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    // scipy's uniform_filter with mode "reflect" (d c b a | a b c d | d c b a).
    let at = |v: &[f64], i: isize| {
        let n = n as isize;
        let mut i = i;
        loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - 1 - i;
            } else {
                return v[i as usize];
            }
        }
    };
    let mean = |f: &dyn Fn(isize) -> f64, i: isize| (i - 3..=i + 3).map(f).sum::<f64>() / WIN as f64;
    let cov_norm = WIN as f64 / (WIN as f64 - 1.0);
    let pad = (WIN - 1) / 2;
    let mut total = 0.0;
    for i in pad..n - pad {
        let i = i as isize;
        let ux = mean(&|j| at(a, j), i);
        let uy = mean(&|j| at(b, j), i);
        let uxx = mean(&|j| at(a, j) * at(a, j), i);
        let uyy = mean(&|j| at(b, j) * at(b, j), i);
        let uxy = mean(&|j| at(a, j) * at(b, j), i);
        let (vx, vy, vxy) = (cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy));
        total += (2.0 * ux * uy + c1) * (2.0 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
    }
    total / (n - 2 * pad) as f64
}

/// |top-k(a) ∩ top-k(b)| / k with k = max(1, round(fraction · n)); ties broken by index.
pub fn top_k_intersection(a: &[f64], b: &[f64], fraction: f64) -> f64 {
    let n = a.len().min(b.len());
    let k = ((fraction * n as f64).round() as usize).clamp(1, n.max(1));
    let top = |v: &[f64]| {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| v[j].total_cmp(&v[i]).then(i.cmp(&j)));
        let mut set = vec![false; n];
        for &i in &order[..k] {
            set[i] = true;
        }
        set
    };
    let (ta, tb) = (top(a), top(b));
    ta.iter().zip(&tb).filter(|(x, y)| **x && **y).count() as f64 / k as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarities_by_hand() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 4.0, 9.0, 16.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        let a: Vec<f64> = (0..50).map(|i| ((i * 37) % 11) as f64).collect();
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
        let b: Vec<f64> = a.iter().map(|v| 10.0 - v).collect();
        assert!(ssim(&a, &b) < 0.0);
        assert_eq!(top_k_intersection(&[5.0, 4.0, 3.0, 2.0], &[5.0, 1.0, 3.0, 2.0], 0.5), 0.5);
        assert_eq!(Similarity::TopK(0.5).of(&[1.0, 2.0], &[1.0, 2.0]), 1.0);
    }
}
