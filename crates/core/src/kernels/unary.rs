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
    erf(v) => super::ort_erf(v);
    // log(1 + e^x) without overflow for large x
    softplus(v) => v.max(0.0) + (-v.abs()).exp().ln_1p();
    gelu(v) => 0.5 * v * (1.0 + super::ort_erf(v * std::f32::consts::FRAC_1_SQRT_2));
    gelu_tanh(v) => 0.5 * v * (1.0 + (0.797_884_6 * (v + 0.044715 * v * v * v)).tanh());
}

/// The error function as ONNX Runtime computes it on x86-64 with FMA (MLAS `MlasErfKernelFma3`,
/// the kernel of its Erf op): the same polynomials, operation by operation, so that a quantizer
/// reading a GELU rounds the values onnxruntime rounds (libm's `erff` differs in the last bit
/// for about 9% of inputs). `mul_add` is the fused multiply-add of the FMA instructions.
#[inline(always)]
pub fn ort_erf(x: f32) -> f32 {
    const SMALL: [f32; 6] = [-5.99104969e-4, 4.99339588e-3, -2.67667342e-2, 1.12818025e-1, -3.76124859e-1, 1.28379151e-1];
    const BIG: [f32; 7] = [1.72948930e-5, -3.83208680e-4, 3.88393435e-3, -2.42545605e-2, 1.06777847e-1, 6.34846687e-1, 1.28717512e-1];
    const EXP: [f32; 7] = [1.38319808e-3, 8.37550033e-3, 4.16689515e-2, 1.66664466e-1, 4.99999851e-1, 1.0, 1.0];
    let sign = x.to_bits() & 0x8000_0000;
    // vminps(|x|, 3.925): the second operand when the first is NaN (3.925 in the MLAS of onnxruntime 1.30, measured bit for bit; older MLAS had 3.725)
    let ax = f32::from_bits(x.to_bits() & 0x7fff_ffff);
    let a = if ax < 3.925 { ax } else { 3.925 };
    let s = a * a;
    let mut r = SMALL[0];
    for &c in &SMALL[1..] {
        r = r.mul_add(s, c);
    }
    let r = r.mul_add(a, a);
    let big = 0.921875 <= a;
    let small = if big { 0 } else { r.to_bits() };
    let b = if big { a } else { 0.0 };
    let mut rb = BIG[0];
    for &c in &BIG[1..] {
        rb = rb.mul_add(b, c);
    }
    let rb = rb.mul_add(b, b);
    // 1 - exp(-rb): vmaxps(-rb, lower) keeps the second operand unless -rb is larger
    let nr = -rb;
    const LOWER: f32 = -88.376_262_664_794_9;
    let e = if nr > LOWER { nr } else { LOWER };
    const C: f32 = 1.258_291_20e7;
    let t = 1.442_695_040_888_963_41_f32.mul_add(e, C) - C;
    let f = t.mul_add(-6.931_457_52e-1, e);
    let f = t.mul_add(-1.428_606_77e-6, f);
    let mut y = EXP[0];
    for &c in &EXP[1..] {
        y = y.mul_add(f, c);
    }
    // 2^t from its exponent bits (vcvttps2dq truncates; t is already an integer)
    let pow = f32::from_bits(((t as i32).wrapping_add(127) as u32) << 23);
    let y = 1.0 - y * pow;
    f32::from_bits(y.to_bits() | small | sign)
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
