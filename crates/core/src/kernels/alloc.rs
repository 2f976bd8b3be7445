//! Large output buffers. A fresh multi-megabyte `Vec` comes straight from `mmap`, and the
//! first write to each 4 KiB page faults into the kernel: for MobileNet activations (up to
//! 77 MB per value at batch 32) these faults took about a fifth of the run time. On Linux the
//! buffer is marked for transparent huge pages before it is touched, so it faults in 2 MiB
//! steps instead (a no-op where THP is disabled).

/// Buffers from this size on (bytes) are advised to use huge pages.
const HUGE_FROM: usize = 4 << 20;

/// A zeroed buffer of `n` floats.
pub fn zeroed(n: usize) -> Vec<f32> {
    let v = vec![0f32; n];
    #[cfg(target_os = "linux")]
    advise_huge(v.as_ptr() as usize, n * 4);
    v
}

/// A buffer of `n` floats for an output that the caller writes completely before anything
/// reads it (Conv's GEMM and depthwise paths). Skips the zero fill of [`zeroed`]: with
/// mimalloc a large `vec![0.0; n]` is a `memset` over the buffer, one more pass over memory
/// (about 6% of a MobileNet batch-32 run) before the kernel writes it again. Under `cfg(test)`
/// the buffer is filled with NaN, so that an element a kernel fails to write shows in tests.
pub fn for_overwrite(n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    advise_huge(v.as_ptr() as usize, n * 4);
    #[cfg(test)]
    v.resize(n, f32::NAN);
    #[cfg(not(test))]
    // SAFETY: capacity n was reserved above. The elements are not initialised: callers
    // (documented above) write every element before reading any, and f32 has no invalid
    // bit patterns that a write could trip over.
    unsafe {
        v.set_len(n)
    };
    v
}

#[cfg(target_os = "linux")]
/// Advises the pages of the allocation `[start, start + bytes)` onto huge pages.
fn advise_huge(start: usize, bytes: usize) {
    const MADV_HUGEPAGE: i32 = 14;
    const HUGE: usize = 2 << 20;
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    if bytes < HUGE_FROM {
        return;
    }
    let lo = start.next_multiple_of(HUGE);
    let hi = (start + bytes) / HUGE * HUGE;
    if hi > lo {
        // SAFETY: [lo, hi) lies inside the caller's allocation [start, start + bytes);
        // MADV_HUGEPAGE only changes how the kernel backs those pages, never their contents
        // (zeroes stay zeroes), and failure is harmless (the return value is ignored).
        unsafe {
            madvise(lo as *mut std::ffi::c_void, hi - lo, MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeroed_buffers_are_zero_and_sized() {
        for n in [0, 1, 1000, 3 << 20, (5 << 20) + 3] {
            let v = super::zeroed(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0));
            assert_eq!(super::for_overwrite(n).len(), n);
        }
    }
}
