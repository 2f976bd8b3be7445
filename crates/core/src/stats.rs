//! Statistics over tensors for calibration and sensitivity: ranges, histograms, noise power.

use crate::dispatch_fn;
use crate::kernels::{simd_level, SimdLevel};

dispatch_fn!(fn minmax_into(x: &[f32], out: &mut [f32; 2]) {
    let (mut lo, mut hi) = (out[0], out[1]);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    out[0] = lo;
    out[1] = hi;
});

/// (min, max) of `x`; (+inf, -inf) for an empty slice. NaNs are ignored.
pub fn minmax(x: &[f32]) -> (f32, f32) {
    minmax_at(simd_level(), x)
}

pub fn minmax_at(level: SimdLevel, x: &[f32]) -> (f32, f32) {
    let mut out = [f32::INFINITY, f32::NEG_INFINITY];
    minmax_into(level, x, &mut out);
    (out[0], out[1])
}

/// Adds the values of `x` to `hist` (bins of equal width over [lo, hi]; values outside go
/// to the end bins).
pub fn histogram(x: &[f32], lo: f32, hi: f32, hist: &mut [f64]) {
    let bins = hist.len();
    if bins == 0 {
        return;
    }
    let width = (hi - lo) as f64 / bins as f64;
    if width <= 0.0 || !width.is_finite() {
        hist[0] += x.len() as f64;
        return;
    }
    let inv = 1.0 / width;
    for &v in x {
        let b = ((v as f64 - lo as f64) * inv).floor();
        let b = if b < 0.0 { 0 } else if b >= bins as f64 { bins - 1 } else { b as usize };
        hist[b] += 1.0;
    }
}

/// Sum of squares of `x` and of `x - y`, in f64 (signal and noise power of a quantized output).
pub fn signal_noise(x: &[f32], y: &[f32]) -> (f64, f64) {
    let mut s = 0f64;
    let mut n = 0f64;
    for (a, b) in x.iter().zip(y) {
        s += (*a as f64) * (*a as f64);
        let d = (*a - *b) as f64;
        n += d * d;
    }
    (s, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_levels;

    #[test]
    fn minmax_same_on_every_level() {
        let x: Vec<f32> = (0..1037).map(|i| ((i * 7919) % 1000) as f32 / 10.0 - 37.0).collect();
        for l in available_levels() {
            let (lo, hi) = minmax_at(l, &x);
            assert_eq!(lo, -37.0);
            assert_eq!(hi, 62.9);
        }
        assert_eq!(minmax(&[]), (f32::INFINITY, f32::NEG_INFINITY));
    }

    #[test]
    fn histogram_counts_and_clamps() {
        let mut h = vec![0f64; 4];
        histogram(&[0.0, 0.9, 1.0, 3.99, 4.0, -5.0, 10.0], 0.0, 4.0, &mut h);
        assert_eq!(h, vec![3.0, 1.0, 0.0, 3.0]);
    }

    #[test]
    fn signal_noise_powers() {
        let (s, n) = signal_noise(&[1.0, 2.0], &[1.5, 2.0]);
        assert_eq!(s, 5.0);
        assert_eq!(n, 0.25);
    }
}
