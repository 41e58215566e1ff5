//! Winograd's minimal filtering for 3×3 convolutions, F(2×2, 3×3) (Lavin & Gray 2016, "Fast Algorithms for
//! Convolutional Neural Networks"): every 2×2 block of outputs comes from one 4×4 input tile with 16 products
//! instead of 36, so a stride-1, padding-1 convolution becomes 16 matrix products `M_e = U_e · V_e`
//! (`c_out × c_in` by `c_in × tiles`, 2.25× fewer multiply-adds than im2col + GEMM) between cheap transforms:
//! `U = G g Gᵀ` of each filter, `V = Bᵀ d B` of each input tile, `Y = Aᵀ M A` of each output tile.
//!
//! The backward pass is made of the same pieces' adjoints: `dM = A dY Aᵀ`; the input gradient is
//! `B (U_eᵀ · dM_e) Bᵀ` summed over the overlapping tiles, the weight gradient `Gᵀ (Σ_tiles dM_e · V_eᵀ) G`.
//!
//! Values are channel-major over the batch (`c × n × h × w`), as the graph executor keeps them. Layouts:
//! `U` is `c_out × c_in × 16`, `V` and `dM` are `channel × 16 × tiles` (each channel one contiguous block, written
//! by one task), `M` and `dV` are `16 × channel × tiles` (each product's result contiguous).

use super::{sgemm_batched_long, sgemm_batched_wide};
use rayon::prelude::*;

/// Elements of a transformed tile.
const E: usize = 16;

/// A 3×3, stride-1, padding-1 convolution of `n` images of `c_in × h × w` into `c_out` channels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Winograd {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
}

impl Winograd {
    /// The Winograd form of a convolution of `n` images of `input` (`c_in × h × w`) into `c_out` channels, where it
    /// applies (3×3, stride 1, padding 1) and has channels to amortise its tile transforms over (a first layer's 1
    /// or 3 input channels keep im2col + GEMM). `None` for an empty batch or image too: the transforms split their
    /// work by image and plane, which must not be empty.
    pub fn of(
        n: usize,
        (c_in, h, w): (usize, usize, usize),
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        (k == 3 && stride == 1 && pad == 1 && c_in >= 8 && n * h * w > 0).then_some(Winograd { n, c_in, c_out, h, w })
    }

    /// Tile rows and columns per image: `⌈h/2⌉ × ⌈w/2⌉`.
    fn grid(&self) -> (usize, usize) {
        (self.h.div_ceil(2), self.w.div_ceil(2))
    }

    /// Tiles over the batch: the columns of every product.
    pub fn tiles(&self) -> usize {
        let (th, tw) = self.grid();
        self.n * th * tw
    }

    /// `U = G g Gᵀ` of every filter of `weight` (`c_out × c_in × 3 × 3`).
    pub fn weight(&self, weight: &[f32]) -> Vec<f32> {
        let mut u = vec![0f32; self.c_out * self.c_in * E];
        u.par_chunks_mut(self.c_in * E).zip(weight.par_chunks(self.c_in * 9)).for_each(|(out, filters)| {
            for (t, g) in out.chunks_exact_mut(E).zip(filters.chunks_exact(9)) {
                // Columns first (G g), then rows ((G g) Gᵀ).
                let mut a = [0f32; 12];
                for j in 0..3 {
                    let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                    a[j] = g0;
                    a[3 + j] = 0.5 * (g0 + g1 + g2);
                    a[6 + j] = 0.5 * (g0 - g1 + g2);
                    a[9 + j] = g2;
                }
                for r in 0..4 {
                    let (a0, a1, a2) = (a[3 * r], a[3 * r + 1], a[3 * r + 2]);
                    t[4 * r] = a0;
                    t[4 * r + 1] = 0.5 * (a0 + a1 + a2);
                    t[4 * r + 2] = 0.5 * (a0 - a1 + a2);
                    t[4 * r + 3] = a2;
                }
            }
        });
        u
    }

    /// `V = Bᵀ d B` of every 4×4 tile of `x` (`c_in × n × h × w`), zero outside the image.
    pub fn input(&self, x: &[f32]) -> Vec<f32> {
        let t = self.tiles();
        let mut v = uninit(self.c_in * E * t);
        v.par_chunks_mut(E * t)
            .zip(x.par_chunks(self.n * self.h * self.w))
            .for_each(|(out, channel)| self.input_channel(channel, out));
        v
    }

    /// [`Winograd::input`] laid out `16 × tiles × c_in` (each tile's channels contiguous): the weight gradient's
    /// operand in the layout the gemm crate reads as it is. From [`Winograd::input`]'s layout its panels are
    /// gathered one value at a time, rows `16 × tiles` apart (15 % of WARN's training step went there).
    pub fn input_by_tile(&self, x: &[f32]) -> Vec<f32> {
        let (ci, t) = (self.c_in, self.tiles());
        let per_image = t / self.n.max(1);
        let mut v = uninit(E * t * ci);
        // Each image's tiles are a contiguous run of rows in each of the 16 planes: one task per image.
        let mut images: Vec<Vec<&mut [f32]>> = (0..self.n).map(|_| Vec::with_capacity(E)).collect();
        for plane in v.chunks_mut(t * ci) {
            for (image, rows) in images.iter_mut().zip(plane.chunks_mut(per_image * ci)) {
                image.push(rows);
            }
        }
        let one = Winograd { n: 1, ..*self };
        let plane = self.h * self.w;
        images.into_par_iter().enumerate().for_each(|(ni, mut rows)| {
            // Blocks of channels transformed into `local` (`channel × 16 × tiles`), then written a tile's block of
            // channels (one cache line) at a time.
            const BLOCK: usize = 16;
            let mut local = vec![0f32; BLOCK * E * per_image];
            for c0 in (0..ci).step_by(BLOCK) {
                let width = BLOCK.min(ci - c0);
                for (k, out) in local.chunks_exact_mut(E * per_image).take(width).enumerate() {
                    let c = c0 + k;
                    one.input_channel(&x[(c * self.n + ni) * plane..][..plane], out);
                }
                for (e, dst) in rows.iter_mut().enumerate() {
                    for (tile, run) in dst.chunks_exact_mut(ci).enumerate() {
                        for (k, value) in run[c0..c0 + width].iter_mut().enumerate() {
                            *value = local[(k * E + e) * per_image + tile];
                        }
                    }
                }
            }
        });
        v
    }

    /// [`Winograd::input`] of one channel, a row of tiles at a time: the row transform on whole padded rows, the
    /// column transform on their even and odd columns (so every loop runs over contiguous tiles).
    fn input_channel(&self, channel: &[f32], out: &mut [f32]) {
        let (th, tw) = self.grid();
        let (h, w, t) = (self.h, self.w, self.tiles());
        let pw = 2 * tw + 2;
        let mut padded = vec![0f32; (2 * th + 2) * pw];
        let (mut rows, mut even, mut odd) = (vec![0f32; 4 * pw], vec![0f32; tw + 1], vec![0f32; tw + 1]);
        for (ni, plane) in channel.chunks_exact(h * w).enumerate() {
            for (r, row) in plane.chunks_exact(w).enumerate() {
                padded[(r + 1) * pw + 1..][..w].copy_from_slice(row);
            }
            for ty in 0..th {
                let d = |i: usize| &padded[(2 * ty + i) * pw..][..pw];
                let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
                let (t0, rest) = rows.split_at_mut(pw);
                let (t1, rest) = rest.split_at_mut(pw);
                let (t2, t3) = rest.split_at_mut(pw);
                for k in 0..pw {
                    t0[k] = d0[k] - d2[k];
                    t1[k] = d1[k] + d2[k];
                    t2[k] = d2[k] - d1[k];
                    t3[k] = d1[k] - d3[k];
                }
                let col = (ni * th + ty) * tw;
                for r in 0..4 {
                    let row = &rows[r * pw..][..pw];
                    for k in 0..=tw {
                        even[k] = row[2 * k];
                        odd[k] = row[2 * k + 1];
                    }
                    let (e0, rest) = out[(4 * r) * t + col..].split_at_mut(t);
                    let (e1, rest) = rest.split_at_mut(t);
                    let (e2, e3) = rest.split_at_mut(t);
                    for k in 0..tw {
                        let (a, b, c, d) = (even[k], odd[k], even[k + 1], odd[k + 1]);
                        e0[k] = a - c;
                        e1[k] = b + c;
                        e2[k] = c - b;
                        e3[k] = b - d;
                    }
                }
            }
        }
    }

    /// The convolution from transformed weights and input: `c_out × n × h × w`, plus `bias` per channel.
    pub fn forward(&self, u: &[f32], v: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (co, ci, t) = (self.c_out, self.c_in, self.tiles());
        let mut m = uninit(E * co * t);
        sgemm_batched_wide(E, (co, t, ci), ((u, (ci as isize * 16, 16)), 1), ((v, (16 * t as isize, 1)), t), &mut m);
        let mut y = uninit(co * self.n * self.h * self.w);
        y.par_chunks_mut(self.n * self.h * self.w).enumerate().for_each(|(c, out)| {
            let rows: Vec<&[f32]> = (0..E).map(|e| &m[(e * co + c) * t..][..t]).collect();
            self.output_channel(&rows, bias.map_or(0.0, |b| b[c]), out)
        });
        y
    }

    /// `Y = Aᵀ M A + bias` of one channel's tiles (`rows[e]`: element `e` of every tile), a row of tiles at a time.
    fn output_channel(&self, rows: &[&[f32]], bias: f32, out: &mut [f32]) {
        let (th, tw) = self.grid();
        let (h, w) = (self.h, self.w);
        let mut s = vec![0f32; 8 * tw];
        let (mut even, mut odd) = (vec![0f32; tw], vec![0f32; tw]);
        for ni in 0..self.n {
            for ty in 0..th {
                let col = (ni * th + ty) * tw;
                let m = |e: usize| &rows[e][col..][..tw];
                // s[i][j] = (Aᵀ m)[i][j], tile by tile.
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (m(j), m(4 + j), m(8 + j), m(12 + j));
                    let (s0, s1) = s.split_at_mut(4 * tw);
                    let (s0, s1) = (&mut s0[j * tw..][..tw], &mut s1[j * tw..][..tw]);
                    for k in 0..tw {
                        s0[k] = m0[k] + m1[k] + m2[k];
                        s1[k] = m1[k] - m2[k] - m3[k];
                    }
                }
                for i in 0..2 {
                    let r = 2 * ty + i;
                    if r >= h {
                        break;
                    }
                    let si = |j: usize| &s[(4 * i + j) * tw..][..tw];
                    let (s0, s1, s2, s3) = (si(0), si(1), si(2), si(3));
                    for k in 0..tw {
                        even[k] = s0[k] + s1[k] + s2[k] + bias;
                        odd[k] = s1[k] - s2[k] - s3[k] + bias;
                    }
                    let dst = &mut out[(ni * h + r) * w..][..w];
                    for (k, pair) in dst.chunks_mut(2).enumerate() {
                        pair[0] = even[k];
                        if let Some(o) = pair.get_mut(1) {
                            *o = odd[k];
                        }
                    }
                }
            }
        }
    }

    /// `dM = A dY Aᵀ` of every output tile of `dy` (`c_out × n × h × w`): `c_out × 16 × tiles`.
    pub fn output_grad(&self, dy: &[f32]) -> Vec<f32> {
        let t = self.tiles();
        let mut dm = uninit(self.c_out * E * t);
        dm.par_chunks_mut(E * t)
            .zip(dy.par_chunks(self.n * self.h * self.w))
            .for_each(|(out, channel)| self.output_grad_channel(channel, out));
        dm
    }

    /// [`Winograd::output_grad`] of one channel, a row of tiles at a time.
    fn output_grad_channel(&self, channel: &[f32], out: &mut [f32]) {
        let (th, tw) = self.grid();
        let (h, w, t) = (self.h, self.w, self.tiles());
        // u[i][j] = (dY Aᵀ)[i][j] for the tile row's two output rows i.
        let mut u = vec![0f32; 8 * tw];
        for ni in 0..self.n {
            for ty in 0..th {
                for i in 0..2 {
                    let r = 2 * ty + i;
                    let (u0, rest) = u[4 * i * tw..].split_at_mut(tw);
                    let (u1, rest) = rest.split_at_mut(tw);
                    let (u2, rest) = rest.split_at_mut(tw);
                    let u3 = &mut rest[..tw];
                    if r >= h {
                        for part in [u0, u1, u2, u3] {
                            part.fill(0.0);
                        }
                        continue;
                    }
                    let src = &channel[(ni * h + r) * w..][..w];
                    for k in 0..tw {
                        let g0 = src[2 * k];
                        let g1 = if 2 * k + 1 < w { src[2 * k + 1] } else { 0.0 };
                        u0[k] = g0;
                        u1[k] = g0 + g1;
                        u2[k] = g0 - g1;
                        u3[k] = -g1;
                    }
                }
                let col = (ni * th + ty) * tw;
                for j in 0..4 {
                    let (a, b) = (&u[j * tw..][..tw], &u[(4 + j) * tw..][..tw]);
                    let (m0, rest) = out[j * t + col..].split_at_mut(4 * t);
                    let (m1, rest) = rest.split_at_mut(4 * t);
                    let (m2, m3) = rest.split_at_mut(4 * t);
                    for k in 0..tw {
                        m0[k] = a[k];
                        m1[k] = a[k] + b[k];
                        m2[k] = a[k] - b[k];
                        m3[k] = -b[k];
                    }
                }
            }
        }
    }

    /// The weight gradient `Gᵀ (Σ_tiles dM_e · V_eᵀ) G` (`c_out × c_in × 3 × 3`), from [`Winograd::output_grad`] and
    /// [`Winograd::input_by_tile`]. Each product sums over every tile on one thread: the same bits on every run.
    pub fn weight_grad(&self, dm: &[f32], v_by_tile: &[f32]) -> Vec<f32> {
        let (co, ci, t) = (self.c_out, self.c_in, self.tiles());
        let mut du = uninit(E * co * ci);
        let (a, b) = ((dm, (16 * t as isize, 1)), (v_by_tile, (ci as isize, 1)));
        sgemm_batched_long(E, (co, ci, t), (a, t), (b, t * ci), &mut du);
        let mut dw = uninit(co * ci * 9);
        dw.par_chunks_mut(ci * 9).enumerate().for_each(|(o, filters)| {
            for (i, g) in filters.chunks_exact_mut(9).enumerate() {
                let mut d = [0f32; E];
                for (e, val) in d.iter_mut().enumerate() {
                    *val = du[(e * co + o) * ci + i];
                }
                g.copy_from_slice(&weight_transform_adjoint(&d));
            }
        });
        dw
    }

    /// The input gradient `B (U_eᵀ · dM_e) Bᵀ`, summed over the overlapping tiles (`c_in × n × h × w`).
    pub fn input_grad(&self, u: &[f32], dm: &[f32]) -> Vec<f32> {
        let (co, ci, t) = (self.c_out, self.c_in, self.tiles());
        let mut dv = uninit(E * ci * t);
        sgemm_batched_wide(E, (ci, t, co), ((u, (16, ci as isize * 16)), 1), ((dm, (16 * t as isize, 1)), t), &mut dv);
        let mut dx = uninit(ci * self.n * self.h * self.w);
        dx.par_chunks_mut(self.n * self.h * self.w).enumerate().for_each(|(c, channel)| {
            let rows: Vec<&[f32]> = (0..E).map(|e| &dv[(e * ci + c) * t..][..t]).collect();
            self.input_grad_channel(&rows, channel)
        });
        dx
    }

    /// `B dV Bᵀ` of one channel's tiles (`rows[e]`), summed into the overlapping tiles of `channel`, a row of tiles
    /// at a time: the row adjoint tile by tile, the column adjoint into even and odd columns, then interleaved.
    fn input_grad_channel(&self, rows: &[&[f32]], channel: &mut [f32]) {
        let (th, tw) = self.grid();
        let (h, w) = (self.h, self.w);
        let pw = 2 * tw + 2;
        let mut padded = vec![0f32; (2 * th + 2) * pw];
        let mut q = vec![0f32; 16 * tw];
        let (mut even, mut odd) = (vec![0f32; tw + 1], vec![0f32; tw + 1]);
        for (ni, plane) in channel.chunks_exact_mut(h * w).enumerate() {
            padded.fill(0.0);
            for ty in 0..th {
                let col = (ni * th + ty) * tw;
                let v = |e: usize| &rows[e][col..][..tw];
                // q[i][c] = (B dV)[i][c], tile by tile.
                for c in 0..4 {
                    let (v0, v1, v2, v3) = (v(c), v(4 + c), v(8 + c), v(12 + c));
                    let (q0, rest) = q[c * tw..].split_at_mut(4 * tw);
                    let (q1, rest) = rest.split_at_mut(4 * tw);
                    let (q2, q3) = rest.split_at_mut(4 * tw);
                    for k in 0..tw {
                        q0[k] = v0[k];
                        q1[k] = v1[k] - v2[k] + v3[k];
                        q2[k] = v1[k] + v2[k] - v0[k];
                        q3[k] = -v3[k];
                    }
                }
                for i in 0..4 {
                    let qi = |c: usize| &q[(4 * i + c) * tw..][..tw];
                    let (q0, q1, q2, q3) = (qi(0), qi(1), qi(2), qi(3));
                    even[tw] = 0.0;
                    odd[tw] = 0.0;
                    for k in 0..tw {
                        even[k] = q0[k];
                        odd[k] = q1[k] - q2[k] + q3[k];
                    }
                    for k in 0..tw {
                        even[k + 1] += q1[k] + q2[k] - q0[k];
                        odd[k + 1] -= q3[k];
                    }
                    let dst = &mut padded[(2 * ty + i) * pw..][..pw];
                    for k in 0..=tw {
                        dst[2 * k] += even[k];
                        dst[2 * k + 1] += odd[k];
                    }
                }
            }
            for (r, row) in plane.chunks_exact_mut(w).enumerate() {
                row.copy_from_slice(&padded[(r + 1) * pw + 1..][..w]);
            }
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

/// `Gᵀ dU G`: the adjoint of the filter transform in [`Winograd::weight`].
fn weight_transform_adjoint(du: &[f32; E]) -> [f32; 9] {
    let mut b = [0f32; 12];
    for c in 0..4 {
        let (u0, u1, u2, u3) = (du[c], du[4 + c], du[8 + c], du[12 + c]);
        b[c] = u0 + 0.5 * (u1 + u2);
        b[4 + c] = 0.5 * (u1 - u2);
        b[8 + c] = 0.5 * (u1 + u2) + u3;
    }
    let mut g = [0f32; 9];
    for k in 0..3 {
        let (b0, b1, b2, b3) = (b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]);
        g[3 * k] = b0 + 0.5 * (b1 + b2);
        g[3 * k + 1] = 0.5 * (b1 - b2);
        g[3 * k + 2] = 0.5 * (b1 + b2) + b3;
    }
    g
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

    /// The forward pass, input gradient and weight gradient equal a direct float64 convolution and its adjoints,
    /// on even, odd, one-pixel and wide shapes (ragged edge tiles), several images and channels.
    #[test]
    fn equals_direct_convolution_and_its_adjoints() {
        // The last two have more channels than one block of `input_by_tile`, and a partial block.
        let shapes =
            [(2, 3, 4, 6, 6), (3, 2, 5, 7, 5), (1, 1, 1, 1, 1), (2, 4, 3, 2, 9), (1, 5, 2, 3, 1), (2, 20, 3, 5, 4)];
        for &(n, ci, co, h, w) in shapes.iter().chain(&[(3, 33, 2, 3, 3)]) {
            let g = Winograd { n, c_in: ci, c_out: co, h, w };
            let x = values(ci * n * h * w, 1);
            let wt = values(co * ci * 9, 2);
            let bias = values(co, 3);
            let dy = values(co * n * h * w, 4);
            let (y0, dx0, dw0) = direct(&g, &x, &wt, &dy);
            let (u, v) = (g.weight(&wt), g.input(&x));
            let y = g.forward(&u, &v, Some(&bias));
            let unbiased: Vec<f32> = y.iter().enumerate().map(|(k, &val)| val - bias[k / (n * h * w)]).collect();
            let dm = g.output_grad(&dy);
            let (dx, dw) = (g.input_grad(&u, &dm), g.weight_grad(&dm, &g.input_by_tile(&x)));
            let shape = (n, ci, co, h, w);
            assert!(worst(&unbiased, &y0) < 1e-6, "forward {shape:?}: {}", worst(&unbiased, &y0));
            assert!(worst(&dx, &dx0) < 1e-6, "input gradient {shape:?}: {}", worst(&dx, &dx0));
            assert!(worst(&dw, &dw0) < 1e-6, "weight gradient {shape:?}: {}", worst(&dw, &dw0));
        }
    }
}
