//! Matrix multiplication on the `gemm` crate (runtime-dispatched SIMD, rayon threads).

/// Row-major matrix view: element (i, j) at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: isize,
    pub cs: isize,
}

impl<'a> MatRef<'a> {
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, rs: cols as isize, cs: 1 }
    }
    /// The transpose of a row-major `[rows, cols]` matrix stored in `data`.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, rs: 1, cs: cols as isize }
    }
}

fn span(rows: usize, cols: usize, rs: isize, cs: isize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    ((rows - 1) as isize * rs + (cols - 1) as isize * cs) as usize + 1
}

/// `c[m, n] (row-major, leading dim ldc) = a[m, k] * b[k, n] (+ c if accumulate)`.
/// `threads`: 1 runs on the calling thread; more uses the rayon pool.
pub fn sgemm(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool, threads: usize) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.rs >= 0 && a.cs >= 0 && b.rs >= 0 && b.cs >= 0, "negative strides");
    assert!(span(m, k, a.rs, a.cs) <= a.data.len(), "lhs out of bounds");
    assert!(span(k, n, b.rs, b.cs) <= b.data.len(), "rhs out of bounds");
    assert!(span(m, n, ldc as isize, 1) <= c.len(), "dst out of bounds");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above check that every element the strides reach lies inside the
    // slices; `c` is borrowed mutably and cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs,
            a.rs,
            b.data.as_ptr(),
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Reference triple loop, for tests.
pub fn sgemm_ref(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += a.data[(i as isize * a.rs + p as isize * a.cs) as usize] as f64
                    * b.data[(p as isize * b.rs + j as isize * b.cs) as usize] as f64;
            }
            let d = &mut c[i * ldc + j];
            *d = if accumulate { *d + s as f32 } else { s as f32 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::rnd;

    #[test]
    fn gemm_matches_reference_with_transposes_and_accumulate() {
        for &(m, n, k) in &[(1, 1, 1), (7, 13, 5), (64, 33, 100), (3, 200, 17)] {
            let a = rnd(m * k, 1);
            let b = rnd(k * n, 2);
            for threads in [1, 2] {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let am = if ta { MatRef::transposed(&a, m) } else { MatRef::row_major(&a, k) };
                    let bm = if tb { MatRef::transposed(&b, k) } else { MatRef::row_major(&b, n) };
                    let mut c1 = rnd(m * n, 3);
                    let mut c2 = c1.clone();
                    sgemm(m, n, k, am, bm, &mut c1, n, true, threads);
                    sgemm_ref(m, n, k, am, bm, &mut c2, n, true);
                    for (x, y) in c1.iter().zip(&c2) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{n}x{k} {x} vs {y}");
                    }
                }
            }
        }
    }
}
