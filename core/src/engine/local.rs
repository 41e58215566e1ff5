//! Forward passes of copies of one image that differ from it only inside a rectangle (an occluded window, an
//! ablated patch): each layer is recomputed only where its output can differ — a convolution on the changed
//! rectangle grown by its kernel, element-wise layers on that rectangle, pooling on the windows that touch it —
//! and every other value is the image's own activation. A 4×4 window on MNIST's SimpleCNN changes about 15 % of the
//! second convolution's outputs and half of the third's, so the copies cost a third of full forward passes. A
//! convolution adds the image's own output and the convolution of the copy's difference from the image, whose
//! products grow with the changed input rather than with the output region it reaches (all copies in one matrix
//! product per layer, every kernel tap at once). Layers whose output depends on the whole map
//! (linear, global pooling) run in full from there on; a plan with CBAM blocks (global attention) is not served.

use super::cpu::{Layer, Plan};
use crate::ops::sgemm;
use rayon::prelude::*;

/// A rectangle of positions, rows `y0..y1`, columns `x0..x1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
}

impl Rect {
    pub fn full(h: usize, w: usize) -> Rect {
        Rect { y0: 0, y1: h, x0: 0, x1: w }
    }

    fn area(&self) -> usize {
        (self.y1 - self.y0) * (self.x1 - self.x0)
    }

    /// The outputs of a stride-1 `k×k` convolution with padding `pad` (output `h×w`) that read this rectangle.
    fn through_conv(&self, k: usize, pad: usize, h: usize, w: usize) -> Rect {
        let reach = k - 1 - pad;
        Rect {
            y0: self.y0.saturating_sub(reach),
            y1: (self.y1 + pad).min(h),
            x0: self.x0.saturating_sub(reach),
            x1: (self.x1 + pad).min(w),
        }
    }

    /// The 2×2 pooling windows (output `h×w`) that read this rectangle.
    fn through_pool(&self, h: usize, w: usize) -> Rect {
        Rect {
            y0: (self.y0 / 2).min(h),
            y1: self.y1.div_ceil(2).min(h),
            x0: (self.x0 / 2).min(w),
            x1: self.x1.div_ceil(2).min(w),
        }
    }
}

/// Copies per task: each runs its own products on one thread.
const CHUNK: usize = 32;

/// What a copy holds between layers: its whole map (`Full`), or only the values of its changed rectangle, channel by
/// channel (`Region`; elsewhere it equals the image's activation).
enum State {
    Full(Vec<f32>, Vec<Rect>),
    Region(Vec<Vec<f32>>, Vec<Rect>),
}

impl Plan {
    /// Whether [`Plan::forward_local`] serves this plan.
    pub fn serves_local(&self) -> bool {
        !self.parts().0.iter().any(|l| matches!(l, Layer::Cbam(_)))
    }

    /// Logits of `copies` (`n` images) of `image`, copy `j` differing from it only inside `changed[j]`; equal to
    /// [`Plan::forward`] of the copies up to the order of float sums. `None` when the plan has CBAM blocks.
    pub fn forward_local(&self, image: &[f32], copies: &[f32], changed: &[Rect]) -> Option<Vec<f32>> {
        if !self.serves_local() {
            return None;
        }
        let base = self.activations_of(image);
        let taps = self.conv_by_tap();
        let per = image.len();
        let classes = self.classes();
        let mut logits = vec![0f32; changed.len() * classes];
        logits
            .par_chunks_mut(CHUNK * classes)
            .zip(copies.par_chunks(CHUNK * per))
            .zip(changed.par_chunks(CHUNK))
            .for_each(|((out, xs), rects)| out.copy_from_slice(&self.local_chunk(&base, taps, xs, rects)));
        Some(logits)
    }

    fn local_chunk(&self, base: &[Vec<f32>], taps: &[Vec<f32>], xs: &[f32], rects: &[Rect]) -> Vec<f32> {
        let (layers, shapes, _) = self.parts();
        let n = rects.len();
        let mut state = State::Full(xs.to_vec(), rects.to_vec());
        for (i, layer) in layers.iter().enumerate() {
            let (c, h, w) = shapes[i];
            let (_, ho, wo) = shapes[i + 1];
            state = match (layer, state) {
                (Layer::Conv { c_out, k, pad, .. }, State::Full(x, rects)) => {
                    let out: Vec<Rect> = rects.iter().map(|r| r.through_conv(*k, *pad, ho, wo)).collect();
                    let bases = (base[i].as_slice(), base[i + 1].as_slice());
                    let regs =
                        conv_regions(&x, (c, h, w), &taps[i], *c_out, (*k, *pad), (&rects, &out), bases, (ho, wo));
                    State::Region(regs, out)
                }
                (Layer::Affine { scale, shift }, State::Region(mut regs, rects)) => {
                    for (reg, r) in regs.iter_mut().zip(&rects) {
                        for (ch, plane) in reg.chunks_mut(r.area().max(1)).enumerate() {
                            plane.iter_mut().for_each(|v| *v = *v * scale[ch] + shift[ch]);
                        }
                    }
                    State::Region(regs, rects)
                }
                (Layer::Relu, State::Region(mut regs, rects)) => {
                    regs.iter_mut().for_each(|r| r.iter_mut().for_each(|v| *v = v.max(0.0)));
                    State::Region(regs, rects)
                }
                (Layer::MaxPool2, State::Region(regs, rects)) => {
                    let (before, after) = (&base[i], &base[i + 1]);
                    let mut y = Vec::with_capacity(n * after.len());
                    let mut out_rects = Vec::with_capacity(n);
                    for (reg, r) in regs.iter().zip(&rects) {
                        let o = r.through_pool(ho, wo);
                        let from = y.len();
                        y.extend_from_slice(after);
                        pool_region(reg, r, before, (c, h, w), &o, &mut y[from..]);
                        out_rects.push(o);
                    }
                    State::Full(y, out_rects)
                }
                (_, state) => {
                    // Everything else on whole maps: a region is filled in first.
                    let x = match state {
                        State::Full(x, _) => x,
                        State::Region(regs, rects) => fill(&base[i], (c, h, w), &regs, &rects),
                    };
                    State::Full(self.layer_output(i, &x, n), vec![Rect::full(ho, wo); n])
                }
            };
        }
        match state {
            State::Full(x, _) => x,
            State::Region(regs, rects) => fill(&base[layers.len()], shapes[layers.len()], &regs, &rects),
        }
    }
}

/// The convolution's outputs inside `out[j]` for each copy `j`, channel by channel, where the copy's input
/// (`x`: whole maps) differs from the image's (`base_in`) only inside `inp[j]`: the image's own output
/// (`base_out`) plus the convolution of the difference. The difference is multiplied once per kernel tap — one
/// matrix product, the tap-major weight `taps` (`(k·k·c_out) × c`) by `c ×` every copy's changed positions — and each tap's product added at its
/// offset, so that the work grows with the changed input, not with the output region the kernel spreads it over
/// (a 3×3 region of a 7×7 map reaches 5×5 outputs: 25 × 9 products of an input's channels recomputed, 9 × 9 here).
#[allow(clippy::too_many_arguments)]
fn conv_regions(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    taps: &[f32],
    c_out: usize,
    (k, pad): (usize, usize),
    (inp, out): (&[Rect], &[Rect]),
    (base_in, base_out): (&[f32], &[f32]),
    (ho, wo): (usize, usize),
) -> Vec<Vec<f32>> {
    let total: usize = inp.iter().map(Rect::area).sum();
    // delta: c × total, each copy's change inside its input rectangle.
    let mut delta = vec![0f32; c * total];
    let mut start = 0;
    for (j, r) in inp.iter().enumerate() {
        let xj = &x[j * c * h * w..(j + 1) * c * h * w];
        let rw = r.x1 - r.x0;
        for ci in 0..c {
            for y in r.y0..r.y1 {
                let (src, b) = (&xj[ci * h * w + y * w + r.x0..][..rw], &base_in[ci * h * w + y * w + r.x0..][..rw]);
                let dst = &mut delta[ci * total + start + (y - r.y0) * rw..][..rw];
                dst.iter_mut().zip(src.iter().zip(b)).for_each(|(d, (s, b))| *d = s - b);
            }
        }
        start += r.area();
    }
    let m = k * k * c_out;
    let mut y = vec![0f32; m * total];
    sgemm(m, total, c, taps, (c as isize, 1), &delta, (total as isize, 1), &mut y, false, false);
    let mut regs = Vec::with_capacity(out.len());
    let mut start = 0;
    for (r, o) in inp.iter().zip(out) {
        let (rw, ow, oa) = (r.x1 - r.x0, o.x1 - o.x0, o.area());
        // The image's output in the region, then each tap's share of the change at its offset: input (iy, ix)
        // reaches output (iy + pad − ky, ix + pad − kx).
        let mut reg = Vec::with_capacity(c_out * oa);
        for co in 0..c_out {
            for oy in o.y0..o.y1 {
                reg.extend_from_slice(&base_out[co * ho * wo + oy * wo + o.x0..][..ow]);
            }
        }
        for ky in 0..k {
            for kx in 0..k {
                // Input columns whose output column ix + pad − kx lies in 0..wo.
                let lo = (r.x0 + pad).max(kx) - pad;
                let hi = (r.x1 + pad).min(wo + kx).saturating_sub(pad).max(lo);
                if lo == hi {
                    continue;
                }
                let t = ky * k + kx;
                for iy in r.y0..r.y1 {
                    let oy = iy + pad;
                    if oy < ky || oy - ky >= ho {
                        continue;
                    }
                    let oy = oy - ky;
                    for co in 0..c_out {
                        let src = &y[(t * c_out + co) * total + start + (iy - r.y0) * rw + (lo - r.x0)..][..hi - lo];
                        let dst = &mut reg[co * oa + (oy - o.y0) * ow + (lo + pad - kx - o.x0)..][..hi - lo];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    }
                }
            }
        }
        regs.push(reg);
        start += r.area();
    }
    regs
}

/// 2×2 max-pooling of the windows in `o` (output coordinates), reading the region's values inside `r` and the
/// image's activation `before` elsewhere, into `y` (one copy's whole output).
fn pool_region(reg: &[f32], r: &Rect, before: &[f32], (c, h, w): (usize, usize, usize), o: &Rect, y: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    let (rw, ra) = (r.x1 - r.x0, r.area());
    // The pooled windows' inputs as one tile per channel: the image's values, the region's written over them.
    let (ty0, tx0, th, tw) = (2 * o.y0, 2 * o.x0, 2 * (o.y1 - o.y0), 2 * (o.x1 - o.x0));
    let mut tile = vec![0f32; th * tw];
    for ch in 0..c {
        let plane = &before[ch * h * w..(ch + 1) * h * w];
        for ty in 0..th {
            tile[ty * tw..(ty + 1) * tw].copy_from_slice(&plane[(ty0 + ty) * w + tx0..][..tw]);
        }
        let (ya, yb) = (r.y0.max(ty0), r.y1.min(ty0 + th));
        let (xa, xb) = (r.x0.max(tx0), r.x1.min(tx0 + tw));
        for yy in (ya..yb).filter(|_| xa < xb) {
            let src = &reg[ch * ra + (yy - r.y0) * rw + (xa - r.x0)..][..xb.saturating_sub(xa)];
            tile[(yy - ty0) * tw + (xa - tx0)..][..src.len()].copy_from_slice(src);
        }
        let out = &mut y[ch * ho * wo..(ch + 1) * ho * wo];
        for oy in 0..o.y1 - o.y0 {
            let (r0, r1) = (&tile[2 * oy * tw..][..tw], &tile[(2 * oy + 1) * tw..][..tw]);
            for ox in 0..o.x1 - o.x0 {
                let window = [r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]];
                out[(o.y0 + oy) * wo + o.x0 + ox] = window[crate::ops::window_argmax(window) as usize];
            }
        }
    }
}

/// Whole maps: the image's activation with each copy's region written in.
fn fill(base: &[f32], (c, h, w): (usize, usize, usize), regs: &[Vec<f32>], rects: &[Rect]) -> Vec<f32> {
    let mut y = Vec::with_capacity(regs.len() * base.len());
    for (reg, r) in regs.iter().zip(rects) {
        let from = y.len();
        y.extend_from_slice(base);
        let (rw, ra) = (r.x1 - r.x0, r.area());
        for ch in 0..c {
            for yy in r.y0..r.y1 {
                let dst = from + ch * h * w + yy * w + r.x0;
                y[dst..dst + rw].copy_from_slice(&reg[ch * ra + (yy - r.y0) * rw..][..rw]);
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;
    use crate::models::Arch;
    use crate::testing::random;

    /// Copies changed inside rectangles (corners, edges, the middle, the whole image): the local pass equals the
    /// full forward pass to float rounding, for SimpleCNN and CAM on both data sets.
    #[test]
    fn local_forward_equals_full_forward() {
        for dataset in DatasetKind::ALL {
            for arch in [Arch::SimpleCnn, Arch::Cam] {
                let m = crate::engine::constant_model(arch, dataset, 3);
                let plan = crate::engine::plan_of(m.engine().unwrap()).unwrap();
                let (c, s) = (dataset.channels(), dataset.side());
                let image = random(&[c * s * s], 1).unwrap().to_vec1::<f32>().unwrap();
                let noise = random(&[c * s * s], 2).unwrap().to_vec1::<f32>().unwrap();
                let rects = [
                    Rect { y0: 0, y1: 4, x0: 0, x1: 4 },
                    Rect { y0: s - 3, y1: s, x0: s - 5, x1: s },
                    Rect { y0: 10, y1: 13, x0: 7, x1: 8 },
                    Rect { y0: 5, y1: 6, x0: 0, x1: s },
                    Rect::full(s, s),
                ];
                let mut copies = Vec::new();
                for r in &rects {
                    let mut x = image.clone();
                    for ch in 0..c {
                        for y in r.y0..r.y1 {
                            for xx in r.x0..r.x1 {
                                let p = ch * s * s + y * s + xx;
                                x[p] = noise[p];
                            }
                        }
                    }
                    copies.extend(x);
                }
                let want = plan.forward(&copies, rects.len()).unwrap();
                let got = plan.forward_local(&image, &copies, &rects).unwrap();
                let err = crate::testing::max_rel_error(&got, &want, 1.0);
                assert!(err < 1e-5, "{arch} {dataset}: {err}");
            }
        }
        let cbam = crate::engine::constant_model(Arch::Cbam, DatasetKind::Mnist, 3);
        assert!(!crate::engine::plan_of(cbam.engine().unwrap()).unwrap().serves_local());
    }
}
