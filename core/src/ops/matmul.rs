//! Matrix products where one factor is a constant (a frozen model's weights). candle's autograd computes the
//! gradient of both factors of every product; for saliency maps the weights' gradient is wasted work, a third of
//! the backward pass. These products back-propagate to the variable factor only.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// `constant · x`
    Left,
    /// `x · constant`
    Right,
}

struct ConstMatmul {
    constant: Tensor,
    side: Side,
}

impl CustomOp1 for ConstMatmul {
    fn name(&self) -> &'static str {
        "whitebox-const-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (cs, cl) = self.constant.storage_and_layout();
        let Storage::Cpu(c) = &*cs else { candle_core::bail!("const matmul: constant is not on the CPU") };
        let (xr, xc) = layout.shape().dims2()?;
        let (cr, cc) = cl.shape().dims2()?;
        let (out, shape) = match self.side {
            Side::Left => {
                if cc != xr {
                    candle_core::bail!("const matmul: {cr}×{cc} · {xr}×{xc}");
                }
                (c.matmul(storage, (1, cr, xc, cc), cl, layout)?, (cr, xc))
            }
            Side::Right => {
                if xc != cr {
                    candle_core::bail!("const matmul: {xr}×{xc} · {cr}×{cc}");
                }
                (storage.matmul(c, (1, xr, cc, xc), layout, cl)?, (xr, cc))
            }
        };
        Ok((out, shape.into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(match self.side {
            Side::Left => self.constant.t()?.matmul(grad)?,
            Side::Right => grad.matmul(&self.constant.t()?)?,
        }))
    }
}

fn fast_path(constant: &Tensor, x: &Tensor) -> bool {
    !constant.track_op()
        && constant.device().is_cpu()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && constant.dtype() == DType::F32
}

/// `a · b` for 2-D tensors, skipping the gradient of `a` when it is a constant.
pub fn matmul_left(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast_path(a, b) {
        return b.contiguous()?.apply_op1(ConstMatmul { constant: a.clone(), side: Side::Left });
    }
    a.matmul(b)
}

/// `a · b` for 2-D tensors, skipping the gradient of `b` when it is a constant.
pub fn matmul_right(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast_path(b, a) {
        return a.contiguous()?.apply_op1(ConstMatmul { constant: b.clone(), side: Side::Right });
    }
    a.matmul(b)
}

/// A matrix operand: its elements and (row stride, column stride).
type Operand<'a> = (&'a [f32], (isize, isize));

/// Checks that an `rows × cols` matrix with non-negative `strides` lies inside `len` elements.
fn fits(len: usize, rows: usize, cols: usize, (rs, cs): (isize, isize)) -> bool {
    rs >= 0 && cs >= 0 && (rows == 0 || cols == 0 || (rows - 1) as isize * rs + (cols - 1) as isize * cs < len as isize)
}

/// `c (+)= a · b` through the gemm crate, `c` with (row stride, column stride) `c_s`.
///
/// # Safety
/// `a` (`m×k`), `b` (`k×n`) and `c` (`m×n`) must lie inside their allocations, and no other thread may touch the
/// part of `c` written here.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    c_s: (isize, isize),
    accumulate: bool,
    a: *const f32,
    a_s: (isize, isize),
    b: *const f32,
    b_s: (isize, isize),
    parallel: bool,
) {
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    gemm::gemm(
        m,
        n,
        k,
        c,
        c_s.1,
        c_s.0,
        accumulate,
        a,
        a_s.1,
        a_s.0,
        b,
        b_s.1,
        b_s.0,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// `c (m×n, row-major) (+)= a (m×k) · b (k×n)`, with `a` and `b` given by (row stride, column stride); on the rayon
/// pool when `parallel` (one large product), else on the calling thread (callers that split the work themselves).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_s: (isize, isize),
    b: &[f32],
    b_s: (isize, isize),
    c: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    assert!(c.len() >= m * n && fits(a.len(), m, k, a_s) && fits(b.len(), k, n, b_s), "sgemm operands do not fit");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the operands were checked to lie inside the slices; `c` is borrowed mutably.
    unsafe {
        gemm_raw(m, n, k, c.as_mut_ptr(), (n as isize, 1), accumulate, a.as_ptr(), a_s, b.as_ptr(), b_s, parallel)
    }
}

/// Columns per task in the split products below: measured best for the convolutions of the small CNNs here
/// (a block's operands stay in the L2 cache).
const BLOCK: usize = 512;

/// A pointer that may cross threads: each task writes its own disjoint part.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used by the split products, whose tasks write disjoint elements.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Tasks a split product aims for: enough for the thread pools here (2–16 threads) to share, fixed so that the split
/// (and so every bit of the result) depends on the shapes only, never on the thread count.
const TASKS: usize = 8;

/// The fewest rows (or columns) of the result a task gets when a product is split along the result's long side.
const MIN_SLICE: usize = 64;

/// `len` split into at most `parts` slices of at least [`MIN_SLICE`] (one slice when `len` is short): the slice
/// length and the number of slices.
fn slices(len: usize, parts: usize) -> (usize, usize) {
    let parts = parts.min(len.div_ceil(MIN_SLICE)).max(1);
    let per = len.div_ceil(parts).max(1);
    (per, len.div_ceil(per))
}

/// Lanes of the widest vector the gemm crate uses: column blocks are cut at multiples of it, so that only the last
/// block of a row ends in a partial vector.
const LANES: usize = 16;

/// The columns of a product split into blocks of about equal width (in whole [`LANES`]) of at most [`BLOCK`], and
/// into at least [`MIN_TASKS`] tasks together with `row_blocks` where the columns allow blocks of [`MIN_SLICE`]:
/// the block width and the number of blocks. Equal widths keep the threads equally busy (784 columns cut at 512
/// left one of two threads idle for a third of a 28 × 28 convolution).
fn column_blocks(n: usize, row_blocks: usize) -> (usize, usize) {
    let wanted = n.div_ceil(BLOCK).max(MIN_TASKS.div_ceil(row_blocks.max(1)).min(n.div_ceil(MIN_SLICE))).max(1);
    let per = n.div_ceil(LANES).div_ceil(wanted).max(1) * LANES;
    (per, n.div_ceil(per).max(1))
}

/// The fewest tasks a split product aims for: one per thread of the usual pools (2–4 threads) at least.
const MIN_TASKS: usize = 4;

/// `c (m×n) = a (m×k) · b (k×n)` for a wide `n` (a convolution's output positions): blocks of columns on the rayon
/// pool, each block one single-threaded product. Twice as fast as letting one product split itself at these
/// shapes (64 × 25,088 × 288 on 2 threads: 119 → 205 GFLOP/s). Where there are fewer column blocks than [`TASKS`]
/// (a few images of a small map: RAN's 4×4 stage over 32 images is one block) the rows are split too, so that
/// every thread has work (1×1, 512 → 2048 over 32 × 4 × 4 positions: one thread before).
pub(crate) fn sgemm_wide(m: usize, n: usize, k: usize, (a, a_s): Operand, (b, b_s): Operand, c: &mut [f32]) {
    assert!(c.len() >= m * n && fits(a.len(), m, k, a_s) && fits(b.len(), k, n, b_s), "sgemm operands do not fit");
    if m == 0 || n == 0 {
        return;
    }
    let (rows, row_blocks) = slices(m, TASKS.div_ceil(n.div_ceil(BLOCK)));
    let (cols, col_blocks) = column_blocks(n, row_blocks);
    let out = SendPtr(c.as_mut_ptr());
    (0..row_blocks * col_blocks).into_par_iter().for_each(|task| {
        let (r, t) = (task / col_blocks, task % col_blocks);
        let (r0, r1) = (r * rows, ((r + 1) * rows).min(m));
        let (lo, hi) = (t * cols, ((t + 1) * cols).min(n));
        // Rebinding moves the whole `SendPtr` into the closure (a field access alone would capture the raw pointer,
        // which is not `Send`).
        #[allow(clippy::redundant_locals)]
        let out = out;
        // SAFETY: rows r0..r1 of `a` and `c` and columns lo..hi of `b` and `c` lie inside the checked operands, and
        // each task writes its own block of `c`.
        unsafe {
            gemm_raw(
                r1 - r0,
                hi - lo,
                k,
                out.0.add(r0 * n + lo),
                (n as isize, 1),
                false,
                a.as_ptr().offset(r0 as isize * a_s.0),
                a_s,
                b.as_ptr().offset(lo as isize * b_s.1),
                b_s,
                false,
            )
        }
    });
}

/// `count` products `c_i (m×n) = a_i (m×k) · b_i (k×n)`, operand `i` starting `i·step` elements into its slice
/// and `c_i` column-major at `i·m·n` (element `(r, j)` at `i·m·n + j·m + r`: a Winograd buffer's `tiles ×
/// channels`): every (product, block of columns) pair one task on the rayon pool, so many small products
/// (Winograd's 16 per convolution over a few images) still fill every thread.
pub(crate) fn sgemm_batched_wide(
    count: usize,
    (m, n, k): (usize, usize, usize),
    ((a, a_s), a_step): (Operand, usize),
    ((b, b_s), b_step): (Operand, usize),
    c: &mut [f32],
) {
    check_batched(count, (m, n, k), ((a, a_s), a_step), ((b, b_s), b_step), c);
    if m == 0 || n == 0 {
        return;
    }
    let blocks = n.div_ceil(BLOCK);
    let out = SendPtr(c.as_mut_ptr());
    (0..count * blocks).into_par_iter().for_each(|task| {
        let (i, t) = (task / blocks, task % blocks);
        let (lo, hi) = (t * BLOCK, ((t + 1) * BLOCK).min(n));
        #[allow(clippy::redundant_locals)]
        let out = out;
        // SAFETY: product i's operands were checked to lie inside their slices, and each task writes its own
        // columns of its own product.
        unsafe {
            gemm_raw(
                m,
                hi - lo,
                k,
                out.0.add(i * m * n + lo * m),
                (1, m as isize),
                false,
                a.as_ptr().add(i * a_step),
                a_s,
                b.as_ptr().add(i * b_step).offset(lo as isize * b_s.1),
                b_s,
                false,
            )
        }
    });
}

/// `count` products `c_i (m×n) = a_i (m×k) · b_i (k×n)` as in [`sgemm_batched_wide`], for a long `k` and small
/// products (Winograd's weight gradient): each product one task, summed over the whole of `k` on one thread (so the
/// bits do not depend on the scheduling), its result laid out as in [`sgemm_long`].
pub(crate) fn sgemm_batched_long(
    count: usize,
    (m, n, k): (usize, usize, usize),
    ((a, a_s), a_step): (Operand, usize),
    ((b, b_s), b_step): (Operand, usize),
    c: &mut [f32],
) {
    check_batched(count, (m, n, k), ((a, a_s), a_step), ((b, b_s), b_step), c);
    if m == 0 || n == 0 {
        return;
    }
    c[..count * m * n].par_chunks_mut(m * n).enumerate().for_each(|(i, out)| {
        let mut acc = vec![0f32; m * n];
        // SAFETY: product i's operands were checked to lie inside their slices; `acc` is this task's own buffer.
        unsafe {
            gemm_raw(
                m,
                n,
                k,
                acc.as_mut_ptr(),
                long_layout(m, n),
                false,
                a.as_ptr().add(i * a_step),
                a_s,
                b.as_ptr().add(i * b_step),
                b_s,
                false,
            )
        }
        from_long_layout(&acc, m, n, out);
    });
}

/// Panics unless every product of a batched call lies inside its operands (a caller's indexing bug, not input).
fn check_batched(
    count: usize,
    (m, n, k): (usize, usize, usize),
    ((a, a_s), a_step): (Operand, usize),
    ((b, b_s), b_step): (Operand, usize),
    c: &[f32],
) {
    let last = count.saturating_sub(1);
    assert!(
        c.len() >= count * m * n
            && (count == 0
                || (a.len() > last * a_step
                    && b.len() > last * b_step
                    && fits(a.len() - last * a_step, m, k, a_s)
                    && fits(b.len() - last * b_step, k, n, b_s))),
        "batched sgemm operands do not fit"
    );
}

/// `c (m×n) = a (m×k) · b (k×n)` for a long `k` and a small `c` (a convolution's weight gradient, summed over every
/// output position): blocks of `k` on the rayon pool, each thread summing its blocks' products, then the partial
/// sums added. One product splitting itself would divide the small `c` (64 × 288 × 25,088: 45 → 204 GFLOP/s).
/// Where `k` has fewer blocks than [`TASKS`] (few images of a small map) the result's long side is split too.
pub(crate) fn sgemm_long(m: usize, n: usize, k: usize, (a, a_s): Operand, (b, b_s): Operand, c: &mut [f32]) {
    assert!(c.len() >= m * n && fits(a.len(), m, k, a_s) && fits(b.len(), k, n, b_s), "sgemm operands do not fit");
    // A fixed split of k and of the result (not the thread pool's), summed in a fixed order: the same bits on every
    // run, whatever the scheduling, so training stays deterministic and resumable.
    let blocks = k.div_ceil(BLOCK);
    let per_part = blocks.div_ceil(TASKS).max(1);
    let k_parts = blocks.div_ceil(per_part);
    if k_parts == 0 || m == 0 || n == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let split_rows = m >= n;
    let (per_slice, n_slices) = slices(m.max(n), TASKS.div_ceil(k_parts));
    let sums: Vec<Vec<f32>> = (0..n_slices * k_parts)
        .into_par_iter()
        .map(|task| {
            let (slice, part) = (task / k_parts, task % k_parts);
            let (s0, s1) = (slice * per_slice, ((slice + 1) * per_slice).min(m.max(n)));
            let (mm, nn, a_off, b_off) =
                if split_rows { (s1 - s0, n, s0 as isize * a_s.0, 0) } else { (m, s1 - s0, 0, s0 as isize * b_s.1) };
            let mut acc = vec![0f32; mm * nn];
            for t in part * per_part..((part + 1) * per_part).min(blocks) {
                let (lo, hi) = (t * BLOCK, ((t + 1) * BLOCK).min(k));
                // SAFETY: this slice's rows of `a` (or columns of `b`) and rows lo..hi of `b` and columns lo..hi of
                // `a` lie inside the checked operands; `acc` is this task's own buffer.
                unsafe {
                    gemm_raw(
                        mm,
                        nn,
                        hi - lo,
                        acc.as_mut_ptr(),
                        long_layout(mm, nn),
                        true,
                        a.as_ptr().offset(a_off + lo as isize * a_s.1),
                        a_s,
                        b.as_ptr().offset(b_off + lo as isize * b_s.0),
                        b_s,
                        false,
                    )
                };
            }
            acc
        })
        .collect();
    for (slice, parts) in sums.chunks(k_parts).enumerate() {
        let mut sum = parts[0].clone();
        for p in &parts[1..] {
            sum.iter_mut().zip(p).for_each(|(x, y)| *x += y);
        }
        let s0 = slice * per_slice;
        if split_rows {
            let mm = sum.len() / n;
            from_long_layout(&sum, mm, n, &mut c[s0 * n..(s0 + mm) * n]);
        } else {
            let nn = sum.len() / m;
            let mut block = vec![0f32; m * nn];
            from_long_layout(&sum, m, nn, &mut block);
            for (row, src) in c[..m * n].chunks_exact_mut(n).zip(block.chunks_exact(nn)) {
                row[s0..s0 + nn].copy_from_slice(src);
            }
        }
    }
}

/// The layout of a long product's result: column-major when it has fewer rows than columns, else row-major. For a
/// long `k` the gemm crate is fastest when the result's leading dimension is its smaller one (2 threads, split
/// over `k`: 64 × 576 × 32,768 at 64 GFLOP/s row-major, 162 column-major; 576 × 64 × 25,088 at 156 row-major, 70
/// column-major).
fn long_layout(m: usize, n: usize) -> (isize, isize) {
    if m < n {
        (1, m as isize)
    } else {
        (n as isize, 1)
    }
}

/// `out` (row-major `m × n`) from a result laid out by [`long_layout`].
fn from_long_layout(x: &[f32], m: usize, n: usize, out: &mut [f32]) {
    if m < n {
        transpose_into(x, n, m, out);
    } else {
        out.copy_from_slice(&x[..m * n]);
    }
}

/// `out (cols × rows)` = the transpose of `x (rows × cols)`, both row-major.
fn transpose_into(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    for (j, row) in out.chunks_exact_mut(rows).enumerate().take(cols) {
        for (i, v) in row.iter_mut().enumerate() {
            *v = x[i * cols + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random, rel_error};
    use candle_core::Var;

    /// Same products and the same gradient for the variable factor as candle's matmul.
    #[test]
    fn matches_candle_matmul() -> Result<()> {
        let w = random(&[5, 7], 1)?;
        let x = Var::from_tensor(&random(&[7, 3], 2)?)?;
        let probe = random(&[5, 3], 3)?;
        let ours = matmul_left(&w, &x)?;
        let theirs = w.matmul(&x)?;
        assert!(rel_error(&ours, &theirs, 1.0)? < 1e-6);
        let (g1, g2) = ((ours * &probe)?.sum_all()?.backward()?, (theirs * &probe)?.sum_all()?.backward()?);
        assert!(rel_error(g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1.0)? < 1e-6);

        let x = Var::from_tensor(&random(&[4, 7], 4)?)?;
        let wt = random(&[5, 7], 5)?.t()?; // a transposed (strided) constant, as a linear layer uses it
        let probe = random(&[4, 5], 6)?;
        let ours = matmul_right(&x, &wt)?;
        let theirs = x.matmul(&wt)?;
        assert!(rel_error(&ours, &theirs, 1.0)? < 1e-6);
        let (g1, g2) = ((ours * &probe)?.sum_all()?.backward()?, (theirs * &probe)?.sum_all()?.backward()?);
        assert!(rel_error(g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1.0)? < 1e-6);
        // A variable factor keeps its gradient (training).
        let wv = Var::from_tensor(&random(&[5, 7], 7)?)?;
        let g = matmul_left(&wv, &random(&[7, 3], 8)?)?.sum_all()?.backward()?;
        assert!(g.get(&wv).is_some());
        Ok(())
    }

    /// The split and batched products equal the plain one: ragged last blocks, strided (transposed) operands, k = 0.
    #[test]
    fn split_products_equal_the_plain_product() {
        let rand = |len: usize, seed: u64| -> Vec<f32> {
            (0..len).map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0).collect()
        };
        // The last four split the result too (fewer blocks than tasks): by rows, by columns, a one-block `k`.
        let shapes = [(3, 1300, 7), (5, 9, 1100), (9, 5, 1100), (2, 2, 0), (1, 513, 1)].into_iter().chain([
            (300, 40, 600),
            (40, 300, 600),
            (700, 130, 9),
            (130, 700, 1030),
        ]);
        for (m, n, k) in shapes {
            let a = rand(m * k, 1);
            let b = rand(k * n, 2);
            // a as given, b transposed in memory (n×k storage, strides (1, k)).
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                }
            }
            for (name, f) in
                [("wide", sgemm_wide as fn(usize, usize, usize, Operand, Operand, &mut [f32])), ("long", sgemm_long)]
            {
                let mut got = vec![7f32; m * n];
                f(m, n, k, (&a, (k as isize, 1)), (&bt, (1, k as isize)), &mut got);
                let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
                assert!(err < 1e-4, "{name} {m}×{n}×{k}: {err}");
            }
            // Three products at once: operand i of `a` (transposed in memory) and of `b` `step` elements apart.
            let count = 3;
            let at: Vec<f32> = (0..count * m * k + 2).map(|i| rand(1, i as u64)[0]).collect();
            let bs: Vec<f32> = (0..count * k * n + 5).map(|i| rand(1, 7 * i as u64 + 3)[0]).collect();
            let (a_step, b_step) = (m * k, k * n + 1);
            let bs = if k * n == 0 { bs } else { [bs.clone(), vec![0.0; count]].concat() };
            // Each result read back row-major (the batched wide one transposed product by product).
            type Batched = fn(usize, (usize, usize, usize), (Operand, usize), (Operand, usize), &mut [f32]);
            let wide_cols: Batched = |count, dims, a, b, c| {
                let (m, n, _) = dims;
                let mut cols = vec![7f32; c.len()];
                sgemm_batched_wide(count, dims, a, b, &mut cols);
                for (rows, cols) in c.chunks_exact_mut(m * n).zip(cols.chunks_exact(m * n)).take(count) {
                    for r in 0..m {
                        for j in 0..n {
                            rows[r * n + j] = cols[j * m + r];
                        }
                    }
                }
            };
            for (name, f) in [("batched wide", wide_cols), ("batched long", sgemm_batched_long as Batched)] {
                let mut got = vec![7f32; count * m * n];
                f(count, (m, n, k), ((&at, (1, m as isize)), a_step), ((&bs, (n as isize, 1)), b_step), &mut got);
                for i in 0..count {
                    for r in 0..m {
                        for c in 0..n {
                            let want: f32 =
                                (0..k).map(|l| at[i * a_step + l * m + r] * bs[i * b_step + l * n + c]).sum();
                            let err = (got[(i * m + r) * n + c] - want).abs();
                            assert!(err < 1e-4, "{name} {m}×{n}×{k}, product {i}: {err}");
                        }
                    }
                }
            }
        }
    }
}
