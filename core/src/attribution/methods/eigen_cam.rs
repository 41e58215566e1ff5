//! Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components"): the
//! projection of a layer's activations (pixels × channels, centred per channel) on their first principal
//! component. It reads no gradient and no class. The component's sign is arbitrary; it is chosen as Seg-Eigen-CAM
//! does (Chung & Ying 2025, eq. 13; pytorch-grad-cam's `get_2d_projection_with_sign_correction`): the projection
//! is flipped when its most negative value is larger in magnitude than its largest.

use crate::attribution::class_activation::LayerFormula;
use crate::attribution::registry::{Descriptor, Display, Family, Needs, Settings, LAYER};
use crate::models::Classifier;

pub static DESCRIPTOR: Descriptor = Descriptor {
    id: "eigencam",
    aliases: &["eigen-cam"],
    label: "EigenCAM",
    title: "Eigen-CAM",
    paper: "Muhammad & Yeasin 2020, Eigen-CAM: Class Activation Map using Principal Components",
    family: Family::Layer,
    params: &[&LAYER],
    needs: Needs::Nothing,
    display: Display::AbsMax,
    seed: false,
    build: |s: &Settings, model: &dyn Classifier| Ok(Box::new(LayerFormula::new("EigenCAM", s, model, formula, false))),
};

pub fn formula(act: &[f32], _grad: &[f32], c: usize, hw: usize) -> Vec<f32> {
    // Centred activations X (hw × c, stored by channel), in f64.
    let centred: Vec<Vec<f64>> = act
        .chunks_exact(hw)
        .map(|plane| {
            let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
            plane.iter().map(|&v| v as f64 - mean).collect()
        })
        .collect();
    // The projection X·v₁ on the first right singular vector is σ₁·u₁, u₁ the first left one: take the eigenvector
    // of whichever Gram matrix is smaller, XᵀX (c × c) or XXᵀ (hw × hw).
    let mut projection: Vec<f64> = if hw < c {
        let mut gram = vec![0f64; hw * hw];
        for i in 0..hw {
            for j in i..hw {
                let v: f64 = centred.iter().map(|ch| ch[i] * ch[j]).sum();
                gram[i * hw + j] = v;
                gram[j * hw + i] = v;
            }
        }
        let (lambda, u) = top_eigenvector(&mut gram, hw);
        u.iter().map(|x| x * lambda.max(0.0).sqrt()).collect()
    } else {
        let mut gram = vec![0f64; c * c];
        for i in 0..c {
            for j in i..c {
                let v: f64 = centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum();
                gram[i * c + j] = v;
                gram[j * c + i] = v;
            }
        }
        let (_, v) = top_eigenvector(&mut gram, c);
        (0..hw).map(|p| (0..c).map(|k| centred[k][p] * v[k]).sum()).collect()
    };
    let (lo, hi) = projection.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    if lo.abs() > hi.abs() {
        projection.iter_mut().for_each(|x| *x = -*x);
    }
    projection.into_iter().map(|x| x as f32).collect()
}

/// The largest eigenvalue of the symmetric positive semi-definite `n × n` matrix `a` and its unit eigenvector: by
/// power iteration while it converges fast (a clear first component, the usual case), else by cyclic Jacobi
/// rotations (`a` is then overwritten), which are robust whatever the spectrum.
fn top_eigenvector(a: &mut [f64], n: usize) -> (f64, Vec<f64>) {
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64 * 0.618_033_988_749_895).fract()).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = norm(&v);
    v.iter_mut().for_each(|x| *x /= scale);
    for _ in 0..500 {
        let w: Vec<f64> = (0..n).map(|i| a[i * n..(i + 1) * n].iter().zip(&v).map(|(x, y)| x * y).sum()).collect();
        let lambda = norm(&w);
        if lambda == 0.0 {
            return (0.0, v);
        }
        let w: Vec<f64> = w.into_iter().map(|x| x / lambda).collect();
        let change = w.iter().zip(&v).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        v = w;
        if change < 1e-13 {
            return (lambda, v);
        }
    }
    jacobi_top_eigenvector(a, n)
}

/// The largest eigenvalue of the symmetric `n × n` matrix `a` (overwritten) and its unit eigenvector, by cyclic
/// Jacobi rotations.
fn jacobi_top_eigenvector(a: &mut [f64], n: usize) -> (f64, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (cs, sn) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = cs * akp - sn * akq;
                    a[k * n + q] = sn * akp + cs * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = cs * apk - sn * aqk;
                    a[q * n + k] = sn * apk + cs * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = cs * vkp - sn * vkq;
                    v[k * n + q] = sn * vkp + cs * vkq;
                }
            }
        }
    }
    let top = (0..n).max_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j])).unwrap_or(0);
    (a[top * n + top], (0..n).map(|k| v[k * n + top]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two channels along one direction: the projection is that direction's coordinate, positive where it is
    /// largest.
    #[test]
    fn projects_on_the_first_component() {
        // Channel 1 = 2 × channel 0 (centred: -1, -1, -1, 3 and twice that); the component is ±(1, 2)/√5, and the
        // sign correction keeps the large value positive.
        let act = [0f32, 0., 0., 4., 0., 0., 0., 8.];
        let p = formula(&act, &[], 2, 4);
        let s = 5f32.sqrt();
        let want = [-s, -s, -s, 3.0 * s];
        assert!(p.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5), "{p:?}");
        // A 3×3 symmetric matrix with a known top eigenvector.
        let mut m = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 1.0];
        let r = std::f64::consts::FRAC_1_SQRT_2;
        for (lambda, v) in [top_eigenvector(&mut m.clone(), 3), jacobi_top_eigenvector(&mut m, 3)] {
            assert!((lambda - 3.0).abs() < 1e-12, "{lambda}");
            assert!((v[0].abs() - r).abs() < 1e-12 && (v[1].abs() - r).abs() < 1e-12 && v[2].abs() < 1e-12, "{v:?}");
        }
        // Two equal top eigenvalues: the power iteration does not settle, Jacobi answers.
        let mut twin = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(top_eigenvector(&mut twin, 2).0, 1.0);
        // More channels than positions (the positions' Gram matrix): four channels (0, 0, 3)·s, s = (1, 2, 2, 4),
        // centred (−1, −1, 2)·s: the projection is (−1, −1, 2)·|s|, |s| = 5.
        let act: Vec<f32> = [1f32, 2., 2., 4.].iter().flat_map(|&k| [0.0, 0.0, 3.0 * k]).collect();
        let p = formula(&act, &[], 4, 3);
        assert!(p.iter().zip([-5f32, -5.0, 10.0]).all(|(a, b)| (a - b).abs() < 1e-4), "{p:?}");
    }
}
