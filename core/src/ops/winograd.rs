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
//! Each transform is separable (a one-dimensional one down a tile's columns, then along its rows) and runs on
//! [`CB`] channels side by side: a task takes one image and a block of channels, gathers them pixel-major into a
//! local buffer (each pixel's channels one [`Block`]), transforms every tile there with vector arithmetic, and writes
//! each tile element's channels as one contiguous run. Values outside the transforms are channel-major over the
//! batch (`c × n × h × w`), as the graph executor keeps them. Every transformed buffer is tile-major, `E × tiles ×
//! channels` with `E = (m+2)²` elements per tile (`V`, `M`, `dM`, `dV`): the products read and write them as they
//! are (a tile's channels contiguous; the weight gradient's product reads `V` as the forward one does, computed
//! again), `U` is `c_out × c_in × E`. Where the CPU has AVX-512 or AVX2, the transforms run compiled for it
//! ([`widest!`]). The batch goes through in parts of whole images ([`PART_BYTES`]), so that these buffers
//! take a few MiB rather than several times the layer's activations; the weight gradient sums the parts' products.

use super::{sgemm_batched_long, sgemm_batched_wide, uninit, Plain};
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

/// The fewest tiles (over the batch) that go through Winograd's transforms: with fewer, the work that grows with
/// the weights alone (`U` and the weight gradient's `dU`, `E × c_out × c_in` each, transformed, written and read
/// again; a product of `c_out × c_in` outputs summed over few tiles) costs more than im2col + GEMM's 2.25× more
/// multiply-adds. Forward and backward of 4×4 images (4 tiles each), F(2×2): 16 images 0.41–0.73× im2col's
/// speed (128 to 512 channels), 32 images 0.54–1.0×, 48 images 0.99–1.09×, 64 images 1.03–1.21×, 96 images 1.37–1.51×
/// (`results/bench/winograd-min-tiles-2026-12-06.txt`); RAN's 512-channel 4×4 stage at batch 32 had taken 30 % of
/// its training step.
const MIN_TILES: usize = 256;

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

impl Winograd {
    /// The Winograd form of a convolution of `n` images of `input` (`c_in × h × w`) into `c_out` channels, where it
    /// applies (3×3, stride 1, padding 1) and has channels to amortise its tile transforms over (a first layer's 1
    /// or 3 input channels keep im2col + GEMM); F(4×4, 3×3) from [`F4_FROM`] pixels a side and
    /// [`F4_CHANNELS`], F(2×2, 3×3) otherwise.
    /// `None` below [`MIN_TILES`] tiles, so for an empty batch or image too (the transforms split their work by
    /// image and plane, which must not be empty).
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
        let tiles = n * h.div_ceil(m) * w.div_ceil(m);
        (k == 3 && stride == 1 && pad == 1 && c_in >= 8 && tiles >= MIN_TILES).then_some(Winograd {
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
            part.weight_products(&dm, &part.input(x), &mut du);
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

    /// Every (image of this part, block of [`CB`] of `channels`) on the rayon pool: `f((image, first channel,
    /// channels in the block))`.
    fn blocks(&self, channels: usize, f: impl Fn((usize, usize, usize)) + Sync + Send) {
        let per = channels.div_ceil(CB);
        (0..self.n * per).into_par_iter().for_each(|task| {
            let c0 = task % per * CB;
            f((task / per, c0, CB.min(channels - c0)))
        });
    }

    /// Channels `c0..c0 + width` of image `ni` of this part of `buf` (channel-major, `c × batch × h × w`) into `out`,
    /// pixel-major with `cols` pixels a row and the image's first pixel at `at`; the rest of `out` untouched.
    #[inline(always)]
    fn gather(&self, buf: &[f32], (ni, c0, width): (usize, usize, usize), out: &mut [Block], cols: usize, at: usize) {
        let (h, w) = (self.h, self.w);
        let planes: [&[f32]; CB] =
            from_fn(|k| if k < width { &self.run(buf, c0 + k)[ni * h * w..][..h * w] } else { &[] });
        // A row at a time, every channel's row read side by side, each pixel's block written whole.
        for r in 0..h {
            let rows: [&[f32]; CB] = from_fn(|k| planes[k].get(r * w..(r + 1) * w).unwrap_or(&[]));
            for (col, o) in out[at + r * cols..][..w].iter_mut().enumerate() {
                for (lane, row) in o.0.iter_mut().zip(&rows).take(width) {
                    *lane = row[col];
                }
            }
        }
    }

    /// A `rows × cols` buffer for [`Winograd::gather`] to fill with an image at `(top, left)`: zeros around it (and
    /// everywhere when the block has fewer than [`CB`] channels), the image's pixels left for the gather to write.
    fn framed(&self, (rows, cols): (usize, usize), (top, left): (usize, usize), width: usize) -> Vec<Block> {
        if width < CB {
            return vec![Block::ZERO; rows * cols];
        }
        // Every value is written below (the frame) or by the gather (the image) before any is read.
        let mut p = uninit(rows * cols);
        for (r, row) in p.chunks_exact_mut(cols).enumerate() {
            if r < top || r >= top + self.h {
                row.fill(Block::ZERO);
            } else {
                row[..left].fill(Block::ZERO);
                row[left + self.w..].fill(Block::ZERO);
            }
        }
        p
    }

    /// [`Winograd::gather`]'s inverse: the image at `at` in `src` (`cols` pixels a row) into channels `c0..c0 +
    /// width` of image `ni` of this part of the channel-major buffer behind `out`.
    ///
    /// # Safety
    /// No other task may touch those channels' planes of that image while this runs.
    #[inline(always)]
    unsafe fn scatter(
        &self,
        src: &[Block],
        cols: usize,
        at: usize,
        out: Shared,
        (ni, c0, width): (usize, usize, usize),
    ) {
        let (h, w) = (self.h, self.w);
        for k in 0..width {
            // SAFETY: the caller's promise; `Shared::slice` checks the bounds.
            let dst = unsafe { out.slice(((c0 + k) * self.batch + self.first + ni) * h * w, h * w) };
            for (r, row) in dst.chunks_exact_mut(w).enumerate() {
                for (d, s) in row.iter_mut().zip(&src[at + r * cols..][..w]) {
                    *d = s.0[k];
                }
            }
        }
    }

    /// `V = Bᵀ d B` of every tile of `x` (`c_in × batch × h × w`), zero outside the image: `E × tiles × c_in`.
    fn input(&self, x: &[f32]) -> Vec<f32> {
        let mut v = uninit(self.e() * self.tiles() * self.c_in);
        by_scheme!(self.input_in(x, Shared::of(&mut v)));
        v
    }

    fn input_in<S: Scheme>(&self, x: &[f32], v: Shared) {
        self.blocks(self.c_in, |block| input_task::<S>(self, x, v, block));
    }

    /// One (image, block of channels) task of [`Winograd::input_in`]: the image with a border of zeros, one pixel on
    /// the top and left, the rest of the last tiles' on the bottom and right.
    #[inline(always)]
    fn input_task<S: Scheme>(&self, x: &[f32], v: Shared, block: (usize, usize, usize)) {
        self.tile_transform(x, v, self.c_in, (S::M, 1), (S::A, S::A), S::bt, block)
    }

    /// One (image, block of channels) task of a transform from a channel-major buffer into a tile-major one: the
    /// block's channels of `src`'s image gathered into a local buffer with `pad` zeros around it (and more past
    /// the last tiles), each tile's `n_in × n_in` values (a tile every `m` pixels) transformed by `f` into `n_out ×
    /// n_out` elements, each element's channels one run of `dst` (`E × tiles × channels`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn tile_transform<const I: usize, const O: usize>(
        &self,
        src: &[f32],
        dst: Shared,
        channels: usize,
        (m, pad): (usize, usize),
        (n_in, n_out): (usize, usize),
        f: impl Fn([Block; I]) -> [Block; O],
        (ni, c0, width): (usize, usize, usize),
    ) {
        let (th, tw) = self.grid();
        let (t, cols) = (self.tiles(), m * tw + 2 * pad);
        let mut p = self.framed((m * th + 2 * pad, cols), (pad, pad), width);
        self.gather(src, (ni, c0, width), &mut p, cols, pad * cols + pad);
        for ty in 0..th {
            for tx in 0..tw {
                let d = |i: usize, j: usize| p[(m * ty + i) * cols + m * tx + j];
                let tile = (ni * th + ty) * tw + tx;
                separable((n_in, n_out), &f, d, |i, j, value| {
                    // SAFETY: each task writes its own image's tiles' runs of its own channels.
                    value.store(unsafe { dst.slice(((i * n_out + j) * t + tile) * channels + c0, width) })
                });
            }
        }
    }

    /// The convolution from transformed weights and input, plus `bias` per channel, into this part's images of `y`
    /// (`c_out × batch × h × w`).
    fn forward(&self, u: &[f32], v: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let (co, ci, t, e) = (self.c_out, self.c_in, self.tiles(), self.e());
        let mut m = uninit(e * t * co);
        let ei = e as isize;
        sgemm_batched_wide(e, (co, t, ci), ((u, (ci as isize * ei, ei)), 1), ((v, (1, ci as isize)), t * ci), &mut m);
        by_scheme!(self.output(&m, bias, Shared::of(y)))
    }

    /// `Y = Aᵀ M A + bias` of every tile of `m` (`E × tiles × c_out`) into this part's images of `y`.
    fn output<S: Scheme>(&self, mm: &[f32], bias: Option<&[f32]>, y: Shared) {
        self.blocks(self.c_out, |block| output_task::<S>(self, mm, bias, y, block));
    }

    /// One (image, block of channels) task of [`Winograd::output`].
    #[inline(always)]
    fn output_task<S: Scheme>(
        &self,
        mm: &[f32],
        bias: Option<&[f32]>,
        y: Shared,
        (ni, c0, width): (usize, usize, usize),
    ) {
        let (m, a) = (S::M, S::A);
        let (th, tw) = self.grid();
        let (t, co, yw) = (self.tiles(), self.c_out, m * tw);
        let bias = bias.map_or(Block::ZERO, |b| Block::load(&b[c0..c0 + width]));
        // Whole tiles: past the image's bottom and right when m does not divide its sides.
        // The tiles cover it, each of their values written below before the scatter reads any.
        let mut out = uninit(m * th * yw);
        for ty in 0..th {
            for tx in 0..tw {
                let tile = (ni * th + ty) * tw + tx;
                let el = |i: usize, j: usize| Block::load(&mm[((i * a + j) * t + tile) * co + c0..][..width]);
                separable((a, m), S::at, el, |i, j, value| out[(m * ty + i) * yw + m * tx + j] = value + bias);
            }
        }
        // SAFETY: each task writes its own image's planes of its own channels.
        unsafe { self.scatter(&out, yw, 0, y, (ni, c0, width)) };
    }

    /// `dM = A dY Aᵀ` of every output tile of `dy` (`c_out × batch × h × w`), zero outside the image: `E × tiles ×
    /// c_out`.
    fn output_grad(&self, dy: &[f32]) -> Vec<f32> {
        let mut dm = uninit(self.e() * self.tiles() * self.c_out);
        by_scheme!(self.output_grad_in(dy, Shared::of(&mut dm)));
        dm
    }

    fn output_grad_in<S: Scheme>(&self, dy: &[f32], dm: Shared) {
        self.blocks(self.c_out, |block| output_grad_task::<S>(self, dy, dm, block));
    }

    /// One (image, block of channels) task of [`Winograd::output_grad_in`]: whole tiles, zeros past the image's
    /// bottom and right.
    #[inline(always)]
    fn output_grad_task<S: Scheme>(&self, dy: &[f32], dm: Shared, block: (usize, usize, usize)) {
        self.tile_transform(dy, dm, self.c_out, (S::M, 0), (S::M, S::A), S::a, block)
    }

    /// Adds this part's `Σ_tiles dM_e · V_eᵀ` (`E × c_out × c_in`) to `du`, from [`Winograd::output_grad`] and
    /// [`Winograd::input`]. Each product sums over the part's tiles on one thread: the same bits on every run.
    fn weight_products(&self, dm: &[f32], v: &[f32], du: &mut [f32]) {
        let (co, ci, t, e) = (self.c_out, self.c_in, self.tiles(), self.e());
        let mut part = uninit(e * co * ci);
        let (a, b) = ((dm, (1, co as isize)), (v, (ci as isize, 1)));
        sgemm_batched_long(e, (co, ci, t), (a, t * co), (b, t * ci), &mut part);
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
        let mut dv = uninit(e * t * ci);
        let ei = e as isize;
        sgemm_batched_wide(e, (ci, t, co), ((u, (ei, ci as isize * ei)), 1), ((dm, (1, co as isize)), t * co), &mut dv);
        by_scheme!(self.input_grad_in(&dv, Shared::of(dx)))
    }

    /// `B dV Bᵀ` of every tile of `dv` (`E × tiles × c_in`), summed where the tiles overlap, into this part's images
    /// of `dx`.
    fn input_grad_in<S: Scheme>(&self, dv: &[f32], dx: Shared) {
        self.blocks(self.c_in, |block| input_grad_task::<S>(self, dv, dx, block));
    }

    /// One (image, block of channels) task of [`Winograd::input_grad_in`].
    #[inline(always)]
    fn input_grad_task<S: Scheme>(&self, dv: &[f32], dx: Shared, (ni, c0, width): (usize, usize, usize)) {
        let (m, a) = (S::M, S::A);
        let (th, tw) = self.grid();
        let (t, ci, pw) = (self.tiles(), self.c_in, m * tw + 2);
        // The image with [`Winograd::input_task`]'s border, where the tiles' edges fall.
        let mut p = vec![Block::ZERO; (m * th + 2) * pw];
        for ty in 0..th {
            for tx in 0..tw {
                let tile = (ni * th + ty) * tw + tx;
                let el = |i: usize, j: usize| Block::load(&dv[((i * a + j) * t + tile) * ci + c0..][..width]);
                separable((a, a), S::b, el, |x, y, value| {
                    let d = &mut p[(m * ty + x) * pw + m * tx + y];
                    *d = *d + value;
                });
            }
        }
        // SAFETY: each task writes its own image's planes of its own channels.
        unsafe { self.scatter(&p, pw, pw + 1, dx, (ni, c0, width)) };
    }
}

/// The separable two-dimensional transform of one tile: `f` down each of the first `n_in` columns of `d(i, j)` (an
/// `n_in × n_in` tile), then along each row of the result; `out(i, j, value)` for its `n_out × n_out` values.
#[inline(always)]
fn separable<const I: usize, const O: usize>(
    (n_in, n_out): (usize, usize),
    f: impl Fn([Block; I]) -> [Block; O],
    d: impl Fn(usize, usize) -> Block,
    mut out: impl FnMut(usize, usize, Block),
) {
    // cols[j] = f of column j of d.
    let mut cols = [[Block::ZERO; O]; I];
    for (j, col) in cols.iter_mut().enumerate().take(n_in) {
        let mut values = [Block::ZERO; I];
        for (i, value) in values.iter_mut().enumerate().take(n_in) {
            *value = d(i, j);
        }
        *col = f(values);
    }
    for i in 0..n_out {
        let mut values = [Block::ZERO; I];
        for (value, col) in values.iter_mut().zip(&cols).take(n_in) {
            *value = col[i];
        }
        for (j, value) in f(values).into_iter().enumerate().take(n_out) {
            out(i, j, value);
        }
    }
}

/// The widest instructions [`widest!`] may pick: 2 AVX-512, 1 AVX2, 0 the build's target. Always 2 but in the test
/// that compares the paths.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
static WIDEST: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// `$name::<S>(g, args…)` runs `g.$task::<S>(args…)` compiled for the widest vector instructions this CPU has
/// (AVX-512: a [`Block`] is one register; AVX2: two), else for the build's target. The transforms' arithmetic is
/// the same on every path (no fused multiply-adds): the same bits whichever runs.
macro_rules! widest {
    ($name:ident, $task:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name<S: Scheme>(g: &Winograd, $($arg: $ty,)* block: (usize, usize, usize)) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<S: Scheme>(g: &Winograd, $($arg: $ty,)* block: (usize, usize, usize)) {
                    g.$task::<S>($($arg,)* block)
                }
                #[target_feature(enable = "avx2")]
                fn avx2<S: Scheme>(g: &Winograd, $($arg: $ty,)* block: (usize, usize, usize)) {
                    g.$task::<S>($($arg,)* block)
                }
                let widest = WIDEST.load(std::sync::atomic::Ordering::Relaxed);
                if widest >= 2 && std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512::<S>(g, $($arg,)* block) };
                }
                if widest >= 1 && std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2::<S>(g, $($arg,)* block) };
                }
            }
            g.$task::<S>($($arg,)* block)
        }
    };
}
widest!(input_task, input_task, (x: &[f32], v: Shared));
widest!(output_task, output_task, (mm: &[f32], bias: Option<&[f32]>, y: Shared));
widest!(output_grad_task, output_grad_task, (dy: &[f32], dm: Shared));
widest!(input_grad_task, input_grad_task, (dv: &[f32], dx: Shared));

/// Channels a transform task takes side by side ([`Winograd::blocks`]): a tile element's run of them is one cache
/// line.
const CB: usize = 16;

/// One pixel's or tile element's values of [`CB`] channels.
type Block = Lanes<CB>;

/// `N` values combined lane by lane (fixed-size array loops, for LLVM to keep in vector registers).
#[derive(Clone, Copy)]
struct Lanes<const N: usize>([f32; N]);

// SAFETY: `N` floats, nothing else.
unsafe impl<const N: usize> Plain for Lanes<N> {}

macro_rules! lanewise {
    ($trait:ident, $f:ident, $op:tt) => {
        impl<const N: usize> $trait for Lanes<N> {
            type Output = Lanes<N>;
            #[inline(always)]
            fn $f(self, other: Lanes<N>) -> Lanes<N> {
                let mut r = self.0;
                for (r, o) in r.iter_mut().zip(other.0) {
                    *r $op o;
                }
                Lanes(r)
            }
        }
    };
}
lanewise!(Add, add, +=);
lanewise!(Sub, sub, -=);

impl<const N: usize> Mul<f32> for Lanes<N> {
    type Output = Lanes<N>;
    #[inline(always)]
    fn mul(self, s: f32) -> Lanes<N> {
        let mut r = self.0;
        r.iter_mut().for_each(|v| *v *= s);
        Lanes(r)
    }
}

impl<const N: usize> Neg for Lanes<N> {
    type Output = Lanes<N>;
    #[inline(always)]
    fn neg(self) -> Lanes<N> {
        let mut r = self.0;
        r.iter_mut().for_each(|v| *v = -*v);
        Lanes(r)
    }
}

impl<const N: usize> Lanes<N> {
    const ZERO: Lanes<N> = Lanes([0.0; N]);

    /// `src`'s values in the first lanes (at most `N`), zeros in the rest.
    #[inline(always)]
    fn load(src: &[f32]) -> Lanes<N> {
        match src.try_into() {
            Ok(all) => Lanes(all),
            Err(_) => {
                let mut r = [0f32; N];
                r.iter_mut().zip(src).for_each(|(lane, &value)| *lane = value);
                Lanes(r)
            }
        }
    }

    /// The first lanes into `dst` (at most `N`).
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        match dst.len() {
            len if len == N => dst.copy_from_slice(&self.0),
            _ => dst.iter_mut().zip(self.0).for_each(|(value, lane)| *value = lane),
        }
    }
}

/// What the one-dimensional transforms compute with: [`Lanes`] of channels.
trait Num: Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> + Mul<f32, Output = Self> {}

impl<const N: usize> Num for Lanes<N> {}

/// A buffer that the transform tasks write in disjoint parts, each its own.
#[derive(Clone, Copy)]
struct Shared(*mut f32, usize);

// SAFETY: the tasks that share it write disjoint parts ([`Shared::slice`]'s contract).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn of(buf: &mut [f32]) -> Shared {
        Shared(buf.as_mut_ptr(), buf.len())
    }

    /// `len` values from `start`, bounds checked.
    ///
    /// # Safety
    /// No other task may touch them while the slice lives, and the buffer must outlive it.
    unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(start + len <= self.1, "a transform wrote past its buffer");
        // SAFETY: inside the buffer (checked), and the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
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
        // The last three have more channels (in or out) than one block of the transforms' tasks, and a partial block.
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
            (2, 3, 17, 5, 7),
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

    /// Winograd takes a convolution from [`MIN_TILES`] tiles over the batch on, and 3×3, stride 1, padding 1 only.
    #[test]
    fn takes_enough_tiles_only() {
        // 4×4 images: 4 tiles each through F(2×2).
        assert!(Winograd::of(MIN_TILES / 4 - 1, (512, 4, 4), 512, 3, 1, 1).is_none());
        assert_eq!(Winograd::of(MIN_TILES / 4, (512, 4, 4), 512, 3, 1, 1).map(|g| g.tiles()), Some(MIN_TILES));
        assert!(Winograd::of(0, (64, 28, 28), 64, 3, 1, 1).is_none());
        assert!(Winograd::of(32, (64, 28, 28), 64, 3, 2, 1).is_none());
        assert!(Winograd::of(32, (64, 28, 28), 64, 5, 1, 2).is_none());
        assert_eq!(Winograd::of(32, (64, 32, 32), 64, 3, 1, 1).map(|g| g.m), Some(4));
    }

    /// The transforms compiled for AVX-512, AVX2 and the build's target give the same bits (where this CPU has them;
    /// a missing one falls back to the next, trivially equal).
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        for m in [2, 4] {
            let (n, ci, co, h, w) = (2, 20, 18, 9, 13);
            let g = Winograd { n, c_in: ci, c_out: co, h, w, m, batch: n, first: 0 };
            let (x, wt, bias, dy) =
                (values(ci * n * h * w, 1), values(co * ci * 9, 2), values(co, 3), values(co * n * h * w, 4));
            let run = |widest: u8| {
                WIDEST.store(widest, std::sync::atomic::Ordering::Relaxed);
                let y = g.convolve(&wt, &x, Some(&bias));
                let (dw, dx) = g.gradients(&wt, &x, &dy, true);
                WIDEST.store(2, std::sync::atomic::Ordering::Relaxed);
                (y, dw, dx)
            };
            let widest = run(2);
            for level in [1, 0] {
                assert!(run(level) == widest, "F({m}, 3) at level {level} differs from the widest path");
            }
        }
    }
}
