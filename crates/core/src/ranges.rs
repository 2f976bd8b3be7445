//! Weight range setting: per-output-channel symmetric scales (signed, narrow range), from the
//! max-abs value or from a search of the clipping ratio (1.0 down to 0.5 in 41 steps) that
//! minimises the squared quantization error of the channel (MSE).
//!
//! The arithmetic is that of ONNX QuantizeLinear/DequantizeLinear in f32 (see `kernels::fq`);
//! the scale and the error sums are formed in f64 exactly as the TypeScript layer did before
//! this moved here, so the scales are bit-identical to those of earlier runs (and caches).

use rayon::prelude::*;

/// The f32 scale of a `bits`-bit signed narrow-range quantizer for a max-abs value (1e-8 for 0).
fn symmetric_scale(max_abs: f64, bits: u32) -> f32 {
    let qmax = ((1u64 << (bits - 1)) - 1) as f64;
    let s = (max_abs / qmax) as f32;
    if s > 0.0 && s.is_finite() {
        s
    } else {
        1e-8
    }
}

/// Per-channel scales of a weight of `shape` whose output channels lie along `axis`.
/// `mse`: search the clipping ratio per channel; else max-abs. Channels run in parallel.
pub fn weight_scales(data: &[f32], shape: &[usize], axis: usize, bits: u32, mse: bool) -> Vec<f32> {
    assert!(axis < shape.len(), "axis {axis} out of range for rank {}", shape.len());
    assert!((2..=16).contains(&bits), "bits must be 2..16, got {bits}");
    let ch = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    assert_eq!(data.len(), ch * inner * outer, "weight of shape {shape:?} has {} values", data.len());
    let qmax = ((1i32 << (bits - 1)) - 1) as f32;
    let qmin = -qmax;
    (0..ch)
        .into_par_iter()
        .map(|c| {
            let vals: Vec<f32> = (0..outer).flat_map(|o| data[(o * ch + c) * inner..(o * ch + c + 1) * inner].iter().copied()).collect();
            let max_abs = vals.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let mut best = symmetric_scale(max_abs as f64, bits);
            if mse && max_abs > 0.0 {
                let mut best_err = f64::INFINITY;
                for k in 0..=40 {
                    let ratio = 1.0 - k as f64 * 0.0125;
                    let s = symmetric_scale(max_abs as f64 * ratio, bits);
                    let mut err = 0f64;
                    for &v in &vals {
                        let q = (v / s).round_ties_even().max(qmin).min(qmax);
                        let d = v as f64 - (q * s) as f64;
                        err += d * d;
                    }
                    if err < best_err {
                        best_err = err;
                        best = s;
                    }
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_abs_scales_per_channel_along_the_axis() {
        // shape [2, 3]: channels along axis 1 are the columns
        let w = [1.0, -2.0, 0.0, -0.5, 1.5, 0.0];
        let s = weight_scales(&w, &[2, 3], 1, 8, false);
        assert_eq!(s, vec![(1.0f64 / 127.0) as f32, (2.0f64 / 127.0) as f32, 1e-8]);
    }

    #[test]
    fn mse_clips_an_outlier_and_lowers_the_error() {
        // many small values and one outlier: at 4 bits clipping the outlier pays off
        let mut w: Vec<f32> = (0..255).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2).collect();
        w.push(1.0);
        let err = |s: f32| -> f64 {
            w.iter().map(|&v| {
                let q = (v / s).round_ties_even().clamp(-7.0, 7.0);
                (v as f64 - (q * s) as f64).powi(2)
            }).sum()
        };
        let max = weight_scales(&w, &[256, 1], 1, 4, false)[0];
        let mse = weight_scales(&w, &[256, 1], 1, 4, true)[0];
        assert!(mse < max, "mse scale {mse} should clip below max-abs {max}");
        assert!(err(mse) < err(max));
        // and it is the best of the 41 ratios it tries
        for k in 0..=40 {
            let s = symmetric_scale(1.0 * (1.0 - k as f64 * 0.0125), 4);
            assert!(err(mse) <= err(s));
        }
    }
}
