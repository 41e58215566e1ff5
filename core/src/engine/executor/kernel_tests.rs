//! The executor's hand-written kernels against plain loops and the unfolding path (itself held to candle's autograd
//! in `tests.rs`): the direct convolution on strides, paddings and kernels wider than the input; products with
//! each broadcast; the channel and window maxima on ties, NaN and cut-off windows; the gradients added in place.

use super::kernels::*;
use crate::ops::SOFTMAX_FLOOR;

/// The project's random test values (`testing::random`) with every fourth one repeated (ties).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut v = crate::testing::values(&crate::testing::random(&[len], seed).expect("random values"))
        .expect("a vector's values");
    for i in (3..len).step_by(4) {
        v[i] = v[i - 1];
    }
    v
}

/// The largest difference, relative to the largest entry of `want`.
fn rel(got: &[f32], want: &[f32]) -> f32 {
    crate::testing::max_rel_error(got, want, 1e-30)
}

#[test]
fn direct_convolution_equals_unfolding() {
    // (n, c_in, h, w, c_out, k, stride, pad): CBAM's gate, stride 2, no padding, padding wider than the kernel
    // needs, a kernel wider than the input, odd sizes.
    let cases = [
        (3, 2, 9, 7, 1, 7, 1, 3),
        (2, 1, 8, 8, 3, 3, 2, 1),
        (2, 2, 5, 6, 2, 5, 2, 0),
        (1, 3, 4, 4, 2, 3, 1, 2),
        (2, 1, 3, 3, 1, 7, 1, 3),
        (9, 2, 6, 5, 4, 3, 3, 1),
    ];
    for (seed, &(n, c_in, h, w, c_out, k, stride, pad)) in cases.iter().enumerate() {
        let g = ConvGeometry { n, input: (c_in, h, w), c_out, k, stride, pad };
        assert!(g.is_narrow(), "{g:?}");
        let x = values(c_in * n * h * w, seed as u64);
        let weight = values(g.c_out * g.rows(), 100 + seed as u64);
        let bias = values(c_out, 200 + seed as u64);
        let dy = values(c_out * g.positions(), 300 + seed as u64);
        let mut cols = zeros(g.rows() * g.positions());
        g.im2col(&x, &mut cols);
        let y = conv_forward(&g, &cols, &weight, Some(&bias));
        assert!(rel(&g.direct_forward(&x, &weight, Some(&bias)), &y) < 1e-6, "forward {g:?}");
        let (dw, _) = conv_param_grads(&g, &cols, &dy, false);
        assert!(rel(&g.direct_weight_grad(&x, &dy), &dw) < 1e-5, "weight gradient {g:?}");
        let mut dcols = conv_cols_grad(&g, &weight, &dy);
        let mut dx = zeros(x.len());
        g.col2im(&mut dcols, &mut dx);
        assert!(rel(&g.direct_input_grad(&weight, &dy), &dx) < 1e-6, "input gradient {g:?}");
    }
}

#[test]
fn direct_weight_gradient_is_independent_of_the_thread_count() {
    let g = ConvGeometry { n: 37, input: (2, 12, 12), c_out: 1, k: 7, stride: 1, pad: 3 };
    let (x, dy) = (values(2 * 37 * 144, 1), values(37 * 144, 2));
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| g.direct_weight_grad(&x, &dy))
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn broadcast_products_and_their_gradients_equal_plain_loops() {
    let (c, n, h, w) = (3, 4, 5, 3);
    let hw = h * w;
    let a = values(c * n * hw, 7);
    let g = values(c * n * hw, 8);
    for (shape, how) in [((c, h, w), Broadcast::Same), ((c, 1, 1), Broadcast::Channel), ((1, h, w), Broadcast::Spatial)]
    {
        assert_eq!(Broadcast::of((c, h, w), shape), how);
        let b = values(shape.0 * shape.1 * shape.2 * n, 9);
        // Where element (ch, ni, p) of `a` meets `b`.
        let at = |ch: usize, ni: usize, p: usize| match how {
            Broadcast::Same => (ch * n + ni) * hw + p,
            Broadcast::Channel => ch * n + ni,
            Broadcast::Spatial => ni * hw + p,
        };
        let mut want = vec![0f32; a.len()];
        let mut want_db = vec![0f32; b.len()];
        for ch in 0..c {
            for ni in 0..n {
                for p in 0..hw {
                    let i = (ch * n + ni) * hw + p;
                    want[i] = a[i] * b[at(ch, ni, p)];
                    want_db[at(ch, ni, p)] += g[i] * a[i];
                }
            }
        }
        assert_eq!(how.mul(&a, &b, n, hw), want, "{how:?}");
        assert!(rel(&how.reduce(&g, &a, n, hw), &want_db) < 1e-6, "{how:?}");
    }
}

/// Both gradients of a product in one pass, in place, are the same bits as the two passes' ([`Broadcast::mul`] of
/// the output gradient, [`Broadcast::reduce`]), on values longer than the kernels' grain too.
#[test]
fn broadcast_backward_in_place_equals_its_two_passes() {
    for (c, n, h, w) in [(3, 4, 5, 3), (5, 3, 50, 60)] {
        let hw = h * w;
        let a = values(c * n * hw, 17);
        let g = values(c * n * hw, 18);
        for shape in [(c, h, w), (c, 1, 1), (1, h, w)] {
            let how = Broadcast::of((c, h, w), shape);
            let b = values(shape.0 * shape.1 * shape.2 * n, 19);
            let mut da = g.clone();
            let db = how.backward_in_place(&mut da, &a, &b, n, hw);
            assert_eq!(da, how.mul(&g, &b, n, hw), "{how:?} {c}×{n}×{hw}");
            assert_eq!(db, how.reduce(&g, &a, n, hw), "{how:?} {c}×{n}×{hw}");
        }
    }
}

#[test]
fn one_value_per_image_times_a_vector_per_image() {
    // (3, 1, 1) times (1, 1, 1) over 2 images: the single value of each image scales its three channels.
    let how = Broadcast::of((3, 1, 1), (1, 1, 1));
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // channel-major: (channel, image)
    assert_eq!(how.mul(&a, &[10.0, 100.0], 2, 1), [10.0, 200.0, 30.0, 400.0, 50.0, 600.0]);
    assert_eq!(how.reduce(&[1.0; 6], &a, 2, 1), [9.0, 12.0]);
}

#[test]
fn maxima_take_the_first_maximum_and_nan_wins() {
    // Channel maximum over 3 channels of 4 positions: a tie (first channel wins), a NaN (wins), -inf everywhere.
    let x = [
        1.0,
        f32::NEG_INFINITY,
        0.0,
        2.0, // channel 0
        1.0,
        f32::NEG_INFINITY,
        f32::NAN,
        3.0, // channel 1
        0.5,
        f32::NEG_INFINITY,
        5.0,
        3.0, // channel 2
    ];
    let (y, arg) = channel_max(&x, 3);
    assert_eq!(arg, [0, 0, 1, 1]);
    assert_eq!((y[0], y[1], y[3]), (1.0, f32::NEG_INFINITY, 3.0));
    assert!(y[2].is_nan());
    // The same over whole planes.
    let (y, arg) = plane_max(&[1.0, 4.0, 4.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 2.0, f32::NAN, f32::NAN], 4);
    assert_eq!(arg, [1, 2]);
    assert_eq!(y[0], 4.0);
    assert!(y[1].is_nan());
    let (y, arg) = plane_max(&[f32::NEG_INFINITY; 3], 3);
    assert_eq!((y[0], arg[0]), (f32::NEG_INFINITY, 0));
}

/// The channel maximum in blocks (full and partial) and the plane maximum in lanes (planes not a multiple of the
/// lane count; ties and NaN in later blocks) equal plain loops.
#[test]
fn blocked_maxima_equal_plain_loops() {
    let first_max = |v: &mut dyn Iterator<Item = f32>| {
        let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
        for (i, x) in v.enumerate() {
            if at == usize::MAX || x > best || (x.is_nan() && !best.is_nan()) {
                (best, at) = (x, i);
            }
        }
        (best, at as u32)
    };
    let same = |a: f32, b: f32| a == b || (a.is_nan() && b.is_nan());
    let (c, m) = (5, 1_500);
    let mut x = values(c * m, 11);
    x[3 * m + 1_200] = f32::NAN;
    x[4 * m + 1_200] = f32::NAN;
    let (y, arg) = channel_max(&x, c);
    for p in 0..m {
        let (best, at) = first_max(&mut (0..c).map(|ch| x[ch * m + p]));
        assert_eq!(arg[p], at, "position {p}");
        assert!(same(y[p], best), "position {p}");
    }
    for hw in [1usize, 15, 16, 17, 49, 196] {
        let mut x = values(3 * hw, hw as u64);
        x[2 * hw + hw / 2] = f32::NAN; // the third plane holds a NaN
        x[hw + hw - 1] = 1e9; // the second plane's maximum is its last value
        let (y, arg) = plane_max(&x, hw);
        for (k, plane) in x.chunks(hw).enumerate() {
            let (best, at) = first_max(&mut plane.iter().copied());
            assert_eq!(arg[k], at, "plane {k} of {hw}");
            assert!(same(y[k], best), "plane {k} of {hw}");
        }
    }
}

/// Each gradient added in place equals the whole gradient added afterwards.
#[test]
fn gradients_added_in_place_equal_whole_ones_added() {
    let (c, n, hw) = (3, 2, 10);
    let base = values(c * n * hw, 21);
    let added = |whole: Vec<f32>| -> Vec<f32> { base.iter().zip(&whole).map(|(a, b)| a + b).collect() };
    let into = |f: &dyn Fn(&mut [f32])| {
        let mut d = base.clone();
        f(&mut d);
        d
    };
    let g = values(c * n, 22);
    let arg: Vec<u32> = (0..c * n).map(|i| (i * 7 % hw) as u32).collect();
    assert_eq!(into(&|d| scatter_into(&arg, &g, 1, d)), added(scatter(&arg, &g, 1, hw)));
    assert_eq!(into(&|d| spread_into(&g, d)), added(spread(&g, hw)));
    let g = values(n * hw, 23);
    let arg: Vec<u32> = (0..n * hw).map(|p| (p % c) as u32).collect();
    let picked = per_channel(&g, c, |ch, p, v| if arg[p] as usize == ch { v } else { 0.0 });
    assert_eq!(into(&|d| pick_into(&arg, &g, d)), added(picked));
    assert_eq!(into(&|d| add_to_channels(&g, 0.25, d)), added(per_channel(&g, c, |_, _, v| 0.25 * v)));
    let a = values(c * n * hw, 24);
    for (shape, b) in
        [((c, 1, 1), values(c * n, 25)), ((1, 2, 5), values(n * hw, 26)), ((c, 2, 5), values(c * n * hw, 27))]
    {
        let how = Broadcast::of((c, 2, 5), shape);
        assert_eq!(into(&|d| how.mul_into(&a, &b, n, hw, d)), added(how.mul(&a, &b, n, hw)), "{how:?}");
    }
}

#[test]
fn window_maxima_equal_plain_loops_with_cut_windows() {
    for (h, w) in [(4usize, 4usize), (5, 7), (3, 2), (1, 1), (14, 14), (28, 28), (9, 23)] {
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let mut x = values(2 * h * w, (h * w) as u64);
        x[h * w - 1] = f32::NAN;
        let (y, arg) = max_pool(&x, (h, w), (ho, wo));
        for (pl, plane) in x.chunks(h * w).enumerate() {
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (iy, ix) = (2 * oy + dy, 2 * ox + dx);
                        if iy < h && ix < w {
                            let v = plane[iy * w + ix];
                            if at == usize::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                                (best, at) = (v, iy * w + ix);
                            }
                        }
                    }
                    let o = pl * ho * wo + oy * wo + ox;
                    assert_eq!(arg[o] as usize, at, "{h}×{w} window ({oy}, {ox})");
                    assert!(y[o] == best || (y[o].is_nan() && best.is_nan()));
                }
            }
        }
    }
}

#[test]
fn channel_mean_and_spreads_equal_plain_loops() {
    let (c, m) = (5, 40_000);
    let x = values(c * m, 3);
    let want: Vec<f32> = (0..m).map(|p| (0..c).fold(0f32, |s, ch| s + x[ch * m + p]) / c as f32).collect();
    assert_eq!(channel_mean(&x, c), want);
    let g = values(m, 4);
    let dx = per_channel(&g, c, |ch, p, v| if p % c == ch { v } else { 0.0 });
    assert!((0..c * m).all(|i| dx[i] == if (i % m) % c == i / m { g[i % m] } else { 0.0 }));
    assert_eq!(spread(&[2.0, -4.0], 4), [0.5, 0.5, 0.5, 0.5, -1.0, -1.0, -1.0, -1.0]);
}

/// BatchNorm's statistics and backward sums (in interleaved partial sums) equal plain float64 loops, on planes whose
/// length is and is not a multiple of the lane count, with an offset mean (the variance's cancellation).
#[test]
fn batch_norm_sums_equal_plain_loops() {
    for (c, m) in [(3, 37), (2, 64), (1, 5), (4, 1)] {
        let x: Vec<f32> = values(c * m, 50 + m as u64).iter().map(|v| v + 3.0).collect();
        let dy = values(c * m, 60 + m as u64);
        let (mean, var) = batch_stats(&x, c);
        let gamma = values(c, 70);
        let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
        let mut dx = dy.clone();
        let (dgamma, dbeta) = batch_norm_backward(&x, &mut dx, &mean, &invstd, &gamma);
        for ch in 0..c {
            let (xs, gs) = (&x[ch * m..][..m], &dy[ch * m..][..m]);
            let mu = xs.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
            let v = xs.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / m as f64;
            assert!(
                (mean[ch] as f64 - mu).abs() <= 1e-6 * mu.abs() && (var[ch] as f64 - v).abs() <= 1e-6 * v,
                "{c}×{m}"
            );
            let (mu, is) = (mean[ch], invstd[ch]);
            let sdy: f64 = gs.iter().map(|&g| g as f64).sum();
            let sdyx: f64 = xs.iter().zip(gs).map(|(&v, &g)| (g * (v - mu) * is) as f64).sum();
            assert!((dbeta[ch] as f64 - sdy).abs() < 1e-5 && (dgamma[ch] as f64 - sdyx).abs() < 1e-5, "{c}×{m}");
            let (a, b, k) = ((sdy / m as f64) as f32, (sdyx / m as f64) as f32, gamma[ch] * is);
            let want: Vec<f32> = xs.iter().zip(gs).map(|(&v, &g)| k * (g - a - (v - mu) * is * b)).collect();
            assert!(rel(&dx[ch * m..][..m], &want) < 1e-5, "{c}×{m}");
        }
    }
}

#[test]
fn softmax_equals_float64_and_gives_no_subnormal_shares() {
    // Three runs of 49: random logits; a peaked one (an attention mask), whose far tail is 30–100 below its peak,
    // where exp alone would give float32 subnormals (e^-88 and below); one exactly at the floor's edge.
    let len = 49;
    let mut x = values(len, 7);
    x.extend((0..len).map(|i| if i == 5 { 10.0 } else { 10.0 - 30.0 - (i as f32) * 1.5 }));
    x.extend((0..len).map(|i| match i {
        0 => 0.0,
        1 => -SOFTMAX_FLOOR + 0.01,
        2 => -SOFTMAX_FLOOR - 0.01,
        _ => -200.0,
    }));
    let y = softmax_rows(&x, len);
    for (r, (run, got)) in x.chunks(len).zip(y.chunks(len)).enumerate() {
        let max = run.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = run.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (j, (&v, &p)) in run.iter().zip(got).enumerate() {
            let exact = (v as f64 - max).exp() / sum;
            if (v as f64) - max < -(SOFTMAX_FLOOR as f64) {
                assert_eq!(p, 0.0, "run {r}, entry {j}: {exact:e} is below the floor");
            } else {
                assert!(
                    (p as f64 - exact).abs() <= 1e-6 * exact.max(1e-3),
                    "run {r}, entry {j}: {p:e} against {exact:e}"
                );
            }
        }
    }
    // The floor's edge: the entry just above it keeps its share, the one just below gets none.
    let edge = &y[2 * len..];
    assert!(edge[1] > 0.0 && edge[2] == 0.0, "{:e} {:e}", edge[1], edge[2]);
    // No subnormal share, and none in the gradient it passes back (the costly operands).
    let g = values(x.len(), 8);
    let dx = softmax_rows_backward(&y, &g, len);
    assert!(y.iter().chain(&dx).all(|v| !v.is_subnormal()), "a subnormal value");
}

#[test]
fn flipped_convolution_is_the_input_gradient() {
    // (n, c_in, h, w, c_out, k, pad): WARN's and RAN's 3×3 over a few positions, a 1×1 (RAN's bottlenecks), a 5×5,
    // rectangular maps, one image and several.
    let cases = [(1, 6, 4, 4, 5, 3, 1), (3, 4, 7, 5, 6, 3, 1), (2, 8, 4, 4, 12, 1, 0), (1, 3, 6, 9, 4, 5, 2)];
    for (seed, &(n, c_in, h, w, c_out, k, pad)) in cases.iter().enumerate() {
        let g = ConvGeometry { n, input: (c_in, h, w), c_out, k, stride: 1, pad };
        let t = g.transposed().expect("stride 1, same padding");
        assert_eq!((t.input, t.c_out, t.positions()), ((c_out, h, w), c_in, g.positions()));
        let weight = values(c_out * g.rows(), 400 + seed as u64);
        let dy = values(c_out * g.positions(), 500 + seed as u64);
        let got = t.forward(&dy, &flipped_weight(&weight, c_out, c_in, k), None);
        let mut dcols = conv_cols_grad(&g, &weight, &dy);
        let want = if g.is_pointwise() {
            dcols
        } else {
            let mut dx = vec![0f32; c_in * n * h * w];
            g.col2im(&mut dcols, &mut dx);
            dx
        };
        assert!(rel(&got, &want) < 1e-6, "case {seed}: {:e}", rel(&got, &want));
    }
    // Not a convolution of the same kind: stride 2, or padding other than "same".
    let strided = ConvGeometry { n: 1, input: (4, 8, 8), c_out: 4, k: 3, stride: 2, pad: 1 };
    let valid = ConvGeometry { stride: 1, pad: 0, ..strided };
    assert!(strided.transposed().is_none() && valid.transposed().is_none());
}
