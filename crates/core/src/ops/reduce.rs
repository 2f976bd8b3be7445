//! ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2 over sorted axes (see
//! CONTRACT.md). The input is collapsed into runs of kept and reduced axes; it is then read
//! once in order, each row either folded into one output value (last run reduced) or
//! combined elementwise into an output row (last run kept).
use super::elementwise::checked;
use super::{reg, BuildCtx, Op, Registry};
use crate::error::Result;
use crate::kernels::bcast::PAR_MIN;
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    for op in ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"] {
        reg(r, op, build);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L2,
}

struct Reduce {
    op: String,
    name: String,
    kind: Kind,
    /// Collapsed input dims with whether each is reduced; never empty.
    dims: Vec<(usize, bool)>,
    in_numel: usize,
    /// Number of input values folded into each output value.
    count: usize,
    out_shape: Vec<usize>,
}

/// Folds a row into one value with 8 independent accumulators (so the loop vectorises).
#[inline(always)]
fn fold_row(row: &[f32], init: f32, map: impl Fn(f32) -> f32, comb: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let ch = row.chunks_exact(8);
    let rem = ch.remainder();
    for c in ch {
        for k in 0..8 {
            acc[k] = comb(acc[k], map(c[k]));
        }
    }
    let mut r = init;
    for a in acc {
        r = comb(r, a);
    }
    for &v in rem {
        r = comb(r, map(v));
    }
    r
}

/// Reduces `x` (collapsed dims `dims`) into `out` (already filled with the identity).
fn reduce_into(dims: &[(usize, bool)], x: &[f32], out: &mut [f32], map: impl Fn(f32) -> f32 + Copy, comb: impl Fn(f32, f32) -> f32 + Copy, init: f32) {
    let (inner, last_reduced) = dims[dims.len() - 1];
    if inner == 0 || x.is_empty() {
        return;
    }
    let outer = &dims[..dims.len() - 1];
    // output stride of each outer dim (0 when reduced)
    let mut ostr = vec![0usize; outer.len()];
    let mut s = if last_reduced { 1 } else { inner };
    for (d, &(n, red)) in outer.iter().enumerate().rev() {
        if !red {
            ostr[d] = s;
            s *= n;
        }
    }
    let mut idx = vec![0usize; outer.len()];
    let mut o = 0usize;
    for row in x.chunks_exact(inner) {
        if last_reduced {
            out[o] = comb(out[o], fold_row(row, init, map, comb));
        } else {
            for (v, &r) in out[o..o + inner].iter_mut().zip(row) {
                *v = comb(*v, map(r));
            }
        }
        let mut d = outer.len();
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            o += ostr[d];
            if idx[d] < outer[d].0 {
                break;
            }
            o -= ostr[d] * outer[d].0;
            idx[d] = 0;
        }
    }
}

impl Reduce {
    fn run_kind(&self, x: &[f32], out: &mut [f32], map: impl Fn(f32) -> f32 + Copy + Sync, comb: impl Fn(f32, f32) -> f32 + Copy + Sync, init: f32) {
        out.fill(init);
        // split over the first collapsed dim when it is kept: independent sub-problems
        let (n0, red0) = self.dims[0];
        if !red0 && self.dims.len() > 1 && n0 > 1 && x.len() >= PAR_MIN {
            let (ic, oc) = (x.len() / n0, out.len() / n0);
            if ic > 0 && oc > 0 {
                out.par_chunks_mut(oc).zip(x.par_chunks(ic)).for_each(|(o, x)| reduce_into(&self.dims[1..], x, o, map, comb, init));
                return;
            }
        }
        reduce_into(&self.dims, x, out, map, comb, init);
    }
}

impl Op for Reduce {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked(&self.op, &self.name, inputs, 0, self.in_numel)?;
        let mut out = vec![0.0; numel(&self.out_shape)];
        let x = &x.data;
        match self.kind {
            Kind::Sum | Kind::Mean => self.run_kind(x, &mut out, |v| v, |a, b| a + b, 0.0),
            Kind::L2 => self.run_kind(x, &mut out, |v| v * v, |a, b| a + b, 0.0),
            Kind::Max => self.run_kind(x, &mut out, |v| v, f32::max, f32::NEG_INFINITY),
            Kind::Min => self.run_kind(x, &mut out, |v| v, f32::min, f32::INFINITY),
            Kind::Prod => self.run_kind(x, &mut out, |v| v, |a, b| a * b, 1.0),
        }
        match self.kind {
            Kind::Mean => {
                let c = self.count as f32;
                out.iter_mut().for_each(|v| *v /= c);
            }
            Kind::L2 => out.iter_mut().for_each(|v| *v = v.sqrt()),
            _ => {}
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let kind = match ctx.node.op.as_str() {
        "ReduceSum" => Kind::Sum,
        "ReduceMean" => Kind::Mean,
        "ReduceMax" => Kind::Max,
        "ReduceMin" => Kind::Min,
        "ReduceProd" => Kind::Prod,
        "ReduceL2" => Kind::L2,
        other => return Err(ctx.err(format!("not a reduction: {other}"))),
    };
    let x = ctx.in_shape(0)?;
    let out = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("expects 1 output"))?;
    let r = x.len();
    let keepdims = ctx.attrs.int("keepdims", 1)? != 0;
    let mut axes = ctx.attrs.ints("axes", &[])?;
    if axes.is_empty() && ctx.attrs.int("noop_with_empty_axes", 0)? == 0 {
        axes = (0..r as i64).collect();
    }
    let mut reduced = vec![false; r];
    for &a in &axes {
        if a < 0 || a as usize >= r || reduced[a as usize] {
            return Err(ctx.err(format!("axes {axes:?} must be distinct and within 0..{r}")));
        }
        reduced[a as usize] = true;
    }
    let want: Vec<usize> = if keepdims {
        x.iter().zip(&reduced).map(|(&n, &red)| if red { 1 } else { n }).collect()
    } else {
        x.iter().zip(&reduced).filter(|(_, &red)| !red).map(|(&n, _)| n).collect()
    };
    if want != out {
        return Err(ctx.err(format!("output shape {out:?} should be {want:?} (axes {axes:?}, keepdims {keepdims})")));
    }
    let count = x.iter().zip(&reduced).filter(|(_, &red)| red).map(|(&n, _)| n).product();
    let mut dims: Vec<(usize, bool)> = Vec::new();
    for (&n, &red) in x.iter().zip(&reduced) {
        if n == 1 {
            continue;
        }
        match dims.last_mut() {
            Some((m, r)) if *r == red => *m *= n,
            _ => dims.push((n, red)),
        }
    }
    if dims.is_empty() {
        dims.push((1, false));
    }
    Ok(Box::new(Reduce { op: ctx.node.op.clone(), name: ctx.node.name.clone(), kind, dims, in_numel: numel(x), count, out_shape: out.to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::testutil::*;
    use crate::tensor::{numel, strides};

    /// Naive f64 reduction with keepdims output layout.
    fn naive(x: &[f32], s: &[usize], axes: &[usize], op: &str) -> Vec<f32> {
        let out: Vec<usize> = s.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
        let (os, is) = (strides(&out), strides(s));
        let mut groups: Vec<Vec<f64>> = vec![Vec::new(); numel(&out)];
        for (i, &v) in x.iter().enumerate() {
            let o: usize = (0..s.len()).map(|d| if axes.contains(&d) { 0 } else { (i / is[d]) % s[d] * os[d] }).sum();
            groups[o].push(v as f64);
        }
        groups
            .iter()
            .map(|g| {
                (match op {
                    "ReduceSum" => g.iter().sum(),
                    "ReduceMean" => g.iter().sum::<f64>() / g.len() as f64,
                    "ReduceMax" => g.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                    "ReduceMin" => g.iter().cloned().fold(f64::INFINITY, f64::min),
                    "ReduceProd" => g.iter().product(),
                    "ReduceL2" => g.iter().map(|v| v * v).sum::<f64>().sqrt(),
                    _ => unreachable!(),
                }) as f32
            })
            .collect()
    }

    #[test]
    fn matches_naive_for_axis_sets() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3, 4, 5], &[1]),
            (&[2, 3, 4, 5], &[3]),
            (&[2, 3, 4, 5], &[0, 2]),
            (&[2, 3, 4, 5], &[2, 3]),
            (&[2, 3, 4, 5], &[0, 1, 2, 3]),
            (&[2, 1, 4, 5], &[1, 3]),
            (&[64, 32, 33], &[2]),
            (&[64, 32, 33], &[1]),
            (&[8, 300, 50], &[0]),
            (&[7], &[0]),
        ];
        for (ci, (s, axes)) in cases.iter().enumerate() {
            let x: Vec<f32> = rand(numel(s), ci as u64, 2.0).iter().map(|v| v + 0.5).collect();
            for op in ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"] {
                if op == "ReduceProd" && numel(s) > 200 {
                    continue;
                }
                let want = naive(&x, s, axes, op);
                let keep: Vec<usize> = s.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
                let r = run(op, &format!(r#"{{"axes": {axes:?}, "keepdims": 1}}"#), vec![inp(s, x.clone())], &[&keep]).unwrap();
                assert_close(&r[0].data, &want, 1e-5, &format!("{op} {s:?} {axes:?}"));
                let drop: Vec<usize> = s.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect();
                let r = run(op, &format!(r#"{{"axes": {axes:?}, "keepdims": 0}}"#), vec![inp(s, x.clone())], &[&drop]).unwrap();
                assert_close(&r[0].data, &want, 1e-5, &format!("{op} {s:?} {axes:?} keepdims 0"));
            }
        }
    }

    #[test]
    fn hand_checked_and_errors() {
        let x = inp(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let r = run("ReduceSum", r#"{"axes": [1], "keepdims": 0}"#, vec![x], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![6., 15.]);
        let r = run("ReduceMean", r#"{"axes": [0]}"#, vec![inp(&[2, 3], vec![1., 2., 3., 4., 5., 6.])], &[&[1, 3]]).unwrap();
        assert_eq!(r[0].data, vec![2.5, 3.5, 4.5]);
        let r = run("ReduceL2", r#"{"keepdims": 0}"#, vec![inp(&[2], vec![3., 4.])], &[&[]]).unwrap();
        assert_eq!(r[0].data, vec![5.]);
        let r = run("ReduceMax", r#"{"axes": [], "noop_with_empty_axes": 1}"#, vec![inp(&[2], vec![3., 4.])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![3., 4.]);
        assert!(run("ReduceSum", r#"{"axes": [2]}"#, vec![inp(&[2, 3], vec![0.; 6])], &[&[2, 3]]).is_err());
        assert!(run("ReduceSum", r#"{"axes": [1], "keepdims": 1}"#, vec![inp(&[2, 3], vec![0.; 6])], &[&[2]]).is_err());
    }
}
