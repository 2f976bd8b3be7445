//! Convolution building blocks: 2-D geometry, im2col over a block of output columns,
//! col2im (for ConvTranspose) and a direct depthwise kernel. 1-D convolutions use these
//! with `h = 1`.

use super::act::Activation;
use super::SimdLevel;

/// Geometry of one 2-D convolution plane (per input channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom2 {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding at the start of each axis (the end padding only matters through `oh`/`ow`).
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom2 {
    /// Output extent of an axis: `(n + p0 + p1 - ((k - 1) * d + 1)) / s + 1`, `None` when the
    /// dilated kernel does not fit.
    pub fn out_len(n: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Option<usize> {
        let span = (k.checked_sub(1)?).checked_mul(d)?.checked_add(1)?;
        let padded = n.checked_add(p0)?.checked_add(p1)?;
        if s == 0 || padded < span {
            return None;
        }
        Some((padded - span) / s + 1)
    }
    pub fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    pub fn kk(&self) -> usize {
        self.kh * self.kw
    }
}

/// Writes the im2col matrix of output columns `j0..j1` (column `j` = output pixel
/// `(j / ow, j % ow)`) for `c` input channels of `x` (`[c, h, w]`) into `cols`
/// (`[c * kh * kw, j1 - j0]`, row-major). Out-of-bounds taps are zero.
pub fn im2col(x: &[f32], c: usize, g: &Geom2, j0: usize, j1: usize, cols: &mut [f32]) {
    let nb = j1 - j0;
    let hw = g.h * g.w;
    debug_assert!(x.len() >= c * hw && cols.len() >= c * g.kk() * nb);
    let mut row = 0;
    for ci in 0..c {
        let xc = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let dst = &mut cols[row * nb..(row + 1) * nb];
                row += 1;
                let mut j = j0;
                while j < j1 {
                    let oy = j / g.ow;
                    let ox0 = j % g.ow;
                    let ox1 = (ox0 + (j1 - j)).min(g.ow);
                    let d = &mut dst[j - j0..j - j0 + (ox1 - ox0)];
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    if iy < 0 || iy >= g.h as isize {
                        d.fill(0.0);
                    } else {
                        let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                        let off = (kx * g.dw) as isize - g.pw as isize;
                        if g.sw == 1 {
                            // valid ox: 0 <= ox + off < w
                            let lo = ((-off).max(0) as usize).clamp(ox0, ox1);
                            let hi = ((g.w as isize - off).max(0) as usize).clamp(lo, ox1);
                            d[..lo - ox0].fill(0.0);
                            let s = (lo as isize + off) as usize;
                            d[lo - ox0..hi - ox0].copy_from_slice(&xr[s..s + (hi - lo)]);
                            d[hi - ox0..].fill(0.0);
                        } else {
                            // valid ox: 0 <= ox*sw + off < w
                            let sw = g.sw as isize;
                            let lo = (if off < 0 { (-off + sw - 1) / sw } else { 0 } as usize).clamp(ox0, ox1);
                            let hi = ((g.w as isize - off + sw - 1).max(0) / sw) as usize;
                            let hi = hi.clamp(lo, ox1);
                            d[..lo - ox0].fill(0.0);
                            if hi > lo {
                                let s = (lo as isize * sw + off) as usize;
                                for (v, x) in d[lo - ox0..hi - ox0].iter_mut().zip(xr[s..].iter().step_by(g.sw)) {
                                    *v = *x;
                                }
                            }
                            d[hi - ox0..].fill(0.0);
                        }
                    }
                    j += ox1 - ox0;
                }
            }
        }
    }
}

/// Adds the columns `cols` (`[c * kh * kw, ih * iw]`, the input grid of a ConvTranspose,
/// where `g.h/g.w` is the *output* plane and `g.oh/g.ow` the *input* grid) into `out`
/// (`[c, h, w]`): `out[c, iy*sh - ph + ky*dh, ix*sw - pw + kx*dw] += cols[(c,ky,kx), iy, ix]`.
pub fn col2im(cols: &[f32], c: usize, g: &Geom2, out: &mut [f32]) {
    let n = g.oh * g.ow;
    let hw = g.h * g.w;
    let mut row = 0;
    for ci in 0..c {
        let oc = &mut out[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let src = &cols[row * n..(row + 1) * n];
                row += 1;
                for iy in 0..g.oh {
                    let y = (iy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    if y < 0 || y >= g.h as isize {
                        continue;
                    }
                    let orow = &mut oc[y as usize * g.w..(y as usize + 1) * g.w];
                    let srow = &src[iy * g.ow..(iy + 1) * g.ow];
                    let off = (kx * g.dw) as isize - g.pw as isize;
                    for (ix, v) in srow.iter().enumerate() {
                        let x = (ix * g.sw) as isize + off;
                        if x >= 0 && x < g.w as isize {
                            orow[x as usize] += *v;
                        }
                    }
                }
            }
        }
    }
}

/// Scratch size (floats) [`depthwise_plane`] needs for geometry `g`.
pub fn depthwise_scratch(g: &Geom2) -> usize {
    let (pr, qw) = dw_padded(g);
    g.sh * g.sw * pr * qw + g.oh * qw
}

/// Rows per row phase and columns per column phase of the phase-split padded input.
fn dw_padded(g: &Geom2) -> (usize, usize) {
    (g.oh + ((g.kh - 1) * g.dh) / g.sh, g.ow + ((g.kw - 1) * g.dw) / g.sw)
}

/// One depthwise plane: `out[oy, ox] = bias + sum w[ky, kx] * x[oy*sh - ph + ky*dh, ox*sw - pw + kx*dw]`
/// then the activation.
///
/// The input is first copied into `scratch` zero-padded and split by row and column phase
/// (`iy mod sh`, `ix mod sw`), each phase a `[pr, qw]` grid. On an output grid `[oh, qw]`
/// (`qw >= ow`, the extra columns are discarded) every tap then reads one contiguous run of
/// the flattened plane, whatever the strides and dilations, so the whole plane is a handful
/// of long vectorisable loops (one pass for 3x3), also for small 7x7 planes.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_plane(
    level: SimdLevel,
    x: &[f32],
    w: &[f32],
    bias: f32,
    g: &Geom2,
    act: Option<Activation>,
    scratch: &mut DwScratch,
    out: &mut [f32],
) {
    let need = depthwise_scratch(g);
    if scratch.geom != Some(*g) || scratch.buf.len() < need {
        // The padding cells of the phase-split copy are zero for every plane of one
        // geometry: zero them once here, and later planes only rewrite the interior.
        scratch.buf.clear();
        scratch.buf.resize(need, 0.0);
        scratch.geom = Some(*g);
    }
    if g.oh == 0 || g.ow == 0 {
        return;
    }
    dw_plane_impl(level, x, w, bias, g, act.as_ref(), &mut scratch.buf[..need], out, level);
}

/// Per-thread scratch of [`depthwise_plane`], reused across planes of the same geometry.
#[derive(Default)]
pub struct DwScratch {
    buf: Vec<f32>,
    geom: Option<Geom2>,
}

/// [`dw_plane_body`] compiled for the level in force: AVX-512F (16 lanes), AVX2 + FMA, or
/// the baseline. The body never fuses a multiply and
/// an add, so every build gives the same bits.
#[allow(clippy::too_many_arguments)]
fn dw_plane_impl(level: SimdLevel, x: &[f32], wt: &[f32], bias: f32, g: &Geom2, act: Option<&Activation>, scratch: &mut [f32], out: &mut [f32], lvl: SimdLevel) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2(x: &[f32], wt: &[f32], bias: f32, g: &Geom2, act: Option<&Activation>, scratch: &mut [f32], out: &mut [f32], lvl: SimdLevel) {
        dw_plane_body(x, wt, bias, g, act, scratch, out, lvl)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512(x: &[f32], wt: &[f32], bias: f32, g: &Geom2, act: Option<&Activation>, scratch: &mut [f32], out: &mut [f32], lvl: SimdLevel) {
        dw_plane_body(x, wt, bias, g, act, scratch, out, lvl)
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only in force on CPUs with AVX-512F, AVX2 and FMA.
        SimdLevel::Avx512 => unsafe { avx512(x, wt, bias, g, act, scratch, out, lvl) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` is only produced after checking that the CPU has AVX2 and FMA.
        SimdLevel::Avx2 => unsafe { avx2(x, wt, bias, g, act, scratch, out, lvl) },
        _ => dw_plane_body(x, wt, bias, g, act, scratch, out, lvl),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dw_plane_body(x: &[f32], wt: &[f32], bias: f32, g: &Geom2, act: Option<&Activation>, scratch: &mut [f32], out: &mut [f32], lvl: SimdLevel) {
    let (pr, qw) = dw_padded(g);
    let (sh, sw) = (g.sh, g.sw);
    let phase = pr * qw;
    assert!(x.len() >= g.h * g.w && wt.len() >= g.kh * g.kw && out.len() >= g.oh * g.ow);
    let (buf, acc) = scratch.split_at_mut(sh * sw * phase);
    let acc = &mut acc[..g.oh * qw];
    // buf[((qy * sw + qx) * pr + r) * qw + c] = P[r * sh + qy][c * sw + qx] (P: padded input)
    let range = |qx: usize| {
        // valid c: 0 <= c*sw + qx - pw < w
        let lo = if g.pw > qx { (g.pw - qx).div_ceil(sw) } else { 0 }.min(qw);
        let hi = if g.w + g.pw > qx { (g.w + g.pw - qx).div_ceil(sw) } else { 0 }.clamp(lo, qw);
        (lo, hi)
    };
    let copy_phase = |dst: &mut [f32], xr: &[f32], qx: usize, from: usize, to: usize| {
        for (c, d) in dst[from..to].iter_mut().enumerate() {
            *d = xr[(from + c) * sw + qx - g.pw];
        }
    };
    if sw == 2 {
        // Both column phases of a row at once: the interior is a de-interleave of pairs,
        // which the compiler vectorises with shuffles.
        let ((lo0, hi0), (lo1, hi1)) = (range(0), range(1));
        let (cl, ch) = (lo0.max(lo1), hi0.min(hi1).max(lo0.max(lo1)));
        for qy in 0..sh {
            for r in 0..pr {
                let iy = (r * sh + qy) as isize - g.ph as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue; // all padding: zeroed when the scratch was set up
                }
                let xr = &x[iy as usize * g.w..(iy as usize + 1) * g.w];
                let a0 = (qy * 2 * pr + r) * qw;
                let a1 = ((qy * 2 + 1) * pr + r) * qw;
                let (p0, p1) = buf.split_at_mut(a1);
                let (d0, d1) = (&mut p0[a0..a0 + qw], &mut p1[..qw]);
                copy_phase(d0, xr, 0, lo0, cl.min(hi0));
                copy_phase(d1, xr, 1, lo1, cl.min(hi1));
                if ch > cl {
                    let s0 = 2 * cl - g.pw;
                    for ((a, b), p) in d0[cl..ch].iter_mut().zip(d1[cl..ch].iter_mut()).zip(xr[s0..s0 + 2 * (ch - cl)].chunks_exact(2)) {
                        *a = p[0];
                        *b = p[1];
                    }
                }
                copy_phase(d0, xr, 0, ch.max(lo0), hi0);
                copy_phase(d1, xr, 1, ch.max(lo1), hi1);
            }
        }
    }
    for qx in 0..sw {
        if sw == 2 {
            break;
        }
        // valid c: 0 <= c*sw + qx - pw < w
        let lo = if g.pw > qx { (g.pw - qx).div_ceil(sw) } else { 0 }.min(qw);
        let hi = if g.w + g.pw > qx { (g.w + g.pw - qx).div_ceil(sw) } else { 0 }.clamp(lo, qw);
        for qy in 0..sh {
            for r in 0..pr {
                let at = ((qy * sw + qx) * pr + r) * qw;
                let dst = &mut buf[at..at + qw];
                let iy = (r * sh + qy) as isize - g.ph as isize;
                if iy < 0 || iy >= g.h as isize || hi <= lo {
                    continue; // all padding: zeroed when the scratch was set up
                }
                let xr = &x[iy as usize * g.w..(iy as usize + 1) * g.w];
                let s0 = lo * sw + qx - g.pw;
                if sw == 1 {
                    for (d, v) in dst[lo..hi].iter_mut().zip(&xr[s0..s0 + (hi - lo)]) {
                        *d = *v;
                    }
                } else {
                    for (i, v) in dst[lo..hi].iter_mut().enumerate() {
                        *v = xr[s0 + i * sw];
                    }
                }
            }
        }
    }
    // Flat run length: output rows 0..oh on a qw-wide grid, the last row only to ow.
    let len = (g.oh - 1) * qw + g.ow;
    let buf = &*buf;
    let tap = |ky: usize, kx: usize| -> &[f32] {
        let (oy, ox) = (ky * g.dh, kx * g.dw);
        let s = (((oy % sh) * sw + ox % sw) * pr + oy / sh) * qw + ox / sw;
        &buf[s..s + len]
    };
    let acc = &mut acc[..len];
    // onnxruntime's order (its M=1 SGEMM kernel, see kernels/mlas.rs): products rounded one
    // by one, taps summed in groups of four `((p0 + p1) + p2) + p3`, each group's sum added
    // to the running sum; the bias after the whole sum. No FMA anywhere: bit-equal to ORT.
    let (lo, hi, rest) = match act {
        Some(Activation::Relu) => (0.0, f32::INFINITY, None),
        Some(Activation::Clip(lo, hi)) => (*lo, *hi, None),
        other => (f32::NEG_INFINITY, f32::INFINITY, other),
    };
    if g.kh == 3 && g.kw == 3 && g.ow >= 16 {
        // Wide rows: each output row straight from the taps into `out`, bias and ReLU/Clip
        // in the same pass (no accumulator plane, no second pass over it).
        let w = &wt[..9];
        let (t0, t1, t2) = (tap(0, 0), tap(0, 1), tap(0, 2));
        let (t3, t4, t5) = (tap(1, 0), tap(1, 1), tap(1, 2));
        let (t6, t7, t8) = (tap(2, 0), tap(2, 1), tap(2, 2));
        for oy in 0..g.oh {
            let r = oy * qw..oy * qw + g.ow;
            let (t0, t1, t2, t3, t4) = (&t0[r.clone()], &t1[r.clone()], &t2[r.clone()], &t3[r.clone()], &t4[r.clone()]);
            let (t5, t6, t7, t8) = (&t5[r.clone()], &t6[r.clone()], &t7[r.clone()], &t8[r]);
            let o = &mut out[oy * g.ow..(oy + 1) * g.ow];
            for i in 0..g.ow {
                let a = ((w[0] * t0[i] + w[1] * t1[i]) + w[2] * t2[i]) + w[3] * t3[i];
                let b = ((w[4] * t4[i] + w[5] * t5[i]) + w[6] * t6[i]) + w[7] * t7[i];
                let v = (w[8] * t8[i] + (b + a)) + bias;
                let v = if v < lo { lo } else { v };
                o[i] = if v > hi { hi } else { v };
            }
        }
        if let Some(a) = rest {
            a.apply_at(lvl, &mut out[..g.oh * g.ow]);
        }
        return;
    }
    if g.kh == 3 && g.kw == 3 {
        let w = &wt[..9];
        let (t0, t1, t2) = (tap(0, 0), tap(0, 1), tap(0, 2));
        let (t3, t4, t5) = (tap(1, 0), tap(1, 1), tap(1, 2));
        let (t6, t7, t8) = (tap(2, 0), tap(2, 1), tap(2, 2));
        for i in 0..len {
            let a = ((w[0] * t0[i] + w[1] * t1[i]) + w[2] * t2[i]) + w[3] * t3[i];
            let b = ((w[4] * t4[i] + w[5] * t5[i]) + w[6] * t6[i]) + w[7] * t7[i];
            acc[i] = (w[8] * t8[i] + (b + a)) + bias;
        }
    } else {
        let kk = g.kh * g.kw;
        let taps: Vec<&[f32]> = (0..kk).map(|t| tap(t / g.kw, t % g.kw)).collect();
        let wk = &wt[..kk];
        acc.fill(0.0);
        let mut p = 0;
        while p + 4 <= kk {
            let (a0, a1, a2, a3) = (taps[p], taps[p + 1], taps[p + 2], taps[p + 3]);
            let (w0, w1, w2, w3) = (wk[p], wk[p + 1], wk[p + 2], wk[p + 3]);
            for i in 0..len {
                acc[i] += ((w0 * a0[i] + w1 * a1[i]) + w2 * a2[i]) + w3 * a3[i];
            }
            p += 4;
        }
        if kk - p >= 2 {
            let (a0, a1, w0, w1) = (taps[p], taps[p + 1], wk[p], wk[p + 1]);
            for i in 0..len {
                acc[i] += w0 * a0[i] + w1 * a1[i];
            }
            p += 2;
        }
        if p < kk {
            let (a0, w0) = (taps[p], wk[p]);
            for i in 0..len {
                acc[i] += w0 * a0[i];
            }
        }
        for a in acc.iter_mut() {
            *a += bias;
        }
    }
    // Copy out of the qw-wide grid; ReLU/Clip are applied in the same pass.
    for oy in 0..g.oh {
        let o = &mut out[oy * g.ow..(oy + 1) * g.ow];
        for (o, &a) in o.iter_mut().zip(&acc[oy * qw..oy * qw + g.ow]) {
            let v = if a < lo { lo } else { a };
            *o = if v > hi { hi } else { v };
        }
    }
    if let Some(a) = rest {
        a.apply_at(lvl, &mut out[..g.oh * g.ow]);
    }
}

/// Naive depthwise plane, the reference for tests.
pub fn depthwise_plane_ref(x: &[f32], w: &[f32], bias: f32, g: &Geom2, act: Option<Activation>, out: &mut [f32]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let mut s = bias as f64;
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    let ix = (ox * g.sw + kx * g.dw) as isize - g.pw as isize;
                    if iy >= 0 && iy < g.h as isize && ix >= 0 && ix < g.w as isize {
                        s += w[ky * g.kw + kx] as f64 * x[iy as usize * g.w + ix as usize] as f64;
                    }
                }
            }
            out[oy * g.ow + ox] = s as f32;
        }
    }
    if let Some(a) = act {
        a.apply_at(SimdLevel::Scalar, &mut out[..g.oh * g.ow]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_levels;

    pub(crate) fn rnd(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn depthwise_every_level_matches_naive_reference() {
        let mut seed = 1;
        let mut cases = 0;
        let mut scratches: Vec<DwScratch> = (0..4).map(|_| DwScratch { buf: vec![f32::NAN; 3], geom: None }).collect();
        for &(h, w) in &[(1, 1), (5, 7), (12, 9), (17, 33)] {
            for &(kh, kw) in &[(1, 1), (3, 3), (2, 5), (5, 4), (1, 7)] {
                for &(sh, sw) in &[(1, 1), (2, 2), (1, 3), (3, 2)] {
                    for &(dh, dw) in &[(1, 1), (2, 3)] {
                        for &(ph, pw, ph1, pw1) in &[(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 0, 3), (0, 2, 1, 0)] {
                            let (Some(oh), Some(ow)) =
                                (Geom2::out_len(h, kh, sh, dh, ph, ph1), Geom2::out_len(w, kw, sw, dw, pw, pw1))
                            else {
                                continue;
                            };
                            let g = Geom2 { h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow };
                            seed += 1;
                            let x = rnd(h * w, seed);
                            let wt = rnd(kh * kw, seed + 1000);
                            let act = [None, Some(Activation::Relu), Some(Activation::Clip(-0.3, 0.4)), Some(Activation::HardSwish)][seed as usize % 4];
                            let mut want = vec![0.0; oh * ow];
                            depthwise_plane_ref(&x, &wt, 0.25, &g, act, &mut want);
                            let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                            for lvl in available_levels() {
                                let mut got = vec![f32::NAN; oh * ow];
                                // one scratch per level over all cases: reuse across geometries must be safe
                                let scratch = &mut scratches[lvl as usize];
                                depthwise_plane(lvl, &x, &wt, 0.25, &g, act, scratch, &mut got);
                                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                                    assert!((a - b).abs() <= 1e-4 * scale, "{lvl:?} {g:?} at {i}: {a} vs {b}");
                                }
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 300, "{cases}");
    }

    #[test]
    fn im2col_blocks_match_whole() {
        let g = Geom2 { h: 7, w: 6, kh: 3, kw: 2, sh: 2, sw: 1, dh: 1, dw: 2, ph: 1, pw: 2, oh: 4, ow: 7 };
        let c = 2;
        let x = rnd(c * g.h * g.w, 9);
        let k = c * g.kk();
        let n = g.ohw();
        let mut whole = vec![0.0; k * n];
        im2col(&x, c, &g, 0, n, &mut whole);
        // spot check against the definition
        for ci in 0..c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for j in 0..n {
                        let (oy, ox) = (j / g.ow, j % g.ow);
                        let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                        let ix = (ox * g.sw + kx * g.dw) as isize - g.pw as isize;
                        let v = if iy >= 0 && iy < g.h as isize && ix >= 0 && ix < g.w as isize {
                            x[ci * g.h * g.w + iy as usize * g.w + ix as usize]
                        } else {
                            0.0
                        };
                        assert_eq!(whole[((ci * g.kh + ky) * g.kw + kx) * n + j], v);
                    }
                }
            }
        }
        for (j0, j1) in [(0, 5), (3, 11), (10, n)] {
            let mut part = vec![0.0; k * (j1 - j0)];
            im2col(&x, c, &g, j0, j1, &mut part);
            for r in 0..k {
                assert_eq!(&part[r * (j1 - j0)..(r + 1) * (j1 - j0)], &whole[r * n + j0..r * n + j1]);
            }
        }
    }
}
