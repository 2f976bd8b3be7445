//! Fake-quant arithmetic, exactly as ONNX QuantizeLinear / DequantizeLinear define it:
//! `q = clamp(round_half_even(x / scale) + zp, qmin, qmax)` (a division, not a multiplication
//! by the reciprocal) and `y = (q - zp) * scale`. Quantized values are carried as exact `f32`.
//! The quantizer's simulation uses these functions, so they must stay bit-exact with ONNX.
//!
//! Per-channel functions view the data as `[outer, C, inner]` with one scale and zero point
//! per channel `C`; `start` is the flat index (a multiple of `inner`) of `x[0]` in that view,
//! so a caller may split the tensor into chunks of whole `inner` blocks.
#![allow(clippy::too_many_arguments)]
use crate::dispatch_fn;

/// Reference quantization of one value. A NaN input gives `qmin`.
#[inline(always)]
pub fn quantize_one(x: f32, scale: f32, zp: f32, qmin: f32, qmax: f32) -> f32 {
    ((x / scale).round_ties_even() + zp).max(qmin).min(qmax)
}

/// Reference dequantization of one value.
#[inline(always)]
pub fn dequantize_one(q: f32, scale: f32, zp: f32) -> f32 {
    (q - zp) * scale
}

/// Reference quantize-dequantize of one value.
#[inline(always)]
pub fn fake_quant_one(x: f32, scale: f32, zp: f32, qmin: f32, qmax: f32) -> f32 {
    dequantize_one(quantize_one(x, scale, zp, qmin, qmax), scale, zp)
}

dispatch_fn!(pub fn quantize(x: &[f32], out: &mut [f32], scale: f32, zp: f32, qmin: f32, qmax: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_one(v, scale, zp, qmin, qmax);
    }
});

dispatch_fn!(pub fn dequantize(x: &[f32], out: &mut [f32], scale: f32, zp: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = dequantize_one(v, scale, zp);
    }
});

dispatch_fn!(pub fn fake_quant(x: &[f32], out: &mut [f32], scale: f32, zp: f32, qmin: f32, qmax: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = fake_quant_one(v, scale, zp, qmin, qmax);
    }
});

dispatch_fn!(pub fn fake_quant_inplace(x: &mut [f32], scale: f32, zp: f32, qmin: f32, qmax: f32) {
    for v in x.iter_mut() {
        *v = fake_quant_one(*v, scale, zp, qmin, qmax);
    }
});

/// Applies `f(x, scale, zp)` per channel; see the module doc for the layout.
#[inline(always)]
fn per_channel(x: &[f32], out: &mut [f32], scales: &[f32], zps: &[f32], inner: usize, start: usize, f: impl Fn(f32, f32, f32) -> f32) {
    let c = scales.len().min(zps.len());
    let n = x.len().min(out.len());
    if c == 0 || inner == 0 || n == 0 {
        return;
    }
    let (x, out) = (&x[..n], &mut out[..n]);
    let mut ch = (start / inner) % c;
    if inner == 1 {
        // channels along the last axis: rows of `c` values with the scales zipped in
        let head = ((c - ch) % c).min(n);
        for i in 0..head {
            out[i] = f(x[i], scales[ch + i], zps[ch + i]);
        }
        for (xr, or) in x[head..].chunks(c).zip(out[head..].chunks_mut(c)) {
            for (((o, &v), &s), &z) in or.iter_mut().zip(xr).zip(scales).zip(zps) {
                *o = f(v, s, z);
            }
        }
        return;
    }
    for (xb, ob) in x.chunks(inner).zip(out.chunks_mut(inner)) {
        let (s, z) = (scales[ch], zps[ch]);
        for (o, &v) in ob.iter_mut().zip(xb) {
            *o = f(v, s, z);
        }
        ch += 1;
        if ch == c {
            ch = 0;
        }
    }
}

dispatch_fn!(pub fn quantize_per_channel(x: &[f32], out: &mut [f32], scales: &[f32], zps: &[f32], inner: usize, start: usize, qmin: f32, qmax: f32) {
    per_channel(x, out, scales, zps, inner, start, |v, s, z| quantize_one(v, s, z, qmin, qmax))
});

dispatch_fn!(pub fn dequantize_per_channel(x: &[f32], out: &mut [f32], scales: &[f32], zps: &[f32], inner: usize, start: usize) {
    per_channel(x, out, scales, zps, inner, start, dequantize_one)
});

dispatch_fn!(pub fn fake_quant_per_channel(x: &[f32], out: &mut [f32], scales: &[f32], zps: &[f32], inner: usize, start: usize, qmin: f32, qmax: f32) {
    per_channel(x, out, scales, zps, inner, start, |v, s, z| fake_quant_one(v, s, z, qmin, qmax))
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_levels;

    fn data(n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.371).sin() * 3.0 + (i % 7) as f32 * 0.05).collect();
        // exact ties at scale 0.5: x / 0.5 = k + 0.5
        v.extend_from_slice(&[1.25, 1.75, -1.25, -1.75, 0.25, -0.25, f32::NAN, 1e9, -1e9]);
        v
    }

    #[test]
    fn rounding_ties_to_even_and_clamping() {
        assert_eq!(quantize_one(2.5, 1.0, 0.0, -128.0, 127.0), 2.0);
        assert_eq!(quantize_one(3.5, 1.0, 0.0, -128.0, 127.0), 4.0);
        assert_eq!(quantize_one(-2.5, 1.0, 0.0, -128.0, 127.0), -2.0);
        assert_eq!(quantize_one(-3.5, 1.0, 0.0, -128.0, 127.0), -4.0);
        // tie decided before the zero point is added: 2.5 -> 2, + 3 = 5 (not 6)
        assert_eq!(quantize_one(2.5, 1.0, 3.0, 0.0, 255.0), 5.0);
        assert_eq!(quantize_one(1000.0, 0.1, 0.0, -128.0, 127.0), 127.0);
        assert_eq!(quantize_one(-1000.0, 0.1, 10.0, 0.0, 255.0), 0.0);
        assert_eq!(quantize_one(f32::NAN, 0.1, 10.0, 0.0, 255.0), 0.0);
        assert_eq!(dequantize_one(130.0, 0.5, 128.0), 1.0);
        assert_eq!(fake_quant_one(0.26, 0.1, 0.0, -128.0, 127.0), 3.0 * 0.1f32);
    }

    #[test]
    fn divides_by_the_scale_not_multiplies_by_its_reciprocal() {
        // inputs near rounding ties, where x / s and x * (1 / s) can round differently in f32
        let mut found = 0;
        for &s in &[0.0173f32, 0.3, 0.07, 0.011] {
            for k in -300..300 {
                let x = (k as f32 + 0.5) * s;
                let a = (x / s).round_ties_even();
                let b = (x * (1.0 / s)).round_ties_even();
                if a != b {
                    found += 1;
                    for level in available_levels() {
                        let mut o = [0.0f32];
                        quantize(level, &[x], &mut o, s, 0.0, -1e9, 1e9);
                        assert_eq!(o[0], a, "x = {x}, s = {s}");
                        fake_quant(level, &[x], &mut o, s, 0.0, -1e9, 1e9);
                        assert_eq!(o[0], a * s);
                    }
                }
            }
        }
        let found = found > 0;
        assert!(found, "no distinguishing input found");
    }

    #[test]
    fn every_level_matches_scalar_reference() {
        let x = data(1031);
        let n = x.len();
        for level in available_levels() {
            for &(s, z, lo, hi) in &[(0.5f32, 0.0f32, -128.0f32, 127.0f32), (0.0173, 131.0, 0.0, 255.0), (0.02, -3.0, -8.0, 7.0)] {
                let mut q = vec![0.0; n];
                let mut d = vec![0.0; n];
                let mut f = vec![0.0; n];
                quantize(level, &x, &mut q, s, z, lo, hi);
                dequantize(level, &q, &mut d, s, z);
                fake_quant(level, &x, &mut f, s, z, lo, hi);
                for i in 0..n {
                    assert_eq!(q[i].to_bits(), quantize_one(x[i], s, z, lo, hi).to_bits(), "q {level:?} {i}");
                    assert_eq!(d[i].to_bits(), dequantize_one(q[i], s, z).to_bits());
                    assert_eq!(f[i].to_bits(), d[i].to_bits());
                }
            }
            // per channel, several inner sizes and chunked starts
            for &(c, inner) in &[(3usize, 1usize), (5, 7), (4, 16), (1, 10)] {
                let outer = 3;
                let len = outer * c * inner;
                let x = &data(len)[..len];
                let scales: Vec<f32> = (0..c).map(|i| 0.01 + 0.03 * i as f32).collect();
                let zps: Vec<f32> = (0..c).map(|i| i as f32 - 1.0).collect();
                let want_q: Vec<f32> = (0..len).map(|i| {
                    let ch = (i / inner) % c;
                    quantize_one(x[i], scales[ch], zps[ch], -128.0, 127.0)
                }).collect();
                let mut q = vec![0.0; len];
                quantize_per_channel(level, x, &mut q, &scales, &zps, inner, 0, -128.0, 127.0);
                assert_eq!(q, want_q, "c={c} inner={inner}");
                // in chunks of whole inner blocks starting mid-channel
                let mut q2 = vec![0.0; len];
                let step = inner * 2;
                for st in (0..len).step_by(step) {
                    let e = (st + step).min(len);
                    quantize_per_channel(level, &x[st..e], &mut q2[st..e], &scales, &zps, inner, st, -128.0, 127.0);
                }
                assert_eq!(q2, want_q);
                let mut d = vec![0.0; len];
                dequantize_per_channel(level, &q, &mut d, &scales, &zps, inner, 0);
                let mut f = vec![0.0; len];
                fake_quant_per_channel(level, x, &mut f, &scales, &zps, inner, 0, -128.0, 127.0);
                for i in 0..len {
                    let ch = (i / inner) % c;
                    assert_eq!(d[i], dequantize_one(q[i], scales[ch], zps[ch]));
                    assert_eq!(f[i], d[i]);
                }
            }
        }
    }
}
