//! Softmax and LogSoftmax over one axis (see CONTRACT.md), numerically stable (the row
//! maximum is subtracted before `exp`), parallel over independent rows.
//!
//! The input is viewed as `[outer, n, inner]` with `n` the reduced axis; with `legacy = 1`
//! (opset < 13) the input is coerced to 2-D at `axis`: `n = prod(dims >= axis)`, `inner = 1`.
use super::elementwise::checked;
use super::{reg, BuildCtx, Op, Registry};
use crate::error::Result;
use crate::kernels::bcast::{PAR_CHUNK, PAR_MIN};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    reg(r, "Softmax", build);
    reg(r, "LogSoftmax", build);
}

struct Softmax {
    op: String,
    name: String,
    log: bool,
    n: usize,
    inner: usize,
    shape: Vec<usize>,
}

/// One contiguous row (`inner == 1`).
fn row(x: &mut [f32], log: bool) {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if log {
        let s: f64 = x.iter().map(|&v| (v - m).exp() as f64).sum();
        let l = s.ln() as f32;
        for v in x.iter_mut() {
            *v = *v - m - l;
        }
    } else {
        // f64 sum: long rows (legacy 2-D coercion) would otherwise lose precision
        let mut s = 0.0f64;
        for v in x.iter_mut() {
            *v = (*v - m).exp();
            s += *v as f64;
        }
        let s = s as f32;
        for v in x.iter_mut() {
            *v /= s;
        }
    }
}

/// One `[n, inner]` block reduced over `n`, vectorised along `inner`.
fn block(x: &mut [f32], n: usize, inner: usize, log: bool) {
    let mut m = vec![f32::NEG_INFINITY; inner];
    for r in x.chunks(inner) {
        for (m, &v) in m.iter_mut().zip(r) {
            *m = m.max(v);
        }
    }
    let mut s = vec![0.0f64; inner];
    for r in x.chunks_mut(inner).take(n) {
        for ((v, &m), s) in r.iter_mut().zip(&m).zip(s.iter_mut()) {
            let e = (*v - m).exp();
            *s += e as f64;
            if !log {
                *v = e;
            }
        }
    }
    let mut s: Vec<f32> = s.iter().map(|&v| v as f32).collect();
    if log {
        for (s, m) in s.iter_mut().zip(&m) {
            *s = m + (*s as f64).ln() as f32;
        }
        for r in x.chunks_mut(inner) {
            for (v, &s) in r.iter_mut().zip(&s) {
                *v -= s;
            }
        }
    } else {
        for r in x.chunks_mut(inner) {
            for (v, &s) in r.iter_mut().zip(&s) {
                *v /= s;
            }
        }
    }
}

impl Op for Softmax {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked(&self.op, &self.name, inputs, 0, numel(&self.shape))?;
        let mut y = x.data.clone();
        let blk = self.n * self.inner;
        if blk > 0 {
            let (log, n, inner) = (self.log, self.n, self.inner);
            let f = |c: &mut [f32]| {
                for b in c.chunks_mut(blk) {
                    if inner == 1 {
                        row(b, log)
                    } else {
                        block(b, n, inner, log)
                    }
                }
            };
            if y.len() < PAR_MIN {
                f(&mut y);
            } else {
                let per = PAR_CHUNK.div_ceil(blk).max(1) * blk;
                y.par_chunks_mut(per).for_each(f);
            }
        }
        Ok(vec![Tensor::new(self.shape.clone(), y)])
    }
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("expects 1 output"))?;
    if out != x {
        return Err(ctx.err(format!("output shape {out:?} differs from input {x:?}")));
    }
    let legacy = ctx.attrs.int("legacy", 0)? == 1;
    let axis = ctx.attrs.int("axis", if legacy { 1 } else { x.len() as i64 - 1 })?;
    let r = x.len().max(1) as i64;
    if axis < 0 || axis >= r {
        return Err(ctx.err(format!("axis {axis} out of range for input {x:?}")));
    }
    let a = axis as usize;
    let (n, inner) = if x.is_empty() {
        (1, 1)
    } else if legacy {
        (x[a..].iter().product(), 1)
    } else {
        (x[a], x[a + 1..].iter().product())
    };
    Ok(Box::new(Softmax { op: ctx.node.op.clone(), name: ctx.node.name.clone(), log: ctx.node.op == "LogSoftmax", n, inner, shape: x.to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::testutil::*;
    use crate::tensor::numel;

    /// Naive f64 softmax over `[outer, n, inner]`.
    fn naive(x: &[f32], n: usize, inner: usize, log: bool) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        let outer = x.len() / (n * inner);
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| o * n * inner + k * inner + i;
                let m = (0..n).map(|k| x[at(k)] as f64).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..n).map(|k| (x[at(k)] as f64 - m).exp()).sum();
                for k in 0..n {
                    let e = x[at(k)] as f64 - m;
                    y[at(k)] = if log { (e - s.ln()) as f32 } else { (e.exp() / s) as f32 };
                }
            }
        }
        y
    }

    #[test]
    fn matches_naive_on_every_axis_and_legacy() {
        let shapes: &[&[usize]] = &[&[2, 3, 4, 5], &[4, 1000], &[64, 3, 257], &[7]];
        for (si, s) in shapes.iter().enumerate() {
            let x = rand(numel(s), si as u64, 20.0);
            for op in ["Softmax", "LogSoftmax"] {
                let log = op == "LogSoftmax";
                for a in 0..s.len() {
                    let n = s[a];
                    let inner: usize = s[a + 1..].iter().product();
                    let r = run(op, &format!(r#"{{"axis": {a}}}"#), vec![inp(s, x.clone())], &[s]).unwrap();
                    assert_close(&r[0].data, &naive(&x, n, inner, log), 2e-6, &format!("{op} {s:?} axis {a}"));
                    let r = run(op, &format!(r#"{{"axis": {a}, "legacy": 1}}"#), vec![inp(s, x.clone())], &[s]).unwrap();
                    let n2: usize = s[a..].iter().product();
                    assert_close(&r[0].data, &naive(&x, n2, 1, log), 2e-6, &format!("{op} {s:?} legacy axis {a}"));
                }
            }
        }
    }

    #[test]
    fn stable_for_large_inputs_and_hand_checked() {
        let r = run("Softmax", r#"{"axis": 0}"#, vec![inp(&[3], vec![-3., -3., -3. + 2f32.ln()])], &[&[3]]).unwrap();
        assert_close(&r[0].data, &[0.25, 0.25, 0.5], 1e-6, "softmax");
        let r = run("LogSoftmax", r#"{"axis": 0}"#, vec![inp(&[2], vec![-1000., -1000.])], &[&[2]]).unwrap();
        assert_close(&r[0].data, &[-std::f32::consts::LN_2; 2], 1e-6, "logsoftmax");
        assert!(run("Softmax", r#"{"axis": 2}"#, vec![inp(&[2, 2], vec![0.; 4])], &[&[2, 2]]).is_err());
    }
}
