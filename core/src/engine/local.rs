//! Forward passes of copies of one image that differ from it only inside a rectangle (an occluded window, an
//! ablated patch): each layer is recomputed only where its output can differ — a convolution on the changed
//! rectangle grown by its kernel, element-wise layers on that rectangle, pooling on the windows that touch it —
//! and every other value is the image's own activation. A 4×4 window on MNIST's SimpleCNN changes about 15 % of the
//! second convolution's outputs and half of the third's. A convolution adds to the image's own output the
//! convolution of the copy's difference from the image, whose products grow with the changed input rather than
//! with the output region it reaches (all copies in one matrix product per layer, every kernel tap at once); the
//! first linear layer after the convolutions likewise adds the product of the difference over the changed
//! positions only, copies with the same changed positions in one product. A copy's values are kept channel-last
//! (position by position, the channels of one position contiguous), so that every kernel tap, pooling window and
//! scale is one vector operation over the channels. Layers after that (or after a global pooling) run in full; a
//! plan with CBAM blocks (global attention) is not served.

use super::cpu::{Layer, Plan};
use crate::ops::{sgemm, transpose_planes, window_max};
use rayon::prelude::*;

/// A rectangle of positions, rows `y0..y1`, columns `x0..x1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
        self.height() * self.width()
    }

    fn height(&self) -> usize {
        self.y1 - self.y0
    }

    fn width(&self) -> usize {
        self.x1 - self.x0
    }

    fn contains(&self, y: usize, x: usize) -> bool {
        (self.y0..self.y1).contains(&y) && (self.x0..self.x1).contains(&x)
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

/// At most this many copies per task: each runs its own products on one thread.
const CHUNK: usize = 32;

/// A copy's values inside `rect` (elsewhere it equals the image's activation), channel-last: `rect.area() × c`,
/// positions row by row.
struct Region {
    rect: Rect,
    values: Vec<f32>,
}

impl Region {
    /// The values of a whole channel-major map (`c×h×w`) inside `rect`.
    fn of_map(x: &[f32], (c, h, w): (usize, usize, usize), rect: Rect) -> Region {
        let mut values = Vec::with_capacity(rect.area() * c);
        for y in rect.y0..rect.y1 {
            for xx in rect.x0..rect.x1 {
                values.extend((0..c).map(|ch| x[ch * h * w + y * w + xx]));
            }
        }
        Region { rect, values }
    }

    /// The copy's values at row `y` of its rectangle minus the image's (`base`: channel-last, `w` wide), appended
    /// to `out`.
    fn extend_difference(&self, y: usize, base: &[f32], (c, w): (usize, usize), out: &mut Vec<f32>) {
        let r = &self.rect;
        let len = r.width() * c;
        let mine = &self.values[(y - r.y0) * len..][..len];
        out.extend(mine.iter().zip(&base[(y * w + r.x0) * c..][..len]).map(|(v, b)| v - b));
    }
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
        if changed.is_empty() {
            return Some(Vec::new());
        }
        let (layers, shapes, _) = self.parts();
        let local = self.local_layers();
        let weights = self.local_weights();
        let base = self.activations_of(image);
        // The image's activations channel-last where the local pass reads them: a convolution's input and output, a
        // pooling layer's input, the first whole-map layer's input (affine and ReLU outputs are not read).
        let mut read = vec![false; local + 1];
        read[local] = true;
        for (i, layer) in layers[..local].iter().enumerate() {
            match layer {
                Layer::Conv { .. } => (read[i], read[i + 1]) = (true, true),
                Layer::MaxPool2 => read[i] = true,
                _ => {}
            }
        }
        let base_last: Vec<Vec<f32>> = (0..=local)
            .map(|i| {
                let (c, h, w) = shapes[i];
                if read[i] {
                    transpose_planes(&base[i], c, h * w, 1)
                } else {
                    Vec::new()
                }
            })
            .collect();
        let (n, per) = (changed.len(), image.len());
        // Equal chunks, as many as the threads take evenly.
        let threads = rayon::current_num_threads().max(1);
        let chunk = n.div_ceil(n.div_ceil(CHUNK).next_multiple_of(threads)).max(1);
        let regions: Vec<Region> = (copies.par_chunks(chunk * per).zip(changed.par_chunks(chunk)))
            .flat_map_iter(|(xs, rects)| self.local_chunk(&base_last, weights, xs, rects))
            .collect();
        let mut next = local;
        let mut y = match layers.get(local) {
            Some(Layer::Linear { out, .. }) => {
                next += 1;
                linear_regions(&regions, shapes[local], &weights[local], *out, (&base_last[local], &base[local + 1]))
            }
            _ => fill(&base[local], shapes[local], &regions),
        };
        for i in next..layers.len() {
            y = self.layer_output(i, &y, n);
        }
        Some(y)
    }

    /// The copies' regions at the input of the first whole-map layer.
    fn local_chunk(&self, base: &[Vec<f32>], weights: &[Vec<f32>], xs: &[f32], rects: &[Rect]) -> Vec<Region> {
        let (layers, shapes, _) = self.parts();
        let per = xs.len() / rects.len().max(1);
        let mut regions: Vec<Region> =
            rects.iter().enumerate().map(|(j, r)| Region::of_map(&xs[j * per..][..per], shapes[0], *r)).collect();
        for (i, layer) in layers[..self.local_layers()].iter().enumerate() {
            let (c, _, w) = shapes[i];
            let (_, ho, wo) = shapes[i + 1];
            match layer {
                Layer::Conv { c_out, k, pad, .. } => {
                    let bases = (base[i].as_slice(), base[i + 1].as_slice());
                    regions = conv_regions(&regions, (c, w), &weights[i], *c_out, (*k, *pad), bases, (ho, wo));
                }
                Layer::Affine { scale, shift } => {
                    for r in &mut regions {
                        for px in r.values.chunks_exact_mut(c) {
                            px.iter_mut().zip(scale.iter().zip(shift)).for_each(|(v, (s, t))| *v = *v * s + t);
                        }
                    }
                }
                Layer::Relu => regions.iter_mut().for_each(|r| r.values.iter_mut().for_each(|v| *v = v.max(0.0))),
                Layer::MaxPool2 => {
                    regions = regions.iter().map(|r| pool_region(r, &base[i], (c, w), (ho, wo))).collect()
                }
                _ => unreachable!("local_layers counts only local layers"),
            }
        }
        regions
    }
}

/// A convolution's output region for each copy (`regions`: its input, `c` channels, maps `w` wide): the image's
/// own output (`base_out`) plus the convolution of the difference from the image's input (`base_in`), both
/// channel-last. The difference is multiplied once — one matrix product of every copy's changed positions (rows)
/// by the weight `c × (k·k·c_out)` — and each position's product for each tap added, as one vector over the output
/// channels, at the output it reaches: input (iy, ix) reaches output (iy + pad − ky, ix + pad − kx).
fn conv_regions(
    regions: &[Region],
    (c, w): (usize, usize),
    weight: &[f32],
    c_out: usize,
    (k, pad): (usize, usize),
    (base_in, base_out): (&[f32], &[f32]),
    (ho, wo): (usize, usize),
) -> Vec<Region> {
    let total: usize = regions.iter().map(|r| r.rect.area()).sum();
    let mut delta = Vec::with_capacity(total * c);
    for r in regions {
        for y in r.rect.y0..r.rect.y1 {
            r.extend_difference(y, base_in, (c, w), &mut delta);
        }
    }
    let m = k * k * c_out;
    let mut products = vec![0f32; total * m];
    sgemm(total, m, c, &delta, (c as isize, 1), weight, (m as isize, 1), &mut products, false, false);
    let mut out = Vec::with_capacity(regions.len());
    let mut rows = products.chunks_exact(m);
    for r in regions {
        let (i, o) = (r.rect, r.rect.through_conv(k, pad, ho, wo));
        let ow = o.width();
        let mut values = Vec::with_capacity(o.area() * c_out);
        for oy in o.y0..o.y1 {
            values.extend_from_slice(&base_out[(oy * wo + o.x0) * c_out..][..ow * c_out]);
        }
        for iy in i.y0..i.y1 {
            for ix in i.x0..i.x1 {
                let row = rows.next().expect("a product row per changed position");
                for ky in (0..k).filter(|&ky| iy + pad >= ky && iy + pad - ky < ho) {
                    let oy = iy + pad - ky;
                    for kx in (0..k).filter(|&kx| ix + pad >= kx && ix + pad - kx < wo) {
                        let ox = ix + pad - kx;
                        let dst = &mut values[((oy - o.y0) * ow + ox - o.x0) * c_out..][..c_out];
                        let src = &row[(ky * k + kx) * c_out..][..c_out];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    }
                }
            }
        }
        out.push(Region { rect: o, values });
    }
    out
}

/// 2×2 max-pooling (output `ho×wo`) of the windows that read a copy's region, the image's activation (`base`,
/// channel-last, `w` wide) outside it.
fn pool_region(r: &Region, base: &[f32], (c, w): (usize, usize), (ho, wo): (usize, usize)) -> Region {
    let (i, o) = (r.rect, r.rect.through_pool(ho, wo));
    let at = |y: usize, x: usize| -> &[f32] {
        if i.contains(y, x) {
            &r.values[((y - i.y0) * i.width() + x - i.x0) * c..][..c]
        } else {
            &base[(y * w + x) * c..][..c]
        }
    };
    let mut values = Vec::with_capacity(o.area() * c);
    for oy in o.y0..o.y1 {
        for ox in o.x0..o.x1 {
            let (a, b) = (at(2 * oy, 2 * ox), at(2 * oy, 2 * ox + 1));
            let (d, e) = (at(2 * oy + 1, 2 * ox), at(2 * oy + 1, 2 * ox + 1));
            values.extend((0..c).map(|ch| window_max([a[ch], b[ch], d[ch], e[ch]])));
        }
    }
    Region { rect: o, values }
}

/// A linear layer (`out` outputs) of the flattened `c×h×w` map for each copy: the image's output (`base_out`)
/// plus the product of the copy's difference from the image's input (`base_in`, channel-last) with the weight
/// rows of its changed positions (`weight`: position-major, `(h·w·c) × out`; a row of changed positions is one
/// contiguous block). Copies with the same rectangle share one product per row.
fn linear_regions(
    regions: &[Region],
    (c, _, w): (usize, usize, usize),
    weight: &[f32],
    out: usize,
    (base_in, base_out): (&[f32], &[f32]),
) -> Vec<f32> {
    let mut order: Vec<usize> = (0..regions.len()).collect();
    order.sort_by_key(|&j| regions[j].rect);
    let groups: Vec<&[usize]> =
        order.chunk_by(|&a, &b| regions[a].rect == regions[b].rect).flat_map(|g| g.chunks(CHUNK)).collect();
    let products: Vec<Vec<f32>> = groups
        .par_iter()
        .map(|group| {
            let r = regions[group[0]].rect;
            let (row, len) = (r.width() * c, r.area() * c);
            let mut delta = Vec::with_capacity(group.len() * len);
            for &j in group.iter() {
                for y in r.y0..r.y1 {
                    regions[j].extend_difference(y, base_in, (c, w), &mut delta);
                }
            }
            let mut y: Vec<f32> = group.iter().flat_map(|_| base_out.iter().copied()).collect();
            for (dy, yy) in (r.y0..r.y1).enumerate() {
                let rows = &weight[(yy * w + r.x0) * c * out..][..row * out];
                let a = &delta[dy * row..];
                sgemm(group.len(), out, row, a, (len as isize, 1), rows, (out as isize, 1), &mut y, true, false);
            }
            y
        })
        .collect();
    let mut y = vec![0f32; regions.len() * out];
    for (group, values) in groups.iter().zip(&products) {
        for (&j, v) in group.iter().zip(values.chunks_exact(out)) {
            y[j * out..][..out].copy_from_slice(v);
        }
    }
    y
}

/// Whole channel-major maps: the image's activation (`base`) with each copy's region written in.
fn fill(base: &[f32], (c, h, w): (usize, usize, usize), regions: &[Region]) -> Vec<f32> {
    let mut y = Vec::with_capacity(regions.len() * base.len());
    for r in regions {
        let from = y.len();
        y.extend_from_slice(base);
        let map = &mut y[from..];
        let mut values = r.values.chunks_exact(c);
        for yy in r.rect.y0..r.rect.y1 {
            for xx in r.rect.x0..r.rect.x1 {
                let px = values.next().expect("a value per channel and position");
                for (ch, v) in px.iter().enumerate() {
                    map[ch * h * w + yy * w + xx] = *v;
                }
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

    /// Copies changed inside rectangles (corners, edges, the middle, the whole image; some rectangles shared by
    /// several copies, changed differently): the local pass equals the full forward pass to float rounding, for
    /// SimpleCNN and CAM on both data sets.
    #[test]
    fn local_forward_equals_full_forward() {
        for dataset in DatasetKind::ALL {
            for arch in [Arch::SimpleCnn, Arch::Cam] {
                let m = crate::engine::constant_model(arch, dataset, 3);
                let plan = crate::engine::plan_of(m.engine().unwrap()).unwrap();
                let (c, s) = (dataset.channels(), dataset.side());
                let image = random(&[c * s * s], 1).unwrap().to_vec1::<f32>().unwrap();
                let corner = Rect { y0: 0, y1: 4, x0: 0, x1: 4 };
                let middle = Rect { y0: 10, y1: 13, x0: 7, x1: 8 };
                let rects = [
                    corner,
                    Rect { y0: s - 3, y1: s, x0: s - 5, x1: s },
                    middle,
                    Rect { y0: 5, y1: 6, x0: 0, x1: s },
                    Rect::full(s, s),
                    corner,
                    middle,
                    corner,
                ];
                let mut copies = Vec::new();
                for (j, r) in rects.iter().enumerate() {
                    let noise = random(&[c * s * s], 2 + j as u64).unwrap().to_vec1::<f32>().unwrap();
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
                assert_eq!(plan.forward_local(&image, &[], &[]), Some(Vec::new()), "no copies, no logits");
            }
        }
        let cbam = crate::engine::constant_model(Arch::Cbam, DatasetKind::Mnist, 3);
        assert!(!crate::engine::plan_of(cbam.engine().unwrap()).unwrap().serves_local());
    }
}
