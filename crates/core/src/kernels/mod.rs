//! Kernels. Each SIMD kernel has a scalar reference; the implementation is chosen once at
//! run time from CPU features ([`simd_level`]); `MPQ_FORCE_ISA=scalar|avx2|avx512` selects a
//! level the CPU has (`MPQ_FORCE_SCALAR=1` forces the reference).
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

use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction set the dispatching kernels use, from the baseline up. Every level
/// computes the same bits (the kernels share one summation order, see `CONV.md`); the levels
/// differ only in speed, and one machine tests every level it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Plain Rust for the baseline target (any x86-64, ARM64, ...).
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512F (with AVX2 + FMA).
    Avx512,
}

impl SimdLevel {
    /// The name used by `MPQ_FORCE_ISA` and reported by the engine.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Parses a level name (`scalar`, `avx2`, `avx512`).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "generic" | "none" => Some(SimdLevel::Scalar),
            "avx2" | "fma" | "avx2fma" => Some(SimdLevel::Avx2),
            "avx512" | "avx512f" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }
}

const UNSET: u8 = u8::MAX;
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

fn encode(l: SimdLevel) -> u8 {
    l as u8
}

fn decode(v: u8) -> SimdLevel {
    match v {
        0 => SimdLevel::Scalar,
        1 => SimdLevel::Avx2,
        _ => SimdLevel::Avx512,
    }
}

/// The level in force: the best this CPU has ([`detected_level`]), lowered by
/// `MPQ_FORCE_ISA=scalar|avx2|avx512` (`MPQ_FORCE_SCALAR=1` is `scalar`) or by
/// [`set_simd_level`]. A level the CPU lacks is never used: asking for it gives the best
/// the CPU has.
pub fn simd_level() -> SimdLevel {
    let v = LEVEL.load(Ordering::Relaxed);
    if v != UNSET {
        return decode(v);
    }
    let forced = std::env::var("MPQ_FORCE_ISA").ok().and_then(|v| SimdLevel::parse(&v)).or_else(|| {
        std::env::var("MPQ_FORCE_SCALAR").ok().filter(|v| v == "1").map(|_| SimdLevel::Scalar)
    });
    let l = forced.map_or(detected_level(), |f| f.min(detected_level()));
    LEVEL.store(encode(l), Ordering::Relaxed);
    l
}

/// Selects the level the kernels use from now on (clamped to what the CPU has) and returns
/// the level in force. Meant for tests and benchmarks that run every path in one process;
/// kernels read the level when they run, so compiled plans follow it.
pub fn set_simd_level(l: SimdLevel) -> SimdLevel {
    let l = l.min(detected_level());
    LEVEL.store(encode(l), Ordering::Relaxed);
    l
}

/// The best level this CPU supports.
pub fn detected_level() -> SimdLevel {
    static D: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *D.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        SimdLevel::Scalar
    } else if is_x86_feature_detected!("avx512f") {
        SimdLevel::Avx512
    } else {
        SimdLevel::Avx2
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Scalar
}

/// Levels available on this CPU, for test batteries that compare each against the scalar one.
pub fn available_levels() -> Vec<SimdLevel> {
    [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512].into_iter().filter(|&l| l <= detected_level()).collect()
}

/// Defines `$name(level, args...)` that runs the body compiled for AVX2+FMA when `level` is
/// `Avx2` or `Avx512`, and the same body compiled for the baseline target otherwise. The body is written
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
                // SAFETY: `Avx2` and `Avx512` are only in force after `detect()` found AVX2
                // and FMA on this CPU ([`set_simd_level`] clamps to it).
                $crate::kernels::SimdLevel::Avx2 | $crate::kernels::SimdLevel::Avx512 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
