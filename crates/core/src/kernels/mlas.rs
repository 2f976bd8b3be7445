//! The summation orders of onnxruntime's CPU provider (MLAS, x86-64 with AVX/AVX-512) for
//! float Conv, Gemm and MatMul, so that our results equal its results bit for bit (see
//! CONV.md, "Bit-exact with onnxruntime"). Rounding differences matter: a simulated
//! quantizer rounds `x / scale`, and one ulp flips a code now and then; the flips cascade.
//!
//! What MLAS does per GEMM call (`MlasSgemmOperation`, A row-major, B not transposed):
//! - `M == 1`: the AVX "M1" kernel: per output column, products rounded one by one (no
//!   FMA), summed four at a time `((p0 + p1) + p2) + p3`, each group's sum added to the
//!   output (`c = t + c`, `c` starting at 0); a remainder of 2 as `(p0 + p1) + c`, of 1 as
//!   `p + c` ([`m1_row`]).
//! - `N == 1` (a single output column, contiguous): the "M1 transpose-B" kernel: eight lane
//!   partial sums (`k mod 8`, rounded products added one by one), reduced by a tree that
//!   depends on whether the row is in a group of 4, 2 or 1 rows ([`n1_rows`]).
//! - otherwise the SGEMM kernels: `k` cut into blocks of [`stride_k`]`(n, k)`, one FMA chain
//!   per output element and block starting from 0, later blocks added (`c = acc + c`). This
//!   is [`super::pgemm::gemm_packed_acc`] with that block size.
//!
//! Bias (and a Gemm's `beta * C`) come in after (Conv) or before (Gemm) the whole sum, as
//! the callers document.

/// `MLAS_SGEMM_STRIDEN` / `MLAS_SGEMM_STRIDEK`.
const STRIDE_N: usize = 128;
const STRIDE_K: usize = 128;
/// `MLAS_SGEMM_STRIDEN_THREAD_ALIGN`.
const THREAD_ALIGN: usize = 16;
/// `MLAS_SGEMM_THREAD_COMPLEXITY`: multiply-adds per thread before another thread joins.
const THREAD_COMPLEXITY: f64 = 65536.0;

/// The K block size MLAS uses for a GEMM call over `n` output columns and depth `k`: it
/// trades K for N when one of them is small.
pub fn stride_k(n: usize, k: usize) -> usize {
    stride_k_for(n, k, false)
}

/// [`stride_k`] for a call whose A is transposed (`TransA`): then MLAS never widens the K
/// block (its A panel for the transposition holds `MLAS_SGEMM_STRIDEK` columns).
pub fn stride_k_for(n: usize, k: usize, trans_a: bool) -> usize {
    let (mut sn, mut sk) = (STRIDE_N, STRIDE_K);
    if n >= k {
        while sk / 2 >= k {
            sn *= 2;
            sk /= 2;
        }
    } else if !trans_a {
        while sn > 16 && sn / 2 >= n {
            sk *= 2;
            sn /= 2;
        }
    }
    let _ = sn;
    sk
}

/// The number of threads onnxruntime runs an operator's GEMMs on (its intra-op thread
/// count): `MPQ_ORT_THREADS`, default 2 (the sessions we compare against use 2). Where
/// MLAS splits a GEMM across threads the split changes the K blocking, so this is part of
/// the arithmetic, not of our own scheduling.
pub fn ort_threads() -> usize {
    use std::sync::atomic::Ordering;
    let v = ORT_THREADS.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let t = std::env::var("MPQ_ORT_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&t| t >= 1).unwrap_or(2);
    ORT_THREADS.store(t, Ordering::Relaxed);
    t
}

static ORT_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the thread count [`ort_threads`] returns from now on (tests comparing with sessions
/// of another thread count).
pub fn set_ort_threads(t: usize) {
    ORT_THREADS.store(t.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// `MlasPartitionWork`: the share `(start, count)` of `total` items of thread `id` of `count`.
pub fn partition(id: usize, threads: usize, total: usize) -> (usize, usize) {
    let (per, extra) = (total / threads, total % threads);
    if id < extra {
        ((per + 1) * id, per + 1)
    } else {
        (per * id + extra, per)
    }
}

/// Target thread count from the multiply-add count (`MlasGemmBatch`, `MlasConvPrepare`).
fn target_threads(flops: f64) -> usize {
    let t = if flops < THREAD_COMPLEXITY * 16.0 { (flops / THREAD_COMPLEXITY) as usize + 1 } else { 16 };
    t.min(ort_threads()).max(1)
}

/// One single-threaded GEMM call of a split `MlasGemm`: rows `m0..m0+mc`, columns `n0..n0+nc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub m0: usize,
    pub mc: usize,
    pub n0: usize,
    pub nc: usize,
}

/// How the threaded `MlasGemm` (one GEMM, `MlasGemmBatch` with batch 1) splits `m x n x k`.
pub fn gemm_parts(m: usize, n: usize, k: usize) -> Vec<Part> {
    gemm_parts_batch(m, n, k, 1)
}

/// How `MlasGemmBatch` splits each of `batch` GEMMs of `m x n x k`: the target thread count
/// is that of one GEMM, shared by the batch (`ThreadsPerGemm`, rounded up), so a batch of
/// at least as many GEMMs as threads runs every GEMM as one call.
pub fn gemm_parts_batch(m: usize, n: usize, k: usize, batch: usize) -> Vec<Part> {
    let mut t = target_threads(m as f64 * n as f64 * k as f64).div_ceil(batch.max(1));
    let blocked_n = n.div_ceil(THREAD_ALIGN);
    let (tm, tn) = if n > m {
        t = t.min(blocked_n).max(1);
        (1, t)
    } else {
        t = t.min(m).max(1);
        (t, 1)
    };
    let mut parts = Vec::new();
    for id in 0..tm * tn {
        let (im, inn) = (id / tn, id % tn);
        let (m0, mc) = partition(im, tm, m);
        let (b0, bc) = partition(inn, tn, blocked_n);
        let n0 = b0 * THREAD_ALIGN;
        if n0 >= n {
            continue;
        }
        let nc = (bc * THREAD_ALIGN).min(n - n0);
        if mc > 0 && nc > 0 {
            parts.push(Part { m0, mc, n0, nc });
        }
    }
    parts
}

/// Column segments `(start, count)` of MLAS's segmented im2col convolution of one image
/// (`MlasConvPrepare`'s thread stride, used when batch and group are both 1).
pub fn conv_segments(filters: usize, out_size: usize, k: usize) -> Vec<(usize, usize)> {
    let mut t = target_threads(filters as f64 * out_size as f64 * k as f64);
    let mut sn = out_size.div_ceil(t);
    if t > 1 {
        sn = sn.next_multiple_of(THREAD_ALIGN);
        if sn >= out_size {
            t = 1;
        }
    }
    if t == 1 || sn == 0 {
        return vec![(0, out_size)];
    }
    (0..out_size).step_by(sn).map(|s| (s, sn.min(out_size - s))).collect()
}

/// The M1 kernel on one row `a[k]` against `x` (`k` rows of `n` columns, row stride `ldx`):
/// `out[j]` as described in the module docs. `out` is overwritten.
pub fn m1_row(a: &[f32], x: &[f32], ldx: usize, n: usize, out: &mut [f32]) {
    m1_row_acc(a, x, ldx, n, out, false)
}

/// [`m1_row`]; with `accumulate` the running sums start from what `out` holds (MLAS with
/// beta = 1: a Gemm's `C`) instead of zero.
pub fn m1_row_acc(a: &[f32], x: &[f32], ldx: usize, n: usize, out: &mut [f32], accumulate: bool) {
    let k = a.len();
    let out = &mut out[..n];
    if !accumulate {
        out.fill(0.0);
    }
    let row = |p: usize| &x[p * ldx..p * ldx + n];
    let mut p = 0;
    while p + 4 <= k {
        let (w0, w1, w2, w3) = (a[p], a[p + 1], a[p + 2], a[p + 3]);
        let (r0, r1, r2, r3) = (row(p), row(p + 1), row(p + 2), row(p + 3));
        for j in 0..n {
            let t = ((w0 * r0[j] + w1 * r1[j]) + w2 * r2[j]) + w3 * r3[j];
            out[j] = t + out[j];
        }
        p += 4;
    }
    if k - p >= 2 {
        let (w0, w1, r0, r1) = (a[p], a[p + 1], row(p), row(p + 1));
        for j in 0..n {
            out[j] = (w0 * r0[j] + w1 * r1[j]) + out[j];
        }
        p += 2;
    }
    if p < k {
        let (w0, r0) = (a[p], row(p));
        for j in 0..n {
            out[j] = w0 * r0[j] + out[j];
        }
    }
}

/// The operands of one GEMM for [`gemm_unpacked`]: `a` row-major `[m, k]` (already
/// transposed when the operator's `trans_a` was set: the flag only changes the K blocking),
/// `b` as the operator holds it: row-major `[k, n]`, or `[n, k]` when `trans_b`, rows `ldb`
/// apart.
#[derive(Clone, Copy)]
pub struct Operands<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub ldb: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// `out[m, n] = a * b` (plus what `out` holds when `accumulate`: MLAS with beta = 1, a
/// Gemm's `C` broadcast into the output first) in the order of one GEMM of a
/// `MlasGemmBatch` of `batch` GEMMs whose B is **not** pre-packed: a B computed at run time
/// (a DequantizeLinear output, the other activation of QK^T or attention x V) or any
/// constant that is not an initializer. `special`: MLAS's M == 1 / N == 1 kernels apply
/// (alpha == 1 and beta 0 or 1).
///
/// MLAS (`MlasSgemmThreaded` / `MlasSgemmOperation`) cuts the GEMM into the thread parts of
/// [`gemm_parts_batch`]; a part of one row runs an M1 kernel ([`m1_row`], or [`n1_rows`]
/// over the rows of `B^T` when B is transposed), a single contiguous output column the M1
/// transpose-B kernel ([`n1_rows`] over the rows of A), and every other part copies B panel
/// by panel and sums each element as FMA chains over K blocks of
/// [`stride_k_for`]`(part columns, k)`, later blocks added. The pre-packed path (a constant
/// initializer B) uses K blocks of 256 instead: the two differ in the last bits.
/// Not mirrored: the N == 1 kernel of a transposed A (the plain path runs).
#[allow(clippy::too_many_arguments)]
pub fn gemm_unpacked(op: Operands, m: usize, n: usize, k: usize, out: &mut [f32], accumulate: bool, special: bool, batch: usize) {
    use super::pgemm::{gemm_packed_rows_acc, PackedA, ROW_BLOCK};
    use rayon::prelude::*;
    let Operands { a, b, ldb, trans_a, trans_b } = op;
    if m == 0 || n == 0 {
        return;
    }
    let (brows, bcols) = if trans_b { (n, k) } else { (k, n) };
    assert!(a.len() >= m * k && out.len() >= m * n, "operands out of bounds");
    assert!(brows == 0 || bcols == 0 || (ldb >= bcols && (brows - 1) * ldb + bcols <= b.len()), "b out of bounds");
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    let parts = gemm_parts_batch(m, n, k, batch);
    let m1 = |p: &Part| special && !trans_a && p.mc == 1;
    // B and C single contiguous columns (`ldb == 1`, `ldc == 1`)
    let n1 = special && !trans_a && n == 1 && (!trans_b || k == 1);
    let kernel_rows: Vec<Part> = parts.iter().copied().filter(|p| m1(p) || n1).collect();
    let saved: Vec<Vec<f32>> = if accumulate { kernel_rows.iter().map(|p| (p.m0..p.m0 + p.mc).flat_map(|i| out[i * n + p.n0..i * n + p.n0 + p.nc].to_vec()).collect()).collect() } else { Vec::new() };
    if kernel_rows.len() < parts.len() {
        // every element's order depends only on its part's column count (the K block), so
        // the rows are cut here by our own threads, in whole packed row blocks
        let mut cols: Vec<(usize, usize, usize)> = parts.iter().map(|p| (p.n0, p.nc, stride_k_for(p.nc, k, trans_a))).collect();
        cols.sort_unstable();
        cols.dedup();
        let owned;
        let (bk, ldk): (&[f32], usize) = if trans_b {
            let mut t = vec![0f32; k * n];
            for j in 0..n {
                for p in 0..k {
                    t[p * n + j] = b[j * ldb + p];
                }
            }
            owned = t;
            (&owned, n)
        } else {
            (b, ldb)
        };
        let pa = PackedA::new(a, m, k);
        let threads = rayon::current_num_threads().max(1);
        let rb = m.div_ceil(2 * threads).next_multiple_of(ROW_BLOCK).max(ROW_BLOCK);
        out[..m * n].par_chunks_mut(rb * n).enumerate().for_each(|(i, o)| {
            let (r0, rows) = (i * rb, o.len() / n);
            for &(n0, nc, kc) in &cols {
                gemm_packed_rows_acc(&pa, r0, r0 + rows, &bk[n0..], ldk, nc, &mut o[n0..], n, None, f32::NEG_INFINITY, f32::INFINITY, kc, accumulate);
            }
        });
    }
    for (pi, p) in kernel_rows.iter().enumerate() {
        if accumulate {
            for (r, i) in (p.m0..p.m0 + p.mc).enumerate() {
                out[i * n + p.n0..i * n + p.n0 + p.nc].copy_from_slice(&saved[pi][r * p.nc..(r + 1) * p.nc]);
            }
        }
        if m1(p) {
            let (row, o) = (&a[p.m0 * k..(p.m0 + 1) * k], &mut out[p.m0 * n + p.n0..p.m0 * n + p.n0 + p.nc]);
            if trans_b {
                // KernelM1TransposeB over the rows of B^T
                add_after(o, accumulate, |o| n1_rows(row, &b[p.n0 * ldb..], ldb, o));
            } else {
                m1_row_acc(row, &b[p.n0..], ldb, p.nc, o, accumulate);
            }
        } else {
            // KernelM1TransposeB with A and B swapped: a column of B against rows of A
            let x: Vec<f32> = (0..k).map(|q| b[q * if trans_b { 1 } else { ldb }]).collect();
            add_after(&mut out[p.m0..p.m0 + p.mc], accumulate, |o| n1_rows(&x, &a[p.m0 * k..], k, o));
        }
    }
}

/// Runs `f` (which overwrites `o`), then adds what `o` held before when `accumulate` (the
/// M1 transpose-B kernel adds `beta * C` after its sum).
fn add_after(o: &mut [f32], accumulate: bool, f: impl FnOnce(&mut [f32])) {
    let before = accumulate.then(|| o.to_vec());
    f(o);
    if let Some(c) = before {
        o.iter_mut().zip(c).for_each(|(v, c)| *v += c);
    }
}

/// The M1 transpose-B kernel: `out[i] = sum_p w[i * ldw + p] * x[p]` for `i < out.len()`,
/// rows taken four, then two, then one at a time (the reduction tree differs), as one MLAS
/// call over these rows. `out` is overwritten.
///
/// Each row has eight lane sums, lane `q` adding the rounded products `x[p] * w[p]` of
/// `p mod 8 == q` one by one in increasing `p` (MLAS's 8-wide accumulator). The lanes are
/// one 8-wide vector; four rows are computed together (independent add chains), which
/// changes no row's order.
pub fn n1_rows(x: &[f32], w: &[f32], ldw: usize, out: &mut [f32]) {
    let m = out.len();
    let k = x.len();
    assert!(m == 0 || (m - 1) * ldw + k <= w.len(), "w out of bounds");
    n1_rows_impl(super::simd_level(), x, w, ldw, out);
}

/// Lane sums of `rows` rows of `w` (stride `ldw`) against `x` (see [`n1_rows`]).
#[inline(always)]
fn n1_lanes<const R: usize>(x: &[f32], w: &[f32], ldw: usize) -> [[f32; 8]; R] {
    let k = x.len();
    let k8 = k / 8 * 8;
    let wr: [&[f32]; R] = std::array::from_fn(|r| &w[r * ldw..r * ldw + k]);
    let mut l = [[0f32; 8]; R];
    let mut p = 0;
    while p < k8 {
        let xc: &[f32; 8] = x[p..p + 8].try_into().unwrap();
        for r in 0..R {
            let wc: &[f32; 8] = wr[r][p..p + 8].try_into().unwrap();
            for q in 0..8 {
                l[r][q] += xc[q] * wc[q];
            }
        }
        p += 8;
    }
    for r in 0..R {
        for q in 0..k - k8 {
            l[r][q] += x[k8 + q] * wr[r][k8 + q];
        }
    }
    l
}

crate::dispatch_fn!(fn n1_rows_impl(x: &[f32], w: &[f32], ldw: usize, out: &mut [f32]) {
    let m = out.len();
    let mut i = 0;
    while i + 4 <= m {
        let l4 = n1_lanes::<4>(x, &w[i * ldw..], ldw);
        for (r, x) in l4.iter().enumerate() {
            let lo = ((x[0] + x[1]) + x[2]) + x[3];
            let hi = ((x[4] + x[5]) + x[6]) + x[7];
            out[i + r] = (lo + hi) + 0.0;
        }
        i += 4;
    }
    if m - i >= 2 {
        let l2 = n1_lanes::<2>(x, &w[i * ldw..], ldw);
        for (r, x) in l2.iter().enumerate() {
            out[i + r] = (((x[2] + x[0]) + (x[6] + x[4])) + ((x[3] + x[1]) + (x[7] + x[5]))) + 0.0;
        }
        i += 2;
    }
    if i < m {
        let [x] = n1_lanes::<1>(x, &w[i * ldw..], ldw);
        out[i] = (((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]))) + 0.0;
    }
});

/// The plain reference of [`n1_rows`] (one row at a time), for tests.
#[cfg(test)]
fn n1_rows_ref(x: &[f32], w: &[f32], ldw: usize, out: &mut [f32]) {
    let k = x.len();
    let lanes = |i: usize| -> [f32; 8] {
        let wr = &w[i * ldw..i * ldw + k];
        let mut l = [0f32; 8];
        for (xv, wv) in x.chunks(8).zip(wr.chunks(8)) {
            for q in 0..xv.len() {
                l[q] += xv[q] * wv[q];
            }
        }
        l
    };
    let m = out.len();
    let mut i = 0;
    while i + 4 <= m {
        for r in 0..4 {
            let x = lanes(i + r);
            let lo = ((x[0] + x[1]) + x[2]) + x[3];
            let hi = ((x[4] + x[5]) + x[6]) + x[7];
            out[i + r] = (lo + hi) + 0.0;
        }
        i += 4;
    }
    if m - i >= 2 {
        for r in 0..2 {
            let x = lanes(i + r);
            out[i + r] = (((x[2] + x[0]) + (x[6] + x[4])) + ((x[3] + x[1]) + (x[7] + x[5]))) + 0.0;
        }
        i += 2;
    }
    if i < m {
        let x = lanes(i);
        out[i] = (((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]))) + 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n1_rows_bit_equal_to_row_by_row_reference() {
        let rnd = |n: usize, mut s: u32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s as f32 / u32::MAX as f32) * 2.0 - 1.0
                })
                .collect()
        };
        for &(m, k) in &[(1, 1), (3, 7), (4, 8), (5, 13), (7, 768), (1000, 768), (6, 9), (2, 3)] {
            let x = rnd(k, 3 + k as u32);
            let ldw = k + 3;
            let w = rnd(m * ldw, 7 + m as u32);
            let (mut a, mut b) = (vec![f32::NAN; m], vec![f32::NAN; m]);
            n1_rows(&x, &w, ldw, &mut a);
            n1_rows_ref(&x, &w, ldw, &mut b);
            assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{m}x{k}");
        }
    }

    #[test]
    fn stride_k_follows_mlas_rule() {
        assert_eq!(stride_k(12544, 9), 16);
        assert_eq!(stride_k(12544, 27), 32);
        assert_eq!(stride_k(196, 192), 128);
        assert_eq!(stride_k(49, 384), 256);
        assert_eq!(stride_k(32, 384), 512);
        assert_eq!(stride_k(1, 768), 1024);
    }

    /// What MLAS computes per element of an unpacked GEMM, written out plainly: the thread
    /// parts, and per part the M1 kernel for one row or FMA chains over K blocks of
    /// `stride_k_for(part columns)` added to the output.
    fn gemm_unpacked_ref(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, out: &mut [f32], accumulate: bool, trans_a: bool, batch: usize) {
        for p in gemm_parts_batch(m, n, k, batch) {
            let kc = stride_k_for(p.nc, k, trans_a);
            for i in p.m0..p.m0 + p.mc {
                for j in p.n0..p.n0 + p.nc {
                    let mut c = if accumulate { out[i * n + j] } else { 0.0 };
                    if p.mc == 1 && !trans_a {
                        let mut q = 0;
                        while q + 4 <= k {
                            let t = ((a[i * k + q] * b[q * n + j] + a[i * k + q + 1] * b[(q + 1) * n + j]) + a[i * k + q + 2] * b[(q + 2) * n + j]) + a[i * k + q + 3] * b[(q + 3) * n + j];
                            c = t + c;
                            q += 4;
                        }
                        if k - q >= 2 {
                            c = (a[i * k + q] * b[q * n + j] + a[i * k + q + 1] * b[(q + 1) * n + j]) + c;
                            q += 2;
                        }
                        if q < k {
                            c = a[i * k + q] * b[q * n + j] + c;
                        }
                    } else {
                        for (bi, k0) in (0..k).step_by(kc).enumerate() {
                            let mut acc = 0f32;
                            for q in k0..(k0 + kc).min(k) {
                                acc = a[i * k + q].mul_add(b[q * n + j], acc);
                            }
                            c = if bi == 0 && !accumulate { acc } else { acc + c };
                        }
                    }
                    out[i * n + j] = c;
                }
            }
        }
    }

    #[test]
    fn gemm_unpacked_follows_the_parts_and_k_blocks_at_every_level() {
        let rnd = |n: usize, seed: u32| crate::testutil::rnd(n, seed);
        let prev = crate::kernels::simd_level();
        for (t, &(m, n, k, acc, ta, batch)) in [
            (128, 384, 384, false, false, 1),
            (512, 384, 384, false, false, 1),
            (128, 1536, 384, false, false, 1),
            (128, 384, 1536, true, false, 1),
            (3, 300, 100, true, false, 1),
            (2, 17, 700, false, false, 1),
            (64, 64, 32, false, false, 24),
            (1, 20, 40, false, false, 5),
            (40, 96, 384, true, true, 1),
        ]
        .iter()
        .enumerate()
        {
            let (a, b) = (rnd(m * k, 10 + t as u32), rnd(k * n, 20 + t as u32));
            let c0 = rnd(m * n, 30 + t as u32);
            let mut want = c0.clone();
            gemm_unpacked_ref(&a, &b, m, n, k, &mut want, acc, ta, batch);
            for level in crate::kernels::available_levels() {
                crate::kernels::set_simd_level(level);
                let mut got = c0.clone();
                gemm_unpacked(Operands { a: &a, b: &b, ldb: n, trans_a: ta, trans_b: false }, m, n, k, &mut got, acc, true, batch);
                let bad = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
                assert_eq!(bad, 0, "{m}x{n}x{k} acc={acc} transA={ta} batch={batch} {level:?}: {bad} of {} differ", m * n);
            }
        }
        crate::kernels::set_simd_level(prev);
    }

    #[test]
    fn gemm_parts_cover_the_output_once() {
        for &(m, n, k) in &[(48, 12544, 24), (384, 49, 384), (1, 1, 1), (1001, 1, 768), (7, 33, 2)] {
            let mut seen = vec![0u8; m * n];
            for p in gemm_parts(m, n, k) {
                for i in p.m0..p.m0 + p.mc {
                    for j in p.n0..p.n0 + p.nc {
                        seen[i * n + j] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{m}x{n}x{k}");
        }
    }
}
