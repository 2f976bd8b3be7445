//! Elementwise math kernels not covered by [`super::act::Activation`]. Each kernel is the
//! per-element function in [`scalar`] (the reference) looped over a slice and compiled once
//! per SIMD level by `dispatch_fn!`.
use super::SimdLevel;
use crate::dispatch_fn;

/// The signature of every kernel here without parameters.
pub type Kernel = fn(SimdLevel, &mut [f32]);

macro_rules! kernels {
    ($($name:ident($v:ident) => $e:expr;)*) => {
        /// Per-element reference of each kernel.
        pub mod scalar {
            $(
                #[inline(always)]
                pub fn $name($v: f32) -> f32 { $e }
            )*
        }
        $(
            dispatch_fn!(pub fn $name(x: &mut [f32]) {
                for v in x.iter_mut() {
                    *v = scalar::$name(*v);
                }
            });
        )*
        /// Every parameterless kernel with its reference, for test batteries.
        pub const ALL: &[(&str, Kernel, fn(f32) -> f32)] = &[$((stringify!($name), $name, scalar::$name)),*];
    };
}

kernels! {
    neg(v) => -v;
    abs(v) => v.abs();
    reciprocal(v) => 1.0 / v;
    floor(v) => v.floor();
    ceil(v) => v.ceil();
    round(v) => v.round_ties_even();
    sqrt(v) => v.sqrt();
    exp(v) => v.exp();
    log(v) => v.ln();
    sin(v) => v.sin();
    cos(v) => v.cos();
    sign(v) => if v > 0.0 { 1.0 } else if v < 0.0 { -1.0 } else if v == 0.0 { 0.0 } else { v };
    not(v) => if v == 0.0 { 1.0 } else { 0.0 };
    erf(v) => libm::erff(v);
    // log(1 + e^x) without overflow for large x
    softplus(v) => v.max(0.0) + (-v.abs()).exp().ln_1p();
    gelu(v) => 0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2));
    gelu_tanh(v) => 0.5 * v * (1.0 + (0.797_884_6 * (v + 0.044715 * v * v * v)).tanh());
}

/// Per-element reference of [`elu`].
#[inline(always)]
pub fn elu_scalar(v: f32, alpha: f32) -> f32 {
    if v < 0.0 {
        alpha * (v.exp() - 1.0)
    } else {
        v
    }
}

dispatch_fn!(pub fn elu(x: &mut [f32], alpha: f32) {
    for v in x.iter_mut() {
        *v = elu_scalar(*v, alpha);
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_levels;

    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..1037).map(|i| ((i as f32) * 0.7311).sin() * 12.0).collect();
        v.extend_from_slice(&[0.0, -0.0, 0.5, 1.5, 2.5, -2.5, -0.5, 1e-30, -1e-30, 88.0, -88.0, 1e6]);
        v
    }

    #[test]
    fn every_level_matches_scalar_reference() {
        for level in available_levels() {
            for (name, k, r) in ALL {
                let mut x = inputs();
                let want: Vec<f32> = x.iter().map(|&v| r(v)).collect();
                k(level, &mut x);
                for (i, (a, b)) in x.iter().zip(&want).enumerate() {
                    assert!(a.to_bits() == b.to_bits() || (a - b).abs() <= 1e-6 * b.abs().max(1.0), "{name} at {level:?}, input {i}: {a} vs {b}");
                }
            }
            let mut x = inputs();
            let want: Vec<f32> = x.iter().map(|&v| elu_scalar(v, 0.7)).collect();
            elu(level, &mut x, 0.7);
            assert_eq!(x, want);
        }
    }

    #[test]
    fn hand_checked_values() {
        assert_eq!(scalar::round(2.5), 2.0);
        assert_eq!(scalar::round(3.5), 4.0);
        assert_eq!(scalar::round(-2.5), -2.0);
        assert_eq!(scalar::round(-1.4), -1.0);
        assert_eq!(scalar::sign(-3.0), -1.0);
        assert_eq!(scalar::sign(0.0), 0.0);
        assert_eq!(scalar::not(0.0), 1.0);
        assert_eq!(scalar::not(2.0), 0.0);
        // erf against tabulated values
        for (x, e) in [(0.0f32, 0.0f32), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.0, -0.842_700_8), (3.5, 0.999_999_3)] {
            assert!((scalar::erf(x) - e).abs() < 1e-6, "erf({x}) = {}", scalar::erf(x));
        }
        assert!((scalar::gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((scalar::gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((scalar::softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(scalar::softplus(100.0), 100.0);
        assert!(scalar::softplus(-100.0) >= 0.0 && scalar::softplus(-100.0) < 1e-40);
        assert!((elu_scalar(-1.0, 2.0) - 2.0 * ((-1.0f32).exp() - 1.0)).abs() < 1e-7);
    }
}
