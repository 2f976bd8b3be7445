//! Kernels. Each SIMD kernel has a scalar reference; the implementation is chosen once at
//! run time from CPU features ([`simd_level`]); `MPQ_FORCE_SCALAR=1` forces the reference.
//! Tests run one battery over every implementation.

pub mod act;
pub mod gemm;
pub mod bcast;
pub mod fq;
pub mod unary;
pub mod conv;
pub mod pgemm;
pub mod alloc;
pub mod mlas;

use std::sync::OnceLock;

/// The instruction set the dispatching kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
}

/// Detected once; `MPQ_FORCE_SCALAR=1` forces [`SimdLevel::Scalar`].
pub fn simd_level() -> SimdLevel {
    static L: OnceLock<SimdLevel> = OnceLock::new();
    *L.get_or_init(|| {
        if std::env::var("MPQ_FORCE_SCALAR").map(|v| v == "1").unwrap_or(false) {
            return SimdLevel::Scalar;
        }
        detect()
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        SimdLevel::Avx2
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Scalar
}

/// Levels available on this CPU, for test batteries that compare each against the scalar one.
pub fn available_levels() -> Vec<SimdLevel> {
    let mut v = vec![SimdLevel::Scalar];
    if detect() == SimdLevel::Avx2 {
        v.push(SimdLevel::Avx2);
    }
    v
}

/// Defines `$name(level, args...)` that runs the body compiled for AVX2+FMA when `level` is
/// `Avx2`, and the same body compiled for the baseline target otherwise. The body is written
/// once as plain loops that the compiler vectorises for each target.
#[macro_export]
macro_rules! dispatch_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name(level: $crate::kernels::SimdLevel, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) { body($($arg),*) }
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Avx2` is only ever produced by `detect()` after checking that the
                // CPU supports AVX2 and FMA.
                $crate::kernels::SimdLevel::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
