//! Winograd's minimal filtering for 3×3 convolutions (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
//! Networks"), F(4×4, 3×3) and F(2×2, 3×3): every m×m block of outputs comes from one (m+2)×(m+2) input tile with
//! (m+2)² products instead of 9m², so a stride-1, padding-1 convolution becomes (m+2)² matrix products
//! `M_e = U_e · V_e` (`c_out × c_in` by `c_in × tiles`: 4× fewer multiply-adds than im2col + GEMM with m = 4,
//! 2.25× with m = 2) between cheap transforms: `U = G g Gᵀ` of each filter, `V = Bᵀ d B` of each input tile,
//! `Y = Aᵀ M A` of each output tile.
//!
//! The backward pass is made of the same pieces' adjoints: `dM = A dY Aᵀ`; the input gradient is
//! `B (U_eᵀ · dM_e) Bᵀ` summed over the overlapping tiles, the weight gradient `Gᵀ (Σ_tiles dM_e · V_eᵀ) G`.
//!
//! Each transform is separable (a one-dimensional one along the tile's rows, then along its columns), and every
//! loop runs over a row of tiles side by side, [`LANES`] tiles at a time (one at a time in rows shorter than that).
//! Values are channel-major over the batch (`c × n × h × w`), as the graph executor keeps them. Layouts, with
//! `E = (m+2)²` elements per tile: `U` is `c_out × c_in × E`, `V` and `dM` are `channel × E × tiles` (each channel
//! one contiguous block, written by one task), `M` and `dV` are `E × channel × tiles` (each product's result
//! contiguous). The batch goes through in parts of whole images ([`PART_BYTES`]), so that these buffers take a few MiB
//! rather than several times the layer's activations; the weight gradient sums the parts' products.

use super::{sgemm_batched_long, sgemm_batched_wide};
use rayon::prelude::*;
use std::array::from_fn;
use std::ops::{Add, Mul, Neg, Range, Sub};

/// The smallest image side that goes through F(4×4, 3×3), for precision: with it on 16×16 layers, RAN-92's
/// training-mode logits on CIFAR-10 moved 2.9e-4 from the seed's float64 goldens (`tests/tests/attention_models.rs`;
/// bound 1.4e-4, 1.5× PyTorch's own float32), and with it on 14×14, RAN-56's on MNIST 1.3e-4 (bound 1e-4): 92
/// layers of batch statistics amplify its larger rounding. On 28×28 it moved WARN's MNIST gradient of
/// `group_1.block_0.bn1.bias` 4.4e-2 of the largest from float64 (`executor::tests::training_equals_autograd`, bound
/// 3× candle's float32). Speed alone would have taken it from 12 pixels a side
/// (below that its GEMMs, a quarter of F(2×2, 3×3)'s columns, and its transforms, two or three tiles a row, run far
/// from full speed: 128 images and channels, forward and backward, 8×8 71 against 41 ms; at 14×14, 64 channels, 39
/// against 59, 160 channels 169 against 205, F(4×4) against the hand-written F(2×2) this module had before).
const F4_FROM: usize = 32;

/// The most bytes a part of the batch may take in any one of the transforms' buffers ([`Winograd::parts`]). A WARN
/// training step, batch 128 (`results/bench/winograd-parts-ab-2026-12-05.txt`): CIFAR-10 3.09–3.23 s and 1,919 MiB
/// at peak against 3.27–3.41 s and 2,009 MiB in one part, MNIST 2.83–2.88 s and 1,481 MiB against 2.95–3.04 s and
/// 1,615 MiB; 4 MiB parts were slower (3.27–3.36 s on CIFAR-10). RAN: the same time and peak.
const PART_BYTES: usize = 16 << 20;

/// The least `c_in·c_out / (c_in + c_out)` that goes through F(4×4, 3×3): below it its transforms (more arithmetic
/// per pixel than F(2×2, 3×3)'s) cost more than its products save. 128 images of 28×28, forward and backward: 16 to
/// 16 channels (8 here) 36.4 ms against F(2×2)'s 33.1; 64 to 64 (32) 220 against 256.
const F4_CHANNELS: usize = 16;

/// A 3×3, stride-1, padding-1 convolution of `n` images of `c_in × h × w` into `c_out` channels, through
/// F(m×m, 3×3).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Winograd {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    /// Outputs per tile side: 4 or 2.
    pub m: usize,
    /// Images in the buffers this reads and writes (channel-major, `channel × batch × h × w`): `n` of them, from
    /// `first` on, are this one's ([`Winograd::parts`]).
    batch: usize,
    first: usize,
}

/// Runs a method generic over [`Scheme`] with the scheme of `self.m`.
macro_rules! by_scheme {
    ($self:ident . $f:ident ( $($arg:expr),* )) => {
        match $self.m {
            4 => $self.$f::<F4>($($arg),*),
            _ => $self.$f::<F2>($($arg),*),
        }
    };
}

/// Runs a transform generic over [`Scheme`] and [`Num`] with the scheme of `self.m`, over [`Lanes`] of tiles where
/// a row of tiles fills at least one and one tile at a time where it does not (images of a few tiles a side).
macro_rules! by_kind {
    ($self:ident . $f:ident ( $($arg:expr),* )) => {
        match ($self.m, $self.grid().1 >= LANES) {
            (4, true) => $self.$f::<F4, Lanes>($($arg),*),
            (4, false) => $self.$f::<F4, f32>($($arg),*),
            (_, true) => $self.$f::<F2, Lanes>($($arg),*),
            (_, false) => $self.$f::<F2, f32>($($arg),*),
        }
    };
}

impl Winograd {
    /// The Winograd form of a convolution of `n` images of `input` (`c_in × h × w`) into `c_out` channels, where it
    /// applies (3×3, stride 1, padding 1) and has channels to amortise its tile transforms over (a first layer's 1
    /// or 3 input channels keep im2col + GEMM); F(4×4, 3×3) from [`F4_FROM`] pixels a side and
    /// [`F4_CHANNELS`], F(2×2, 3×3) otherwise.
    /// `None` for an empty batch or image too: the transforms split their work by image and plane, which must not
    /// be empty.
    pub fn of(
        n: usize,
        (c_in, h, w): (usize, usize, usize),
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        // F(4×4, 3×3) saves multiply-adds ∝ c_in·c_out and costs transforms ∝ c_in + c_out.
        let f4 = h.min(w) >= F4_FROM && c_in * c_out >= F4_CHANNELS * (c_in + c_out);
        let m = if f4 { 4 } else { 2 };
        (k == 3 && stride == 1 && pad == 1 && c_in >= 8 && n * h * w > 0).then_some(Winograd {
            n,
            c_in,
            c_out,
            h,
            w,
            m,
            batch: n,
            first: 0,
        })
    }

    /// The batch in parts of whole images, each one's largest temporary (a transformed input or output gradient,
    /// `E × channels × tiles`) at most `bytes` (one image at least): the transforms' buffers stay a few MiB instead of
    /// 4× (F(2×2): 16 values a tile of 4 pixels) or 2.25× (F(4×4): 36 for 16) the layer's input or output. The parts
    /// differ by one image at most (no small last part). Only on the whole batch.
    fn parts(&self, bytes: usize) -> impl Iterator<Item = Winograd> + '_ {
        let (th, tw) = self.grid();
        let per_image = self.e() * self.c_in.max(self.c_out) * th * tw * std::mem::size_of::<f32>();
        let most = (bytes / per_image.max(1)).clamp(1, self.n.max(1));
        let count = self.n.div_ceil(most);
        // The first `n mod count` parts take one image more.
        let (size, more) = (self.n / count.max(1), self.n % count.max(1));
        (0..count).map(move |k| Winograd { n: size + usize::from(k < more), first: k * size + k.min(more), ..*self })
    }

    /// Where this part's images lie in one channel of a channel-major buffer of the batch.
    fn span(&self) -> Range<usize> {
        let plane = self.h * self.w;
        self.first * plane..(self.first + self.n) * plane
    }

    /// Channel `c` of this part's images in a channel-major buffer of the batch.
    fn run<'b>(&self, buf: &'b [f32], c: usize) -> &'b [f32] {
        &buf[c * self.batch * self.h * self.w..][self.span()]
    }

    /// The convolution (`c_out × n × h × w`) of `x` (`c_in × n × h × w`) with `weight` (`c_out × c_in × 3 × 3`) plus
    /// `bias`, a part of the batch at a time.
    pub fn convolve(&self, weight: &[f32], x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        self.convolve_in_parts(weight, x, bias, PART_BYTES)
    }

    fn convolve_in_parts(&self, weight: &[f32], x: &[f32], bias: Option<&[f32]>, bytes: usize) -> Vec<f32> {
        let u = self.weight(weight);
        let mut y = uninit(self.c_out * self.n * self.h * self.w);
        for part in self.parts(bytes) {
            part.forward(&u, &part.input(x), bias, &mut y);
        }
        y
    }

    /// The weight gradient (`c_out × c_in × 3 × 3`) and, if `input`, the input gradient (`c_in × n × h × w`) of the
    /// convolution of `x` with `weight` for the output gradient `dy`, a part of the batch at a time (the weight
    /// gradient's products summed over the parts in order: the same bits on every run).
    pub fn gradients(&self, weight: &[f32], x: &[f32], dy: &[f32], input: bool) -> (Vec<f32>, Option<Vec<f32>>) {
        self.gradients_in_parts(weight, x, dy, input, PART_BYTES)
    }

    fn gradients_in_parts(
        &self,
        weight: &[f32],
        x: &[f32],
        dy: &[f32],
        input: bool,
        bytes: usize,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let u = input.then(|| self.weight(weight));
        let mut dx = input.then(|| uninit(self.c_in * self.n * self.h * self.w));
        let mut du = vec![0f32; self.e() * self.c_out * self.c_in];
        for part in self.parts(bytes) {
            let dm = part.output_grad(dy);
            part.weight_products(&dm, &part.input_by_tile(x), &mut du);
            if let (Some(u), Some(dx)) = (&u, &mut dx) {
                part.input_grad(u, &dm, dx);
            }
        }
        (self.weight_grad(&du), dx)
    }

    /// Input tile side, `m + 2`.
    fn a(&self) -> usize {
        self.m + 2
    }

    /// Elements of a transformed tile: the number of products.
    fn e(&self) -> usize {
        self.a() * self.a()
    }

    /// Tile rows and columns per image: `⌈h/m⌉ × ⌈w/m⌉`.
    fn grid(&self) -> (usize, usize) {
        (self.h.div_ceil(self.m), self.w.div_ceil(self.m))
    }

    /// Tiles over the batch: the columns of every product.
    pub fn tiles(&self) -> usize {
        let (th, tw) = self.grid();
        self.n * th * tw
    }

    /// `U = G g Gᵀ` of every filter of `weight` (`c_out × c_in × 3 × 3`).
    fn weight(&self, weight: &[f32]) -> Vec<f32> {
        by_scheme!(self.weight_in(weight))
    }

    fn weight_in<S: Scheme>(&self, weight: &[f32]) -> Vec<f32> {
        let (a, e) = (S::A, S::A * S::A);
        let mut u = vec![0f32; self.c_out * self.c_in * e];
        u.par_chunks_mut(self.c_in * e).zip(weight.par_chunks(self.c_in * 9)).for_each(|(out, filters)| {
            for (t, g) in out.chunks_exact_mut(e).zip(filters.chunks_exact(9)) {
                // Columns first (`cols[j]` = G of column j), then rows.
                let cols: [[f32; 6]; 3] = from_fn(|j| S::g([g[j], g[3 + j], g[6 + j]]));
                for (r, row) in t.chunks_exact_mut(a).enumerate() {
                    row.copy_from_slice(&S::g([cols[0][r], cols[1][r], cols[2][r]])[..a]);
                }
            }
        });
        u
    }

    /// `V = Bᵀ d B` of every tile of `x` (`c_in × n × h × w`), zero outside the image.
    fn input(&self, x: &[f32]) -> Vec<f32> {
        let (e, t) = (self.e(), self.tiles());
        let mut v = uninit(self.c_in * e * t);
        v.par_chunks_mut(e * t).enumerate().for_each(|(c, out)| self.input_channel(self.run(x, c), out));
        v
    }

    /// [`Winograd::input`] laid out `E × tiles × c_in` (each tile's channels contiguous): the weight gradient's
    /// operand in the layout the gemm crate reads as it is. From [`Winograd::input`]'s layout its panels are
    /// gathered one value at a time, rows `E × tiles` apart (15 % of WARN's training step went there).
    fn input_by_tile(&self, x: &[f32]) -> Vec<f32> {
        let (ci, t, e) = (self.c_in, self.tiles(), self.e());
        let per_image = t / self.n.max(1);
        let mut v = uninit(e * t * ci);
        // Each image's tiles are a contiguous run of rows in each of the E planes: one task per image.
        let mut images: Vec<Vec<&mut [f32]>> = (0..self.n).map(|_| Vec::with_capacity(e)).collect();
        for plane in v.chunks_mut(t * ci) {
            for (image, rows) in images.iter_mut().zip(plane.chunks_mut(per_image * ci)) {
                image.push(rows);
            }
        }
        let one = Winograd { n: 1, ..*self };
        let plane = self.h * self.w;
        images.into_par_iter().enumerate().for_each(|(ni, mut rows)| {
            // Blocks of channels transformed into `local` (`channel × E × tiles`), then written a tile's block of
            // channels (one cache line) at a time.
            const BLOCK: usize = 16;
            let mut local = vec![0f32; BLOCK * e * per_image];
            for c0 in (0..ci).step_by(BLOCK) {
                let width = BLOCK.min(ci - c0);
                for (k, out) in local.chunks_exact_mut(e * per_image).take(width).enumerate() {
                    one.input_channel(&self.run(x, c0 + k)[ni * plane..][..plane], out);
                }
                for (el, dst) in rows.iter_mut().enumerate() {
                    for (tile, run) in dst.chunks_exact_mut(ci).enumerate() {
                        for (k, value) in run[c0..c0 + width].iter_mut().enumerate() {
                            *value = local[(k * e + el) * per_image + tile];
                        }
                    }
                }
            }
        });
        v
    }

    /// [`Winograd::input`] of one channel.
    fn input_channel(&self, channel: &[f32], out: &mut [f32]) {
        by_kind!(self.input_channel_in(channel, out))
    }

    /// [`Winograd::input_channel`], a row of tiles at a time: `Bᵀ` down whole padded rows, then across the tiles
    /// from the transformed rows' phases (phase `p`: the columns `m·k + p`), so every loop runs over contiguous
    /// tiles.
    fn input_channel_in<S: Scheme, T: Num>(&self, channel: &[f32], out: &mut [f32]) {
        let (m, a) = (S::M, S::A);
        let (th, tw) = self.grid();
        let (h, w, t) = (self.h, self.w, self.tiles());
        // One zero column on the left, zeros past the image on the right: tw + 1 groups of m columns.
        let pw = m * (tw + 1);
        let mut padded = vec![0f32; (m * th + 2) * pw];
        let mut rows = vec![0f32; a * pw];
        let mut phases = vec![0f32; m * (tw + 1)];
        for (ni, plane) in channel.chunks_exact(h * w).enumerate() {
            for (r, row) in plane.chunks_exact(w).enumerate() {
                padded[(r + 1) * pw + 1..][..w].copy_from_slice(row);
            }
            for ty in 0..th {
                let d = |i: usize| &padded[(m * ty + i) * pw..][..pw];
                for k in chunks::<T>(pw) {
                    let y = S::bt(from_fn(|i| if i < a { T::load(d(i), k) } else { T::ZERO }));
                    for (r, v) in y[..a].iter().enumerate() {
                        v.store(&mut rows[r * pw..][..pw], k);
                    }
                }
                let col = (ni * th + ty) * tw;
                for r in 0..a {
                    split_phases(&rows[r * pw..][..pw], m, &mut phases);
                    let ph = |j: usize| &phases[(j % m) * (tw + 1) + j / m..][..tw];
                    for k in chunks::<T>(tw) {
                        let y = S::bt(from_fn(|j| if j < a { T::load(ph(j), k) } else { T::ZERO }));
                        for (c, v) in y[..a].iter().enumerate() {
                            v.store(&mut out[(a * r + c) * t + col..][..tw], k);
                        }
                    }
                }
            }
        }
    }

    /// The convolution from transformed weights and input, plus `bias` per channel, into this part's images of `y`
    /// (`c_out × batch × h × w`).
    fn forward(&self, u: &[f32], v: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let (co, ci, t, e) = (self.c_out, self.c_in, self.tiles(), self.e());
        let mut m = uninit(e * co * t);
        let (ei, et) = (e as isize, (e * t) as isize);
        sgemm_batched_wide(e, (co, t, ci), ((u, (ci as isize * ei, ei)), 1), ((v, (et, 1)), t), &mut m);
        y.par_chunks_mut(self.batch * self.h * self.w).enumerate().for_each(|(c, channel)| {
            let out = &mut channel[self.span()];
            let rows: Vec<&[f32]> = (0..e).map(|el| &m[(el * co + c) * t..][..t]).collect();
            by_kind!(self.output_channel(&rows, bias.map_or(0.0, |b| b[c]), out))
        });
    }

    /// `Y = Aᵀ M A + bias` of one channel's tiles (`rows[e]`: element `e` of every tile), a row of tiles at a time.
    fn output_channel<S: Scheme, T: Num>(&self, rows: &[&[f32]], bias: f32, out: &mut [f32]) {
        let (m, a) = (S::M, S::A);
        let (th, tw) = self.grid();
        let (h, w) = (self.h, self.w);
        // s[i][j] = (Aᵀ M)[i][j], tw tiles each.
        let mut s = vec![0f32; m * a * tw];
        let mut phases = vec![0f32; m * tw];
        let bias = T::splat(bias);
        for ni in 0..self.n {
            for ty in 0..th {
                let col = (ni * th + ty) * tw;
                let mm = |el: usize| &rows[el][col..][..tw];
                for j in 0..a {
                    for k in chunks::<T>(tw) {
                        let y = S::at(from_fn(|r| if r < a { T::load(mm(r * a + j), k) } else { T::ZERO }));
                        for (i, v) in y[..m].iter().enumerate() {
                            v.store(&mut s[(i * a + j) * tw..][..tw], k);
                        }
                    }
                }
                for i in 0..m.min(h - m * ty) {
                    let si = |j: usize| &s[(i * a + j) * tw..][..tw];
                    for k in chunks::<T>(tw) {
                        let y = S::at(from_fn(|j| if j < a { T::load(si(j), k) } else { T::ZERO }));
                        for (p, v) in y[..m].iter().enumerate() {
                            (*v + bias).store(&mut phases[p * tw..][..tw], k);
                        }
                    }
                    let dst = &mut out[(ni * h + m * ty + i) * w..][..w];
                    for (k, group) in dst.chunks_mut(m).enumerate() {
                        for (p, value) in group.iter_mut().enumerate() {
                            *value = phases[p * tw + k];
                        }
                    }
                }
            }
        }
    }

    /// `dM = A dY Aᵀ` of every output tile of `dy` (`c_out × n × h × w`): `c_out × E × tiles`.
    fn output_grad(&self, dy: &[f32]) -> Vec<f32> {
        let (e, t) = (self.e(), self.tiles());
        let mut dm = uninit(self.c_out * e * t);
        dm.par_chunks_mut(e * t)
            .enumerate()
            .for_each(|(c, out)| by_kind!(self.output_grad_channel(self.run(dy, c), out)));
        dm
    }

    /// [`Winograd::output_grad`] of one channel, a row of tiles at a time.
    fn output_grad_channel<S: Scheme, T: Num>(&self, channel: &[f32], out: &mut [f32]) {
        let (m, a) = (S::M, S::A);
        let (th, tw) = self.grid();
        let (h, w, t) = (self.h, self.w, self.tiles());
        // u[i][c] = (dY Aᵀ)[i][c] for the tile row's m output rows i.
        let mut u = vec![0f32; m * a * tw];
        let mut phases = vec![0f32; m * tw];
        for ni in 0..self.n {
            for ty in 0..th {
                for i in 0..m {
                    let r = m * ty + i;
                    if r >= h {
                        u[i * a * tw..][..a * tw].fill(0.0);
                        continue;
                    }
                    let src = &channel[(ni * h + r) * w..][..w];
                    for (k, group) in src.chunks(m).enumerate() {
                        for p in 0..m {
                            phases[p * tw + k] = group.get(p).copied().unwrap_or(0.0);
                        }
                    }
                    for k in chunks::<T>(tw) {
                        let y = S::a(from_fn(|p| if p < m { T::load(&phases[p * tw..][..tw], k) } else { T::ZERO }));
                        for (c, v) in y[..a].iter().enumerate() {
                            v.store(&mut u[(i * a + c) * tw..][..tw], k);
                        }
                    }
                }
                let col = (ni * th + ty) * tw;
                for c in 0..a {
                    for k in chunks::<T>(tw) {
                        let y =
                            S::a(from_fn(|i| if i < m { T::load(&u[(i * a + c) * tw..][..tw], k) } else { T::ZERO }));
                        for (r, v) in y[..a].iter().enumerate() {
                            v.store(&mut out[(r * a + c) * t + col..][..tw], k);
                        }
                    }
                }
            }
        }
    }

    /// Adds this part's `Σ_tiles dM_e · V_eᵀ` (`E × c_out × c_in`) to `du`, from [`Winograd::output_grad`] and
    /// [`Winograd::input_by_tile`]. Each product sums over the part's tiles on one thread: the same bits on every run.
    fn weight_products(&self, dm: &[f32], v_by_tile: &[f32], du: &mut [f32]) {
        let (co, ci, t, e) = (self.c_out, self.c_in, self.tiles(), self.e());
        let mut part = uninit(e * co * ci);
        let (a, b) = ((dm, ((e * t) as isize, 1)), (v_by_tile, (ci as isize, 1)));
        sgemm_batched_long(e, (co, ci, t), (a, t), (b, t * ci), &mut part);
        du.par_chunks_mut(co * ci).zip(part.par_chunks(co * ci)).for_each(|(d, p)| {
            d.iter_mut().zip(p).for_each(|(d, p)| *d += p);
        });
    }

    /// The weight gradient `Gᵀ dU G` (`c_out × c_in × 3 × 3`) of the products summed over the tiles, `dU` (`E ×
    /// c_out × c_in`).
    fn weight_grad(&self, du: &[f32]) -> Vec<f32> {
        let (co, ci, e) = (self.c_out, self.c_in, self.e());
        let mut dw = uninit(co * ci * 9);
        dw.par_chunks_mut(ci * 9).enumerate().for_each(|(o, filters)| {
            for (i, g) in filters.chunks_exact_mut(9).enumerate() {
                let mut d = [0f32; 36];
                for (el, value) in d[..e].iter_mut().enumerate() {
                    *value = du[(el * co + o) * ci + i];
                }
                g.copy_from_slice(&by_scheme!(self.weight_adjoint(&d)));
            }
        });
        dw
    }

    /// `Gᵀ dU G` of one filter's `dU` (`A × A`): the adjoint of [`Winograd::weight`]'s transform.
    fn weight_adjoint<S: Scheme>(&self, du: &[f32]) -> [f32; 9] {
        let a = S::A;
        // Columns first (`cols[c]` = Gᵀ of column c), then rows.
        let cols: [[f32; 3]; 6] =
            from_fn(|c| if c < a { S::gt(from_fn(|r| if r < a { du[r * a + c] } else { 0.0 })) } else { [0.0; 3] });
        let mut g = [0f32; 9];
        for (j, row) in g.chunks_exact_mut(3).enumerate() {
            row.copy_from_slice(&S::gt(from_fn(|c| cols[c][j])));
        }
        g
    }

    /// The input gradient `B (U_eᵀ · dM_e) Bᵀ`, summed over the overlapping tiles, into this part's images of `dx`
    /// (`c_in × batch × h × w`).
    fn input_grad(&self, u: &[f32], dm: &[f32], dx: &mut [f32]) {
        let (co, ci, t, e) = (self.c_out, self.c_in, self.tiles(), self.e());
        let mut dv = uninit(e * ci * t);
        let (ei, et) = (e as isize, (e * t) as isize);
        sgemm_batched_wide(e, (ci, t, co), ((u, (ei, ci as isize * ei)), 1), ((dm, (et, 1)), t), &mut dv);
        dx.par_chunks_mut(self.batch * self.h * self.w).enumerate().for_each(|(c, channel)| {
            let out = &mut channel[self.span()];
            let rows: Vec<&[f32]> = (0..e).map(|el| &dv[(el * ci + c) * t..][..t]).collect();
            by_kind!(self.input_grad_channel(&rows, out))
        });
    }

    /// `B dV Bᵀ` of one channel's tiles (`rows[e]`), summed into the overlapping tiles of `channel`, a row of tiles
    /// at a time: the adjoint down the tiles, then across them into the phases of a padded row (a tile's columns
    /// `m..m+2` fall into the next tile's phases 0 and 1), then interleaved into it.
    fn input_grad_channel<S: Scheme, T: Num>(&self, rows: &[&[f32]], channel: &mut [f32]) {
        let (m, a) = (S::M, S::A);
        let (th, tw) = self.grid();
        let (h, w) = (self.h, self.w);
        let pw = m * (tw + 1);
        let mut padded = vec![0f32; (m * th + 2) * pw];
        // q[x][c] = (B dV)[x][c], tw tiles each.
        let mut q = vec![0f32; a * a * tw];
        // cols[j]: column j of B dV Bᵀ for the tile row's row x, tw tiles; acc: them summed into the row's phases.
        let mut cols = vec![0f32; a * tw];
        let mut acc = vec![0f32; m * (tw + 1)];
        for (ni, plane) in channel.chunks_exact_mut(h * w).enumerate() {
            padded.fill(0.0);
            for ty in 0..th {
                let col = (ni * th + ty) * tw;
                let v = |el: usize| &rows[el][col..][..tw];
                for c in 0..a {
                    for k in chunks::<T>(tw) {
                        let y = S::b(from_fn(|r| if r < a { T::load(v(r * a + c), k) } else { T::ZERO }));
                        for (x, val) in y[..a].iter().enumerate() {
                            val.store(&mut q[(x * a + c) * tw..][..tw], k);
                        }
                    }
                }
                for x in 0..a {
                    let qx = |c: usize| &q[(x * a + c) * tw..][..tw];
                    for k in chunks::<T>(tw) {
                        let y = S::b(from_fn(|c| if c < a { T::load(qx(c), k) } else { T::ZERO }));
                        for (j, val) in y[..a].iter().enumerate() {
                            val.store(&mut cols[j * tw..][..tw], k);
                        }
                    }
                    // Column m·tile + j: phase j mod m of tile + j / m.
                    acc.fill(0.0);
                    for (j, col) in cols.chunks_exact(tw).enumerate() {
                        let dst = &mut acc[(j % m) * (tw + 1) + j / m..][..tw];
                        for (d, v) in dst.iter_mut().zip(col) {
                            *d += v;
                        }
                    }
                    let dst = &mut padded[(m * ty + x) * pw..][..pw];
                    for (k, group) in dst.chunks_exact_mut(m).enumerate() {
                        for (p, value) in group.iter_mut().enumerate() {
                            *value += acc[p * (tw + 1) + k];
                        }
                    }
                }
            }
            for (r, row) in plane.chunks_exact_mut(w).enumerate() {
                row.copy_from_slice(&padded[(r + 1) * pw + 1..][..w]);
            }
        }
    }
}

/// Splits `row` (`m·(k+1)` values) into its `m` phases, `phases[p·(k+1) + i] = row[m·i + p]`.
fn split_phases(row: &[f32], m: usize, phases: &mut [f32]) {
    let len = row.len() / m;
    for (i, group) in row.chunks_exact(m).enumerate() {
        for (p, &value) in group.iter().enumerate() {
            phases[p * len + i] = value;
        }
    }
}

/// A buffer whose every element the caller writes before anything reads it (no zero-filling pass).
fn uninit(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns, and every caller here writes each element before reading it.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// Tiles side by side in one pass of a transform (a row of F(2×2, 3×3) tiles of an 8×8 image).
const LANES: usize = 4;

/// [`LANES`] values, one per tile, that the transforms combine lane by lane (fixed-size array loops, for LLVM to keep in one
/// vector register).
#[derive(Clone, Copy)]
struct Lanes([f32; LANES]);

macro_rules! lanewise {
    ($trait:ident, $f:ident, $op:tt) => {
        impl $trait for Lanes {
            type Output = Lanes;
            #[inline(always)]
            fn $f(self, other: Lanes) -> Lanes {
                Lanes(from_fn(|i| self.0[i] $op other.0[i]))
            }
        }
    };
}
lanewise!(Add, add, +);
lanewise!(Sub, sub, -);

impl Mul<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(self, s: f32) -> Lanes {
        Lanes(self.0.map(|v| v * s))
    }
}

impl Neg for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn neg(self) -> Lanes {
        Lanes(self.0.map(|v| -v))
    }
}

/// What the one-dimensional transforms compute with: one tile's value or [`Lanes`] of them, loaded from and stored
/// into a row of tiles `WIDTH` at a time (zeros read, and nothing written, past the row's end).
trait Num: Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> + Mul<f32, Output = Self> {
    const WIDTH: usize;
    const ZERO: Self;
    fn splat(value: f32) -> Self;
    fn load(src: &[f32], k: usize) -> Self;
    fn store(self, dst: &mut [f32], k: usize);
}

/// The starts of the `T::WIDTH`-wide chunks that cover `0..len`, the last moved back to end at `len` where the row
/// fills one (a partial chunk's loads and stores, element by element, made WARN's MNIST step 20 % slower): the
/// overlap is computed twice and stored alike.
fn chunks<T: Num>(len: usize) -> impl Iterator<Item = usize> {
    let width = T::WIDTH;
    (0..len).step_by(width).map(move |k| if len >= width { k.min(len - width) } else { k })
}

impl Num for f32 {
    const WIDTH: usize = 1;
    const ZERO: f32 = 0.0;

    #[inline(always)]
    fn splat(value: f32) -> f32 {
        value
    }

    #[inline(always)]
    fn load(src: &[f32], k: usize) -> f32 {
        src.get(k).copied().unwrap_or(0.0)
    }

    #[inline(always)]
    fn store(self, dst: &mut [f32], k: usize) {
        if let Some(d) = dst.get_mut(k) {
            *d = self;
        }
    }
}

impl Num for Lanes {
    const WIDTH: usize = LANES;
    const ZERO: Lanes = Lanes([0.0; LANES]);

    #[inline(always)]
    fn splat(value: f32) -> Lanes {
        Lanes([value; LANES])
    }

    #[inline(always)]
    fn load(src: &[f32], k: usize) -> Lanes {
        match src.get(k..k + LANES) {
            Some(s) => Lanes(s.try_into().expect("LANES values")),
            None => {
                let mut r = [0f32; LANES];
                for (lane, &value) in r.iter_mut().zip(src.get(k..).unwrap_or(&[])) {
                    *lane = value;
                }
                Lanes(r)
            }
        }
    }

    #[inline(always)]
    fn store(self, dst: &mut [f32], k: usize) {
        match dst.get_mut(k..k + LANES) {
            Some(d) => d.copy_from_slice(&self.0),
            None => {
                for (value, lane) in dst.get_mut(k..).unwrap_or(&mut []).iter_mut().zip(self.0) {
                    *value = lane;
                }
            }
        }
    }
}

/// One algorithm F(m×m, 3×3): its tile sides and its one-dimensional transforms (arrays sized for the largest,
/// F(4×4, 3×3); entries past `A` or `M` are unused) and their adjoints.
trait Scheme {
    /// Outputs per tile side, `m`.
    const M: usize;
    /// Input tile side, `m + 2`.
    const A: usize;
    /// `Bᵀ d`: an input tile's column (or row) into the transformed domain.
    fn bt<T: Num>(d: [T; 6]) -> [T; 6];
    /// `B v`, the adjoint of [`Scheme::bt`].
    fn b<T: Num>(v: [T; 6]) -> [T; 6];
    /// `Aᵀ s`: `A` products back into `M` outputs.
    fn at<T: Num>(s: [T; 6]) -> [T; 4];
    /// `A y`, the adjoint of [`Scheme::at`].
    fn a<T: Num>(y: [T; 4]) -> [T; 6];
    /// `G g`: a filter's column (or row) of 3 taps into `A` values.
    fn g(g: [f32; 3]) -> [f32; 6];
    /// `Gᵀ u`, the adjoint of [`Scheme::g`].
    fn gt(u: [f32; 6]) -> [f32; 3];
}

/// F(2×2, 3×3), interpolating at 0, ±1 and ∞.
struct F2;

impl Scheme for F2 {
    const M: usize = 2;
    const A: usize = 4;

    #[inline(always)]
    fn bt<T: Num>([d0, d1, d2, d3, _, z]: [T; 6]) -> [T; 6] {
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3, z, z]
    }

    #[inline(always)]
    fn b<T: Num>([v0, v1, v2, v3, _, z]: [T; 6]) -> [T; 6] {
        [v0, v1 - v2 + v3, v1 + v2 - v0, -v3, z, z]
    }

    #[inline(always)]
    fn at<T: Num>([m0, m1, m2, m3, _, z]: [T; 6]) -> [T; 4] {
        [m0 + m1 + m2, m1 - m2 - m3, z, z]
    }

    #[inline(always)]
    fn a<T: Num>([y0, y1, _, z]: [T; 4]) -> [T; 6] {
        [y0, y0 + y1, y0 - y1, -y1, z, z]
    }

    fn g([g0, g1, g2]: [f32; 3]) -> [f32; 6] {
        [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2, 0.0, 0.0]
    }

    fn gt([u0, u1, u2, u3, ..]: [f32; 6]) -> [f32; 3] {
        [u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3]
    }
}

/// F(4×4, 3×3), interpolating at 0, ±1, ±2 and ∞ (Lavin & Gray's matrices).
struct F4;

impl Scheme for F4 {
    const M: usize = 4;
    const A: usize = 6;

    #[inline(always)]
    fn bt<T: Num>([d0, d1, d2, d3, d4, d5]: [T; 6]) -> [T; 6] {
        let (t1, t2) = (d4 - d2 * 4.0, d3 - d1 * 4.0);
        let (t3, t4) = (d4 - d2, (d3 - d1) * 2.0);
        [d0 * 4.0 - d2 * 5.0 + d4, t1 + t2, t1 - t2, t3 + t4, t3 - t4, d1 * 4.0 - d3 * 5.0 + d5]
    }

    #[inline(always)]
    fn b<T: Num>([v0, v1, v2, v3, v4, v5]: [T; 6]) -> [T; 6] {
        let (s12, d12, s34, d34) = (v1 + v2, v2 - v1, v3 + v4, v3 - v4);
        [
            v0 * 4.0,
            d12 * 4.0 - d34 * 2.0 + v5 * 4.0,
            -(v0 * 5.0) - s12 * 4.0 - s34,
            -d12 + d34 * 2.0 - v5 * 5.0,
            v0 + s12 + s34,
            v5,
        ]
    }

    #[inline(always)]
    fn at<T: Num>([m0, m1, m2, m3, m4, m5]: [T; 6]) -> [T; 4] {
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        [m0 + s12 + s34, d12 + d34 * 2.0, s12 + s34 * 4.0, d12 + d34 * 8.0 + m5]
    }

    #[inline(always)]
    fn a<T: Num>([y0, y1, y2, y3]: [T; 4]) -> [T; 6] {
        let (even, odd) = (y0 + y2, y1 + y3);
        let (even2, odd2) = (y0 + y2 * 4.0, (y1 + y3 * 4.0) * 2.0);
        [y0, even + odd, even - odd, even2 + odd2, even2 - odd2, y3]
    }

    fn g([g0, g1, g2]: [f32; 3]) -> [f32; 6] {
        let s = g0 + g2;
        let t = g0 / 24.0 + g2 / 6.0;
        [g0 / 4.0, -(s + g1) / 6.0, -(s - g1) / 6.0, t + g1 / 12.0, t - g1 / 12.0, g2]
    }

    fn gt([u0, u1, u2, u3, u4, u5]: [f32; 6]) -> [f32; 3] {
        [
            u0 / 4.0 - (u1 + u2) / 6.0 + (u3 + u4) / 24.0,
            (u2 - u1) / 6.0 + (u3 - u4) / 12.0,
            (u3 + u4 - u1 - u2) / 6.0 + u5,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len).map(|i| (((i as u64 + 1) * 2654435761 + seed * 97) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Direct convolution (3×3, stride 1, padding 1) in f64, channel-major; and its adjoints for `dy`.
    #[allow(clippy::type_complexity)]
    fn direct(g: &Winograd, x: &[f32], wt: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (n, ci, co, h, w) = (g.n, g.c_in, g.c_out, g.h, g.w);
        let mut y = vec![0f64; co * n * h * w];
        let mut dx = vec![0f64; ci * n * h * w];
        let mut dw = vec![0f64; co * ci * 9];
        for o in 0..co {
            for i in 0..ci {
                for ni in 0..n {
                    for r in 0..h {
                        for s in 0..w {
                            let yi = (o * n + ni) * h * w + r * w + s;
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (ry, sx) = ((r + ky) as isize - 1, (s + kx) as isize - 1);
                                    if ry < 0 || sx < 0 || ry >= h as isize || sx >= w as isize {
                                        continue;
                                    }
                                    let xi = (i * n + ni) * h * w + ry as usize * w + sx as usize;
                                    let wi = (o * ci + i) * 9 + ky * 3 + kx;
                                    y[yi] += x[xi] as f64 * wt[wi] as f64;
                                    dx[xi] += dy[yi] as f64 * wt[wi] as f64;
                                    dw[wi] += dy[yi] as f64 * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    fn worst(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max) / scale
    }

    /// For both algorithms, the forward pass, input gradient and weight gradient equal a direct float64 convolution
    /// and its adjoints, on even, odd, one-pixel and wide shapes (ragged edge tiles), several images and channels.
    #[test]
    fn equals_direct_convolution_and_its_adjoints() {
        // The last two have more channels than one block of `input_by_tile`, and a partial block.
        let shapes = [
            (2, 3, 4, 6, 6),
            (3, 2, 5, 7, 5),
            (1, 1, 1, 1, 1),
            (2, 4, 3, 2, 9),
            (1, 5, 2, 3, 1),
            (2, 3, 2, 9, 13),
            (1, 2, 2, 17, 4),
            (2, 20, 3, 5, 4),
            (3, 33, 2, 3, 3),
        ];
        for m in [2, 4] {
            let mut worst_seen = [0f64; 3];
            for &(n, ci, co, h, w) in &shapes {
                let g = Winograd { n, c_in: ci, c_out: co, h, w, m, batch: n, first: 0 };
                let x = values(ci * n * h * w, 1);
                let wt = values(co * ci * 9, 2);
                let bias = values(co, 3);
                let dy = values(co * n * h * w, 4);
                let (y0, dx0, dw0) = direct(&g, &x, &wt, &dy);
                // The whole batch in one part, one image a part, and parts of two and one images.
                let two_images = 2 * g.e() * ci.max(co) * h.div_ceil(m) * w.div_ceil(m) * 4;
                for bytes in [usize::MAX, 1, two_images] {
                    let y = g.convolve_in_parts(&wt, &x, Some(&bias), bytes);
                    let unbiased: Vec<f32> =
                        y.iter().enumerate().map(|(k, &val)| val - bias[k / (n * h * w)]).collect();
                    let (dw, dx) = g.gradients_in_parts(&wt, &x, &dy, true, bytes);
                    let dx = dx.expect("input gradient asked for");
                    assert_eq!(dw, g.gradients_in_parts(&wt, &x, &dy, false, bytes).0);
                    let errors = [worst(&unbiased, &y0), worst(&dx, &dx0), worst(&dw, &dw0)];
                    for (seen, e) in worst_seen.iter_mut().zip(errors) {
                        *seen = seen.max(e);
                    }
                    // F(4×4, 3×3)'s transforms hold larger coefficients (up to 8, and 1/24): measured 3e-6 to 5e-6
                    // here, 20× F(2×2, 3×3)'s.
                    let bound = if m == 4 { 1e-5 } else { 1e-6 };
                    let shape = (n, ci, co, h, w);
                    for (what, e) in ["forward", "input gradient", "weight gradient"].iter().zip(errors) {
                        assert!(e < bound, "F({m}, 3) {what} {shape:?}, parts of {bytes} bytes: {e:e}");
                    }
                }
            }
            println!(
                "F({m}×{m}, 3×3): worst forward, input gradient, weight gradient {:.1e} {:.1e} {:.1e}",
                worst_seen[0], worst_seen[1], worst_seen[2]
            );
        }
    }
}
