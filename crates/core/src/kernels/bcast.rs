//! Numpy broadcasting, planned once per node (shapes are static) and run many times.
//!
//! A plan collapses the output shape: dims of size 1 are dropped and neighbouring dims where
//! every input is either broadcast in both or contiguous in both are merged, so that
//! `[N,C,H,W] + [C,1,1]` becomes `[N, C, H*W]` with the bias constant along its last dim and
//! same-shape operands become a single run. Work is then done row by row (the last collapsed
//! dim), where each input is either contiguous (stride 1) or a constant (stride 0).

use rayon::prelude::*;

/// Outputs smaller than this run on the calling thread.
pub const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task (rounded to whole rows).
pub const PAR_CHUNK: usize = 1 << 14;

#[derive(Clone, Debug, PartialEq)]
pub struct Bcast {
    pub out_numel: usize,
    /// Collapsed output dims, never empty.
    pub dims: Vec<usize>,
    /// Per input, its element stride along each collapsed dim (0: broadcast).
    pub strides: Vec<Vec<usize>>,
    /// Element count each input must have.
    pub in_numel: Vec<usize>,
}

impl Bcast {
    /// Plans broadcasting `ins` to `out`. Each input must be broadcastable to `out`
    /// (right-aligned, every dim equal to the output's or 1).
    pub fn new(ins: &[&[usize]], out: &[usize]) -> Result<Self, String> {
        let r = out.len();
        let mut full: Vec<Vec<usize>> = Vec::with_capacity(ins.len());
        for (k, s) in ins.iter().enumerate() {
            if s.len() > r {
                return Err(format!("input {k} of shape {s:?} has more dims than the output {out:?}"));
            }
            let pad = r - s.len();
            let st = crate::tensor::strides(s);
            let mut v = vec![0usize; r];
            for (j, (&d, &stj)) in s.iter().zip(&st).enumerate() {
                let o = out[pad + j];
                if d != o && d != 1 {
                    return Err(format!("input {k} of shape {s:?} does not broadcast to {out:?}"));
                }
                v[pad + j] = if d == 1 { 0 } else { stj };
            }
            full.push(v);
        }
        let out_numel: usize = out.iter().product();
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: Vec<Vec<usize>> = vec![Vec::new(); ins.len()];
        for d in 0..r {
            let n = out[d];
            if n == 1 {
                continue;
            }
            let mergeable = !dims.is_empty()
                && full.iter().zip(&strides).all(|(f, s)| {
                    let prev = *s.last().unwrap_or(&0);
                    (prev == 0 && f[d] == 0) || (prev != 0 && f[d] != 0 && prev == f[d] * n)
                });
            if mergeable {
                *dims.last_mut().unwrap_or(&mut 0) *= n;
                for (f, s) in full.iter().zip(strides.iter_mut()) {
                    if let Some(l) = s.last_mut() {
                        *l = f[d];
                    }
                }
            } else {
                dims.push(n);
                for (f, s) in full.iter().zip(strides.iter_mut()) {
                    s.push(f[d]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for s in strides.iter_mut() {
                s.push(0);
            }
        }
        let in_numel = ins.iter().map(|s| s.iter().product()).collect();
        Ok(Bcast { out_numel, dims, strides, in_numel })
    }

    pub fn inner(&self) -> usize {
        *self.dims.last().unwrap_or(&1)
    }

    pub fn rows(&self) -> usize {
        self.out_numel.checked_div(self.inner()).unwrap_or(0)
    }

    /// Calls `f(row, offsets)` for rows `r0..r1`, where `offsets[k]` is input `k`'s element
    /// offset at the start of the row.
    pub fn for_rows(&self, r0: usize, r1: usize, mut f: impl FnMut(usize, &[usize])) {
        let nd = self.dims.len() - 1;
        let ni = self.strides.len();
        let mut idx = vec![0usize; nd];
        let mut rem = r0;
        for d in (0..nd).rev() {
            idx[d] = rem % self.dims[d];
            rem /= self.dims[d];
        }
        let mut offs: Vec<usize> = (0..ni).map(|k| (0..nd).map(|d| idx[d] * self.strides[k][d]).sum()).collect();
        for row in r0..r1 {
            f(row, &offs);
            // odometer step
            let mut d = nd;
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                for (o, s) in offs.iter_mut().zip(&self.strides) {
                    *o += s[d];
                }
                if idx[d] < self.dims[d] {
                    break;
                }
                for (o, s) in offs.iter_mut().zip(&self.strides) {
                    *o -= s[d] * self.dims[d];
                }
                idx[d] = 0;
            }
        }
    }

    /// Runs `f(first_row, out_rows)` over the output, split in whole rows, in parallel when
    /// the output is large.
    fn par_rows(&self, out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
        let inner = self.inner();
        if inner == 0 || out.is_empty() {
            return;
        }
        if out.len() < PAR_MIN {
            f(0, out);
            return;
        }
        let rows_per = PAR_CHUNK.div_ceil(inner).max(1);
        out.par_chunks_mut(rows_per * inner).enumerate().for_each(|(i, ch)| f(i * rows_per, ch));
    }
}

#[inline(always)]
fn row2<F: Fn(f32, f32) -> f32>(o: &mut [f32], a: &[f32], sa: usize, b: &[f32], sb: usize, f: &F) {
    let n = o.len();
    match (sa, sb) {
        (0, 0) => {
            let v = f(a[0], b[0]);
            o.fill(v);
        }
        (0, _) => {
            let x = a[0];
            for (o, &y) in o.iter_mut().zip(&b[..n]) {
                *o = f(x, y);
            }
        }
        (_, 0) => {
            let y = b[0];
            for (o, &x) in o.iter_mut().zip(&a[..n]) {
                *o = f(x, y);
            }
        }
        _ => {
            for ((o, &x), &y) in o.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                *o = f(x, y);
            }
        }
    }
}

/// `out = f(a, b)` elementwise under the plan (2 inputs). Lengths must match the plan
/// (checked by the caller; a mismatch panics on slice bounds).
pub fn binary<F: Fn(f32, f32) -> f32 + Sync>(bc: &Bcast, a: &[f32], b: &[f32], out: &mut [f32], f: F) {
    let inner = bc.inner();
    let (sa, sb) = (bc.strides[0][bc.dims.len() - 1], bc.strides[1][bc.dims.len() - 1]);
    if bc.dims.len() == 1 {
        // one run: same shape or scalar operands; split it freely
        if out.len() < PAR_MIN {
            row2(out, a, sa, b, sb, &f);
        } else {
            out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, ch)| {
                let s = i * PAR_CHUNK;
                let a = if sa == 0 { a } else { &a[s..] };
                let b = if sb == 0 { b } else { &b[s..] };
                row2(ch, a, sa, b, sb, &f);
            });
        }
        return;
    }
    bc.par_rows(out, |r0, ch| {
        let r1 = r0 + ch.len() / inner;
        bc.for_rows(r0, r1, |row, offs| {
            let o = &mut ch[(row - r0) * inner..(row - r0 + 1) * inner];
            row2(o, &a[offs[0]..], sa, &b[offs[1]..], sb, &f);
        });
    });
}

/// `out = f(a, b, c)` elementwise under a 3-input plan.
pub fn ternary<F: Fn(f32, f32, f32) -> f32 + Sync>(bc: &Bcast, a: &[f32], b: &[f32], c: &[f32], out: &mut [f32], f: F) {
    let inner = bc.inner();
    let last = bc.dims.len() - 1;
    let (sa, sb, sc) = (bc.strides[0][last], bc.strides[1][last], bc.strides[2][last]);
    bc.par_rows(out, |r0, ch| {
        let r1 = r0 + ch.len() / inner;
        bc.for_rows(r0, r1, |row, offs| {
            let o = &mut ch[(row - r0) * inner..(row - r0 + 1) * inner];
            for (i, o) in o.iter_mut().enumerate() {
                *o = f(a[offs[0] + i * sa], b[offs[1] + i * sb], c[offs[2] + i * sc]);
            }
        });
    });
}

/// Broadcasts `x` (1-input plan) into `out`.
pub fn expand(bc: &Bcast, x: &[f32], out: &mut [f32]) {
    let inner = bc.inner();
    let s = bc.strides[0][bc.dims.len() - 1];
    bc.par_rows(out, |r0, ch| {
        let r1 = r0 + ch.len() / inner;
        bc.for_rows(r0, r1, |row, offs| {
            let o = &mut ch[(row - r0) * inner..(row - r0 + 1) * inner];
            if s == 0 {
                o.fill(x[offs[0]]);
            } else {
                o.copy_from_slice(&x[offs[0]..offs[0] + inner]);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_per_channel_bias() {
        let b = Bcast::new(&[&[2, 3, 4, 5], &[3, 1, 1]], &[2, 3, 4, 5]).unwrap();
        assert_eq!(b.dims, vec![2, 3, 20]);
        assert_eq!(b.strides, vec![vec![60, 20, 1], vec![0, 1, 0]]);
        let s = Bcast::new(&[&[2, 3, 4], &[2, 3, 4]], &[2, 3, 4]).unwrap();
        assert_eq!(s.dims, vec![24]);
        let sc = Bcast::new(&[&[2, 3, 4], &[]], &[2, 3, 4]).unwrap();
        assert_eq!((sc.dims.clone(), sc.strides[1].clone()), (vec![24], vec![0]));
    }

    #[test]
    fn rejects_non_broadcastable() {
        assert!(Bcast::new(&[&[2, 3], &[4]], &[2, 3]).is_err());
        assert!(Bcast::new(&[&[1, 2, 3]], &[2, 3]).is_err());
    }
}
