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
    let (mut sn, mut sk) = (STRIDE_N, STRIDE_K);
    if n >= k {
        while sk / 2 >= k {
            sn *= 2;
            sk /= 2;
        }
    } else {
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
    let mut t = target_threads(m as f64 * n as f64 * k as f64);
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
    let k = a.len();
    let out = &mut out[..n];
    out.fill(0.0);
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
