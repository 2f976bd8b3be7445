//! GEMM with a left operand packed once (conv weights at build time):
//! `out[m, n] = clamp(a[m, k] * x[k, n] + bias[m], lo, hi)`, `x` row-major with row stride
//! `ldx` (an NCHW image for 1x1 convs, or an im2col block), the bias and ReLU/Clip applied
//! while the tile is still in registers.
//!
//! Three builds of one blocking, chosen from the dispatch level ([`simd_level`]): an AVX-512
//! micro-kernel (6 rows x 32 columns, 12 zmm accumulators, masked column tails), an AVX2 +
//! FMA one (6 rows x 16 columns, 12 ymm accumulators), and plain loops (the reference, and
//! the path of every other CPU). All three compute every element in the same order, so they
//! give the same bits (tested), and that order is MLAS's on every CPU that has FMA.

use super::{simd_level, SimdLevel};

const MR: usize = 6;
/// Columns of the x panel of the AVX-512 and plain drivers.
const NR: usize = 32;
/// Columns of the x panel of the AVX2 driver.
const NR2: usize = 16;

/// `a[m, k]` packed as `[m / MR (rounded up)][k][MR]`, zero rows past `m`.
#[derive(Clone, Debug)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs the row-major `[m, k]` matrix `a`.
    pub fn new(a: &[f32], m: usize, k: usize) -> Self {
        assert!(a.len() >= m * k);
        let mb = m.div_ceil(MR);
        let mut data = vec![0f32; mb * k * MR];
        for i in 0..m {
            let (b, r) = (i / MR, i % MR);
            for p in 0..k {
                data[(b * k + p) * MR + r] = a[i * k + p];
            }
        }
        PackedA { m, k, data }
    }
}

/// `out[i * ldo + j] = clamp(sum_p a[i, p] * x[p * ldx + j] + bias[i], lo, hi)` for
/// `i < a.m`, `j < n`, in the build of the level in force ([`simd_level`]); with
/// `accumulate` the first K block is added to what `out` holds (MLAS with beta = 1: a Gemm's
/// `C` goes in before the sum).
///
/// Summation order (the same as onnxruntime's MLAS SGEMM kernels): `k` is cut into blocks
/// of `kc`; within a block every output element is one fused multiply-add chain over `p`
/// starting from zero; each later block's sum is added to the running output (`c = acc + c`,
/// one rounding); the bias is added after the whole sum, then the clamp.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_acc(a: &PackedA, x: &[f32], ldx: usize, n: usize, out: &mut [f32], ldo: usize, bias: Option<&[f32]>, lo: f32, hi: f32, kc: usize, accumulate: bool) {
    gemm_core(simd_level(), &a.data, a.m, a.k, x, ldx, n, out, ldo, bias, lo, hi, kc, accumulate)
}

/// [`gemm_packed_acc`] (no accumulation) for rows `r0..r1` of `a` only (`r0` a multiple of [`ROW_BLOCK`]): `out`
/// starts at row `r0`, `bias` is the whole bias. Each element has the order of the full
/// call, so the rows of one GEMM can be split across threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_rows(a: &PackedA, r0: usize, r1: usize, x: &[f32], ldx: usize, n: usize, out: &mut [f32], ldo: usize, bias: Option<&[f32]>, lo: f32, hi: f32, kc: usize) {
    gemm_packed_rows_acc(a, r0, r1, x, ldx, n, out, ldo, bias, lo, hi, kc, false)
}

/// [`gemm_packed_rows`] with [`gemm_packed_acc`]'s `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_rows_acc(a: &PackedA, r0: usize, r1: usize, x: &[f32], ldx: usize, n: usize, out: &mut [f32], ldo: usize, bias: Option<&[f32]>, lo: f32, hi: f32, kc: usize, accumulate: bool) {
    assert!(r0 % MR == 0 && r0 <= r1 && r1 <= a.m, "row range {r0}..{r1} of {}", a.m);
    let data = &a.data[r0 / MR * a.k * MR..];
    gemm_core(simd_level(), data, r1 - r0, a.k, x, ldx, n, out, ldo, bias.map(|b| &b[r0.min(b.len())..]), lo, hi, kc, accumulate)
}

/// Rows per packed row block: row splits of [`gemm_packed_rows`] start at multiples of it.
pub const ROW_BLOCK: usize = MR;

/// The GEMM on packed data `ap` (`[m / MR (rounded up)][k][MR]`).
#[allow(clippy::too_many_arguments)]
fn gemm_core(level: SimdLevel, ap: &[f32], m: usize, k: usize, x: &[f32], ldx: usize, n: usize, out: &mut [f32], ldo: usize, bias: Option<&[f32]>, lo: f32, hi: f32, kc: usize, accumulate: bool) {
    assert!(ap.len() >= m.div_ceil(MR) * k * MR, "packed data too short");
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldo >= n && (m - 1) * ldo + n <= out.len(), "out of bounds");
    assert!(k == 0 || (ldx >= n && (k - 1) * ldx + n <= x.len()), "x out of bounds");
    assert!(bias.is_none_or(|b| b.len() >= m));
    if k == 0 {
        for i in 0..m {
            let b = bias.map_or(0.0, |b| b[i]);
            for v in &mut out[i * ldo..i * ldo + n] {
                *v = (if accumulate { *v + b } else { b }).max(lo).min(hi);
            }
        }
        return;
    }
    let kcb = kc.max(1);
    #[cfg(target_arch = "x86_64")]
    {
        match level {
            // SAFETY: the level is only in force when the CPU has its features (see
            // `simd_level`); the asserts above bound every row `i < m` of `out` at columns
            // `..n` and every row `p < k` of `x` at columns `..n`.
            SimdLevel::Avx512 => {
                unsafe { drive_avx512(ap, m, k, x.as_ptr(), ldx, n, out.as_mut_ptr(), ldo, bias, lo, hi, kcb, accumulate) };
                return;
            }
            // SAFETY: as above, with AVX2 + FMA.
            SimdLevel::Avx2 => {
                unsafe { drive_avx2(ap, m, k, x.as_ptr(), ldx, n, out.as_mut_ptr(), ldo, bias, lo, hi, kcb, accumulate) };
                return;
            }
            SimdLevel::Scalar => {}
        }
    }
    // The kc x NR panel of x, copied contiguous: read by every row block from L1.
    let mut xb = vec![0f32; kcb.min(k) * NR];
    let mut k0 = 0;
    while k0 < k {
        let kc = kcb.min(k - k0);
        let (first, last) = (k0 == 0 && !accumulate, k0 + kc == k);
        let mut j0 = 0;
        while j0 < n {
            let nn = NR.min(n - j0);
            for p in 0..kc {
                let src = &x[(k0 + p) * ldx + j0..(k0 + p) * ldx + j0 + nn];
                xb[p * NR..p * NR + nn].copy_from_slice(src);
            }
            for b in 0..m.div_ceil(MR) {
                let rows = MR.min(m - b * MR);
                let apb = &ap[(b * k + k0) * MR..(b * k + k0 + kc) * MR];
                let mut bv = [0f32; MR];
                if let Some(bs) = bias {
                    bv[..rows].copy_from_slice(&bs[b * MR..b * MR + rows]);
                }
                let oo = b * MR * ldo + j0;
                let t = Tile { kc, ldx: NR, ldo, nn, rows, first, last, bias: bv, lo, hi };
                tile_ref(apb, &xb, &mut out[oo..], &t);
            }
            j0 += nn;
        }
        k0 += kc;
    }
}

/// The AVX-512 driver: the same blocking and order as the plain loops of
/// [`gemm_packed_acc`], compiled as one AVX-512 function so that the x panel is copied with
/// 512-bit moves, the tile is inlined (no per-tile call, argument block or bias copy; those
/// cost ~20% of the time of the small-K 1x1 convs), and the next panel of x and of the
/// output is prefetched while the current one is computed.
///
/// # Safety
/// AVX-512F must be available; `apk` the packed `[m / MR][k][MR]`; `x` must hold rows `p < k` of `n` columns at stride `ldx`,
/// `out` rows `i < m` of `n` columns at stride `ldo`, `bias` (if any) `m` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn drive_avx512(apk: &[f32], m: usize, k: usize, x: *const f32, ldx: usize, n: usize, out: *mut f32, ldo: usize, bias: Option<&[f32]>, lo: f32, hi: f32, kcb: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    let mb = m.div_ceil(MR);
    let mut xb = vec![_mm512_setzero_ps(); 2 * kcb.min(k)];
    let xbp = xb.as_mut_ptr() as *mut f32;
    let mut k0 = 0;
    while k0 < k {
        let kc = kcb.min(k - k0);
        let (first, last) = (k0 == 0 && !accumulate, k0 + kc == k);
        let mut j0 = 0;
        while j0 < n {
            let nn = NR.min(n - j0);
            let m0: __mmask16 = if nn >= 16 { 0xffff } else { ((1u32 << nn) - 1) as u16 };
            let m1: __mmask16 = if nn >= 32 { 0xffff } else if nn > 16 { ((1u32 << (nn - 16)) - 1) as u16 } else { 0 };
            let ahead = j0 + 2 * NR < n;
            for p in 0..kc {
                let src = x.add((k0 + p) * ldx + j0);
                if ahead {
                    // two panels ahead: the hardware prefetcher does not follow dozens of
                    // rows of a large plane at once
                    _mm_prefetch::<_MM_HINT_T0>(src.add(2 * NR) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(src.add(2 * NR + 16) as *const i8);
                }
                _mm512_storeu_ps(xbp.add(p * NR), _mm512_maskz_loadu_ps(m0, src));
                _mm512_storeu_ps(xbp.add(p * NR + 16), _mm512_maskz_loadu_ps(m1, src.add(16)));
            }
            for b in 0..mb {
                let rows = MR.min(m - b * MR);
                let ap = apk.as_ptr().add((b * k + k0) * MR);
                let op = out.add(b * MR * ldo + j0);
                let bp = bias.map(|bs| bs.as_ptr().add(b * MR));
                tile_avx512(ap, xbp, kc, op, ldo, rows, first, last, bp, lo, hi, m0, m1, ahead);
            }
            j0 += nn;
        }
        k0 += kc;
    }
}

/// The AVX2 + FMA driver: the blocking of [`drive_avx512`] on 16-column panels (two ymm
/// vectors a row), 6 x 16 tiles. MLAS's FMA3 SGEMM kernel sums in the same order (one FMA
/// chain per element and K block), so this path equals onnxruntime on AVX2 CPUs.
///
/// # Safety
/// AVX2 and FMA must be available; the bounds as for [`drive_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn drive_avx2(apk: &[f32], m: usize, k: usize, x: *const f32, ldx: usize, n: usize, out: *mut f32, ldo: usize, bias: Option<&[f32]>, lo: f32, hi: f32, kcb: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    let mb = m.div_ceil(MR);
    let mut xb = vec![_mm256_setzero_ps(); 2 * kcb.min(k)];
    let xbp = xb.as_mut_ptr() as *mut f32;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut k0 = 0;
    while k0 < k {
        let kc = kcb.min(k - k0);
        let (first, last) = (k0 == 0 && !accumulate, k0 + kc == k);
        let mut j0 = 0;
        while j0 < n {
            let nn = NR2.min(n - j0);
            // lane masks of the two 8-column halves (all ones on a full panel)
            let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nn.min(8) as i32), lanes);
            let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nn.saturating_sub(8) as i32), lanes);
            let ahead = j0 + 2 * NR2 < n;
            for p in 0..kc {
                let src = x.add((k0 + p) * ldx + j0);
                if ahead {
                    _mm_prefetch::<_MM_HINT_T0>(src.add(2 * NR2) as *const i8);
                }
                if nn == NR2 {
                    _mm256_storeu_ps(xbp.add(p * NR2), _mm256_loadu_ps(src));
                    _mm256_storeu_ps(xbp.add(p * NR2 + 8), _mm256_loadu_ps(src.add(8)));
                } else {
                    // masked loads read nothing past column n (no fault, zero lanes)
                    _mm256_storeu_ps(xbp.add(p * NR2), _mm256_maskload_ps(src, m0));
                    _mm256_storeu_ps(xbp.add(p * NR2 + 8), _mm256_maskload_ps(src.add(8), m1));
                }
            }
            for b in 0..mb {
                let rows = MR.min(m - b * MR);
                let ap = apk.as_ptr().add((b * k + k0) * MR);
                let op = out.add(b * MR * ldo + j0);
                let bp = bias.map(|bs| bs.as_ptr().add(b * MR));
                tile_avx2(ap, xbp, kc, op, ldo, rows, first, last, bp, lo, hi, nn == NR2, m0, m1);
            }
            j0 += nn;
        }
        k0 += kc;
    }
}

/// One 6 x 16 tile of [`drive_avx2`]: `kc` FMA steps from zero on the packed panel `x`
/// (`kc` rows of 16), then added to `out` unless `first`, bias and clamp if `last`; only
/// the `rows` rows and the masked columns are stored (`full`: all 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2(
    ap: *const f32,
    x: *const f32,
    kc: usize,
    out: *mut f32,
    ldo: usize,
    rows: usize,
    first: bool,
    last: bool,
    bias: Option<*const f32>,
    lo: f32,
    hi: f32,
    full: bool,
    m0: std::arch::x86_64::__m256i,
    m1: std::arch::x86_64::__m256i,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    for p in 0..kc {
        let xp = x.add(p * NR2);
        let x0 = _mm256_loadu_ps(xp);
        let x1 = _mm256_loadu_ps(xp.add(8));
        for r in 0..MR {
            let av = _mm256_broadcast_ss(&*ap.add(p * MR + r));
            acc[2 * r] = _mm256_fmadd_ps(av, x0, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(av, x1, acc[2 * r + 1]);
        }
    }
    let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    for r in 0..rows {
        let op = out.add(r * ldo);
        let (mut v0, mut v1) = (acc[2 * r], acc[2 * r + 1]);
        if !first {
            if full {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(op));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(op.add(8)));
            } else {
                v0 = _mm256_add_ps(v0, _mm256_maskload_ps(op, m0));
                v1 = _mm256_add_ps(v1, _mm256_maskload_ps(op.add(8), m1));
            }
        }
        if last {
            let b = _mm256_set1_ps(bias.map_or(0.0, |b| *b.add(r)));
            v0 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v0, b), vlo), vhi);
            v1 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v1, b), vlo), vhi);
        }
        if full {
            _mm256_storeu_ps(op, v0);
            _mm256_storeu_ps(op.add(8), v1);
        } else {
            _mm256_maskstore_ps(op, m0, v0);
            _mm256_maskstore_ps(op.add(8), m1, v1);
        }
    }
}

struct Tile {
    kc: usize,
    ldx: usize,
    ldo: usize,
    nn: usize,
    rows: usize,
    first: bool,
    last: bool,
    bias: [f32; MR],
    lo: f32,
    hi: f32,
}

/// Plain-loop tile: the reference of [`tile_avx512`].
fn tile_ref(a: &[f32], x: &[f32], out: &mut [f32], t: &Tile) {
    let mut acc = [[0f32; NR]; MR];
    for p in 0..t.kc {
        let xr = &x[p * t.ldx..p * t.ldx + t.nn];
        for r in 0..MR {
            let av = a[p * MR + r];
            for (c, xv) in acc[r].iter_mut().zip(xr) {
                *c = av.mul_add(*xv, *c);
            }
        }
    }
    for r in 0..t.rows {
        let o = &mut out[r * t.ldo..r * t.ldo + t.nn];
        for (j, v) in o.iter_mut().enumerate() {
            let mut s = acc[r][j];
            if !t.first {
                s += *v;
            }
            if t.last {
                s = (s + t.bias[r]).max(t.lo).min(t.hi);
            }
            *v = s;
        }
    }
}

/// One 6 x 32 tile: `kc` FMA steps from zero on the packed panel `x` (`kc` rows of 32,
/// lanes past the masks are zero), then added to `out` unless `first`, bias and clamp if
/// `last`; only the `rows` rows and the masked columns are stored.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(
    ap: *const f32,
    x: *const f32,
    kc: usize,
    out: *mut f32,
    ldo: usize,
    rows: usize,
    first: bool,
    last: bool,
    bias: Option<*const f32>,
    lo: f32,
    hi: f32,
    m0: std::arch::x86_64::__mmask16,
    m1: std::arch::x86_64::__mmask16,
    prefetch_next: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    for p in 0..kc {
        let xp = x.add(p * NR);
        let x0 = _mm512_loadu_ps(xp);
        let x1 = _mm512_loadu_ps(xp.add(16));
        for r in 0..MR {
            let av = _mm512_set1_ps(*ap.add(p * MR + r));
            acc[2 * r] = _mm512_fmadd_ps(av, x0, acc[2 * r]);
            acc[2 * r + 1] = _mm512_fmadd_ps(av, x1, acc[2 * r + 1]);
        }
    }
    let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    for r in 0..rows {
        let op = out.add(r * ldo);
        if prefetch_next {
            // the next tile of this row: its lines are owned when the stores come
            _mm_prefetch::<_MM_HINT_ET0>(op.add(NR) as *const i8);
            _mm_prefetch::<_MM_HINT_ET0>(op.add(NR + 16) as *const i8);
        }
        let (mut v0, mut v1) = (acc[2 * r], acc[2 * r + 1]);
        if !first {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, op));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, op.add(16)));
        }
        if last {
            let b = _mm512_set1_ps(bias.map_or(0.0, |b| *b.add(r)));
            v0 = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v0, b), vlo), vhi);
            v1 = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v1, b), vlo), vhi);
        }
        _mm512_mask_storeu_ps(op, m0, v0);
        _mm512_mask_storeu_ps(op.add(16), m1, v1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_levels;
    use crate::kernels::gemm::{sgemm_ref, MatRef};

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn packed_gemm_both_paths_match_reference() {
        let mut seed = 0;
        for &(m, n, k) in &[(1, 1, 1), (5, 7, 3), (6, 32, 8), (7, 33, 300), (13, 17, 256), (24, 100, 27), (50, 49, 513)] {
            for extra in [0, 5] {
                seed += 1;
                let ldx = n + extra;
                let ldo = n + 2 * extra;
                let a = rnd(m * k, seed);
                let x = rnd(k * ldx, seed + 100);
                let bias = rnd(m, seed + 200);
                let mut want = vec![0f32; m * ldo];
                sgemm_ref(m, n, k, MatRef::row_major(&a, k), MatRef { data: &x, rs: ldx as isize, cs: 1 }, &mut want, ldo, false);
                for i in 0..m {
                    for j in 0..n {
                        want[i * ldo + j] = (want[i * ldo + j] + bias[i]).max(0.0).min(0.7);
                    }
                }
                let scale = want.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
                let pa = PackedA::new(&a, m, k);
                let mut first_bits = None;
                for level in available_levels() {
                    let mut got = vec![-9.0f32; m * ldo];
                    let kc = if seed % 2 == 0 { 256 } else { 16 };
                    gemm_core(level, &pa.data, m, k, &x, ldx, n, &mut got, ldo, Some(&bias), 0.0, 0.7, kc, false);
                    for i in 0..m {
                        for j in 0..ldo {
                            let (g, w) = (got[i * ldo + j], want[i * ldo + j]);
                            if j < n {
                                assert!((g - w).abs() <= 1e-4 * scale, "{level:?} {m}x{n}x{k} ({i},{j}): {g} vs {w}");
                            } else {
                                assert_eq!(g, -9.0, "{level:?}: wrote past column n");
                            }
                        }
                    }
                    // the same summation order: every level agrees with the plain loops bit for bit
                    let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    if let Some(f) = &first_bits {
                        assert!(*f == bits, "{m}x{n}x{k}: {level:?} and plain paths differ");
                    }
                    first_bits = Some(bits);
                }
            }
        }
        eprintln!("packed GEMM levels tested: {:?}", available_levels());
    }
}
