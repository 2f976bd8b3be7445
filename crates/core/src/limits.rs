//! Size limits, checked before allocating: a tensor or a plan that would need more memory
//! than allowed is an error naming what and how much, never an allocation failure (which
//! aborts the process) or a machine driven into swap. The limits are process-wide and set by
//! the host (`src/limits.ts` in the npm package: `MPQ_MAX_TENSOR_BYTES`, `MPQ_MAX_PLAN_BYTES`).

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// Defaults, the same as the TypeScript side's.
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 2 << 30;
pub const DEFAULT_MAX_PLAN_BYTES: u64 = 8 << 30;

static MAX_TENSOR: AtomicU64 = AtomicU64::new(DEFAULT_MAX_TENSOR_BYTES);
static MAX_PLAN: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PLAN_BYTES);

/// Sets the limits (0 leaves one unchanged).
pub fn set(max_tensor_bytes: u64, max_plan_bytes: u64) {
    if max_tensor_bytes > 0 {
        MAX_TENSOR.store(max_tensor_bytes, Ordering::Relaxed);
    }
    if max_plan_bytes > 0 {
        MAX_PLAN.store(max_plan_bytes, Ordering::Relaxed);
    }
}

pub fn max_tensor_bytes() -> u64 {
    MAX_TENSOR.load(Ordering::Relaxed)
}

pub fn max_plan_bytes() -> u64 {
    MAX_PLAN.load(Ordering::Relaxed)
}

/// "17.2 GiB"-style text.
pub fn fmt_bytes(n: u128) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Bytes of a tensor of `shape` with `elem` bytes per element, with checked arithmetic
/// (`None` when the product does not fit in 128 bits).
pub fn tensor_bytes(shape: &[usize], elem: usize) -> Option<u128> {
    shape.iter().try_fold(elem as u128, |a, &d| a.checked_mul(d as u128))
}

/// Checks one tensor of `shape` (f32) against the per-tensor limit; `what` names it.
pub fn check_tensor(what: &str, shape: &[usize]) -> Result<usize> {
    check_tensor_max(what, shape, max_tensor_bytes())
}

/// [`check_tensor`] against an explicit limit.
pub fn check_tensor_max(what: &str, shape: &[usize], max: u64) -> Result<usize> {
    let max = max as u128;
    match tensor_bytes(shape, 4) {
        Some(b) if b <= max => Ok((b / 4) as usize),
        b => Err(Error::TooLarge(format!(
            "{what}: shape {shape:?} needs {}, over the limit of {} per tensor (raise MPQ_MAX_TENSOR_BYTES if the model really needs it)",
            b.map_or("more than 2^128 bytes".into(), fmt_bytes),
            fmt_bytes(max)
        ))),
    }
}

/// Checks a working-memory total (`bytes`, `None` on overflow) against the plan limit.
pub fn check_total(what: &str, bytes: Option<u128>) -> Result<()> {
    check_total_max(what, bytes, max_plan_bytes())
}

/// [`check_total`] against an explicit limit.
pub fn check_total_max(what: &str, bytes: Option<u128>, max: u64) -> Result<()> {
    let max = max as u128;
    match bytes {
        Some(b) if b <= max => Ok(()),
        b => Err(Error::TooLarge(format!(
            "{what} needs {}, over the limit of {} (raise MPQ_MAX_PLAN_BYTES if there is memory for it)",
            b.map_or("more than 2^128 bytes".into(), fmt_bytes),
            fmt_bytes(max)
        ))),
    }
}
