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
    advise_huge(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(v: &[f32]) {
    const MADV_HUGEPAGE: i32 = 14;
    const HUGE: usize = 2 << 20;
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE_FROM {
        return;
    }
    let start = v.as_ptr() as usize;
    let lo = start.next_multiple_of(HUGE);
    let hi = (start + bytes) / HUGE * HUGE;
    if hi > lo {
        // SAFETY: [lo, hi) lies inside the allocation of `v`, which this function borrows;
        // MADV_HUGEPAGE only changes how the kernel backs those pages, never their contents
        // (the zeroes stay zeroes), and failure is harmless (the return value is ignored).
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
        }
    }
}
