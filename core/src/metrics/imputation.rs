//! Noisy linear imputation (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A Consistent and Efficient Evaluation
//! Strategy for Attribution Methods", §4): every removed pixel becomes the weighted mean of its eight neighbours
//! (weight 1/6 for the four direct neighbours, 1/12 for the diagonals; neighbours outside the image drop out), the
//! removed pixels solved for together, plus Gaussian noise. The reference (`NoisyLinearImputer`, in ROAD's code and
//! pytorch-grad-cam) factorises one sparse system per image with scipy; here each image's system — symmetric,
//! positive definite wherever a removed region touches a kept pixel — is solved by Jacobi-preconditioned conjugate
//! gradients, all channels and images in parallel. A removed region that touches no kept pixel has no information
//! to impute from; it gets 0 (the data set's mean), the solution of least norm.

use crate::attribution::normal_draw;
use crate::Result;
use rand::SeedableRng;
use rayon::prelude::*;

/// The neighbour offsets `(dy, dx)` and their weights.
const NEIGHBOURS: [((isize, isize), f64); 8] = [
    ((1, 1), 1.0 / 12.0),
    ((0, 1), 1.0 / 6.0),
    ((-1, 1), 1.0 / 12.0),
    ((1, -1), 1.0 / 12.0),
    ((0, -1), 1.0 / 6.0),
    ((-1, -1), 1.0 / 12.0),
    ((1, 0), 1.0 / 6.0),
    ((-1, 0), 1.0 / 6.0),
];

/// Relative residual at which the solver stops.
const TOLERANCE: f64 = 1e-10;

/// Image `image` (`C×H×W`) with the pixels where `removed` (`H×W`) is true imputed; `noise` is the standard deviation
/// of the Gaussian noise added to each imputed value (0: none), drawn from `seed`.
pub fn impute(image: &[f32], removed: &[bool], height: usize, width: usize, noise: f32, seed: u64) -> Result<Vec<f32>> {
    let plane = height * width;
    if removed.len() != plane || plane == 0 || !image.len().is_multiple_of(plane) || image.is_empty() {
        crate::invalid!(
            "an image of {} values and a mask of {} for {height}×{width} pixels",
            image.len(),
            removed.len()
        );
    }
    if !noise.is_finite() || noise < 0.0 {
        crate::invalid!("imputation noise must be a finite non-negative number (got {noise})");
    }
    let unknowns: Vec<usize> = (0..plane).filter(|&p| removed[p]).collect();
    let mut out = image.to_vec();
    if unknowns.is_empty() {
        return Ok(out);
    }
    let mut index = vec![usize::MAX; plane];
    for (k, &p) in unknowns.iter().enumerate() {
        index[p] = k;
    }
    // Row k: diagonal d[k], off-diagonal couplings to other unknowns, right-hand side from kept neighbours.
    let m = unknowns.len();
    let mut diagonal = vec![0f64; m];
    let mut couplings: Vec<Vec<(usize, f64)>> = vec![Vec::new(); m];
    let mut known: Vec<Vec<(usize, f64)>> = vec![Vec::new(); m];
    for (k, &p) in unknowns.iter().enumerate() {
        let (y, x) = ((p / width) as isize, (p % width) as isize);
        for &((dy, dx), w) in &NEIGHBOURS {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= height as isize || nx >= width as isize {
                continue;
            }
            diagonal[k] += w;
            let q = ny as usize * width + nx as usize;
            if removed[q] {
                couplings[k].push((index[q], w));
            } else {
                known[k].push((q, w));
            }
        }
    }
    let system = System { diagonal, couplings };
    let channels = image.len() / plane;
    let solutions: Vec<Vec<f64>> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let values = &image[c * plane..(c + 1) * plane];
            let b: Vec<f64> = known.iter().map(|row| row.iter().map(|&(q, w)| w * values[q] as f64).sum()).collect();
            system.solve(&b)
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (c, solution) in solutions.iter().enumerate() {
        for (k, &p) in unknowns.iter().enumerate() {
            let draw = if noise > 0.0 { noise as f64 * normal_draw(&mut rng) } else { 0.0 };
            out[c * plane + p] = (solution[k] + draw) as f32;
        }
    }
    Ok(out)
}

/// `D − W` over the unknowns: `diagonal` = the sum of each unknown's in-image neighbour weights, `couplings` = the
/// weights to neighbouring unknowns.
struct System {
    diagonal: Vec<f64>,
    couplings: Vec<Vec<(usize, f64)>>,
}

impl System {
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.diagonal[k] * v[k] - self.couplings[k].iter().map(|&(j, w)| w * v[j]).sum::<f64>();
        }
    }

    /// Jacobi-preconditioned conjugate gradients from 0.
    fn solve(&self, b: &[f64]) -> Vec<f64> {
        let m = b.len();
        let mut x = vec![0f64; m];
        let norm_b = b.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm_b == 0.0 {
            return x;
        }
        let mut r = b.to_vec();
        let mut z: Vec<f64> = r.iter().zip(&self.diagonal).map(|(r, d)| r / d).collect();
        let mut p = z.clone();
        let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let mut ap = vec![0f64; m];
        for _ in 0..(4 * m).max(50) {
            self.apply(&p, &mut ap);
            let pap: f64 = p.iter().zip(&ap).map(|(a, b)| a * b).sum();
            if pap <= 0.0 {
                break;
            }
            let alpha = rz / pap;
            for k in 0..m {
                x[k] += alpha * p[k];
                r[k] -= alpha * ap[k];
            }
            if r.iter().map(|v| v * v).sum::<f64>().sqrt() <= TOLERANCE * norm_b {
                break;
            }
            for k in 0..m {
                z[k] = r[k] / self.diagonal[k];
            }
            let rz_next: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
            let beta = rz_next / rz;
            rz = rz_next;
            for k in 0..m {
                p[k] = z[k] + beta * p[k];
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_removed_pixel_is_its_neighbours_weighted_mean() {
        // 3×3, centre removed: (1/6)·(direct) + (1/12)·(diagonal).
        let image: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut removed = vec![false; 9];
        removed[4] = true;
        let out = impute(&image, &removed, 3, 3, 0.0, 0).unwrap();
        let expected = (1.0 + 3.0 + 5.0 + 7.0) / 6.0 + (0.0 + 2.0 + 6.0 + 8.0) / 12.0;
        assert!((out[4] - expected).abs() < 1e-6, "{} vs {expected}", out[4]);
        // A corner: only three neighbours, renormalised.
        let mut removed = vec![false; 9];
        removed[0] = true;
        let out = impute(&image, &removed, 3, 3, 0.0, 0).unwrap();
        let expected = (1.0 / 6.0 * 1.0 + 1.0 / 6.0 * 3.0 + 1.0 / 12.0 * 4.0) / (1.0 / 3.0 + 1.0 / 12.0);
        assert!((out[0] - expected).abs() < 1e-6);
    }

    #[test]
    fn a_linear_ramp_is_imputed_exactly_and_each_value_is_its_neighbours_mean() {
        // Interior pixels of a linear function are their neighbours' weighted mean, so the system's solution is
        // the ramp itself; two channels.
        let (h, w) = (8, 9);
        let image: Vec<f32> = (0..2)
            .flat_map(|c| (0..h * w).map(move |p| (p / w) as f32 * 0.5 - (p % w) as f32 * 0.25 + c as f32))
            .collect();
        let removed: Vec<bool> = (0..h * w)
            .map(|p| {
                let (y, x) = (p / w, p % w);
                (2..6).contains(&y) && (2..7).contains(&x)
            })
            .collect();
        let mut holes = image.clone();
        for c in 0..2 {
            for p in 0..h * w {
                if removed[p] {
                    holes[c * h * w + p] = 100.0;
                }
            }
        }
        let out = impute(&holes, &removed, h, w, 0.0, 0).unwrap();
        for (a, b) in out.iter().zip(&image) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn noise_is_seeded_and_regions_without_kept_pixels_get_zero() {
        let image = vec![1.0f32; 16];
        let removed: Vec<bool> = (0..16).map(|p| p % 3 == 0).collect();
        let a = impute(&image, &removed, 4, 4, 0.1, 7).unwrap();
        assert_eq!(a, impute(&image, &removed, 4, 4, 0.1, 7).unwrap());
        assert_ne!(a, impute(&image, &removed, 4, 4, 0.1, 8).unwrap());
        assert!(a.iter().zip(&removed).all(|(v, r)| *r || *v == 1.0));
        let all = impute(&image, &[true; 16], 4, 4, 0.0, 0).unwrap();
        assert_eq!(all, vec![0.0; 16]);
        assert!(impute(&image, &removed[..15], 4, 4, 0.0, 0).is_err());
        assert!(impute(&image, &removed, 4, 4, f32::NAN, 0).is_err());
    }
}
