//! BatchNormalization (inference) and LayerNormalization (see CONTRACT.md).

use super::{input, reg, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    reg(r, "BatchNormalization", build_bn);
    reg(r, "LayerNormalization", build_ln);
}

/// `y = x * a[c] + b[c]` with `a = (1 / sqrt(var + eps)) * scale`, `b = B - mean * a`, each
/// step rounded to f32 and no fused multiply-add: onnxruntime's BatchNormalization kernel
/// (graph optimizations off), bit for bit. Folded at build time when all four parameters are
/// constants.
struct BatchNorm {
    n: usize,
    c: usize,
    inner: usize,
    eps: f32,
    folded: Option<(Vec<f32>, Vec<f32>)>,
    out_shape: Vec<usize>,
}

/// The per-channel affine `(a, b)` of a BatchNormalization (see [`BatchNorm`]).
pub fn fold_bn(s: &[f32], b: &[f32], m: &[f32], v: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = s.iter().zip(v).map(|(s, v)| (1.0 / (v + eps).sqrt()) * s).collect();
    let bb = b.iter().zip(m).zip(&a).map(|((b, m), a)| b - m * a).collect();
    (a, bb)
}

fn build_bn(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let xs = ctx.in_shape(0)?;
    if xs.len() < 2 {
        return Err(ctx.err(format!("input {xs:?} must have rank >= 2 ([N, C, ...])")));
    }
    if ctx.attrs.int("training_mode", 0)? != 0 {
        return Err(ctx.err("training_mode=1 is not supported (inference only)"));
    }
    let c = xs[1];
    for i in 1..5 {
        let s = ctx.in_shape(i)?;
        if s.iter().product::<usize>() != c || s.len() != 1 {
            return Err(ctx.err(format!("input {i} has shape {s:?}, expected [{c}]")));
        }
    }
    let os = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("no output"))?;
    if os != xs {
        return Err(ctx.err(format!("output shape {os:?} differs from input {xs:?}")));
    }
    if ctx.out_shapes.len() > 1 {
        return Err(ctx.err("running mean/var outputs (training mode) are not supported"));
    }
    let eps = ctx.attrs.float("epsilon", 1e-5)?;
    let folded = match (ctx.const_opt(1), ctx.const_opt(2), ctx.const_opt(3), ctx.const_opt(4)) {
        (Some(s), Some(b), Some(m), Some(v)) => Some(fold_bn(&s.data, &b.data, &m.data, &v.data, eps)),
        _ => None,
    };
    Ok(Box::new(BatchNorm { n: xs[0], c, inner: xs[2..].iter().product(), eps, folded, out_shape: os.to_vec() }))
}

impl Op for BatchNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        if x.data.len() != self.n * self.c * self.inner {
            return Err(Error::Plan(format!("BatchNormalization input has {} elements", x.data.len())));
        }
        let computed;
        let (a, b) = match &self.folded {
            Some((a, b)) => (a, b),
            None => {
                let p: Vec<&[f32]> = (1..5)
                    .map(|i| {
                        let t = input(inputs, i)?;
                        if t.data.len() != self.c {
                            return Err(Error::Plan(format!("BatchNormalization input {i} has {} elements", t.data.len())));
                        }
                        Ok(t.data.as_slice())
                    })
                    .collect::<Result<_>>()?;
                computed = fold_bn(p[0], p[1], p[2], p[3], self.eps);
                (&computed.0, &computed.1)
            }
        };
        let mut out = crate::kernels::alloc::zeroed(x.data.len());
        if self.inner > 0 {
            out.par_chunks_mut(self.inner).zip(x.data.par_chunks(self.inner)).enumerate().for_each(|(p, (o, xi))| {
                let ch = p % self.c;
                let (a, b) = (a[ch], b[ch]);
                o.iter_mut().zip(xi).for_each(|(o, x)| *o = x * a + b);
            });
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

struct LayerNorm {
    outer: usize,
    inner: usize,
    eps: f32,
    /// Scale and bias broadcast to the normalised shape (`inner` floats) at build time when
    /// constant; otherwise expanded at run time from `scale_shape`/`bias_shape`.
    scale: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    norm_shape: Vec<usize>,
    scale_shape: Vec<usize>,
    bias_shape: Option<Vec<usize>>,
    out_shapes: Vec<Vec<usize>>,
}

/// Unidirectional broadcast of `t` (shape `s`) to `to`, flattened.
fn expand(t: &[f32], s: &[usize], to: &[usize]) -> Vec<f32> {
    let n: usize = to.iter().product();
    let r = to.len();
    let ps: Vec<usize> = std::iter::repeat_n(1, r - s.len()).chain(s.iter().copied()).collect();
    let mut strides = vec![0; r];
    let mut acc = 1;
    for i in (0..r).rev() {
        strides[i] = if ps[i] == 1 { 0 } else { acc };
        acc *= ps[i];
    }
    (0..n)
        .map(|mut f| {
            let mut off = 0;
            for d in (0..r).rev() {
                off += (f % to[d]) * strides[d];
                f /= to[d];
            }
            t[off]
        })
        .collect()
}

fn broadcasts_to(s: &[usize], to: &[usize]) -> bool {
    s.len() <= to.len() && s.iter().rev().zip(to.iter().rev()).all(|(&a, &b)| a == b || a == 1)
}

/// Mean and 1/sqrt(var + eps) of one row in onnxruntime 1.30's order (CPU LayerNormalization,
/// measured bit for bit against it on rows of 8 or more values, any length, every tail; see
/// `__test__/ort-exact.test.ts`): the mean is the correctly rounded mean (summed in double);
/// the variance sums `d * d` with `d = x - mean` in f32 over eight lanes with fused
/// multiply-adds, lane `i % 8` taking element `i` of the whole blocks of eight, the lanes then
/// added pairwise (halves: 0-3 + 4-7, then 0-1 + 2-3, then 0 + 1); of the remaining (< 8)
/// elements, when there are four or more, the first four are added as rounded squares, and
/// the others with fused multiply-adds;
/// then `var = sum / n`, `inv = 1 / sqrt(var + eps)`, each in f32. Rows shorter than eight
/// take another path in onnxruntime that is not reproduced (within an ulp or two).
pub(crate) fn ln_row_stats(xr: &[f32], eps: f32) -> (f32, f32) {
    let n = xr.len();
    let sum: f64 = xr.iter().map(|&v| v as f64).sum();
    let mean = (sum / n as f64) as f32;
    let whole = n - n % 8;
    let mut lanes = [0f32; 8];
    for blk in xr[..whole].chunks_exact(8) {
        for (a, &v) in lanes.iter_mut().zip(blk) {
            let d = v - mean;
            *a = d.mul_add(d, *a);
        }
    }
    let l4 = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    let l2 = [l4[0] + l4[2], l4[1] + l4[3]];
    let mut s = l2[0] + l2[1];
    let tail = &xr[whole..];
    let four = if tail.len() >= 4 { 4 } else { 0 };
    for (k, &v) in tail.iter().enumerate() {
        let d = v - mean;
        s = if k < four { s + d * d } else { d.mul_add(d, s) };
    }
    let var = s / n as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

fn build_ln(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let xs = ctx.in_shape(0)?;
    let axis = ctx.attrs.int("axis", -1)?;
    let axis = if axis < 0 { axis + xs.len() as i64 } else { axis };
    if axis < 0 || axis as usize >= xs.len().max(1) {
        return Err(ctx.err(format!("axis {axis} out of range for input {xs:?}")));
    }
    let axis = axis as usize;
    let norm_shape = xs[axis..].to_vec();
    let ss = ctx.in_shape(1)?;
    if !broadcasts_to(ss, &norm_shape) {
        return Err(ctx.err(format!("scale {ss:?} does not broadcast to the normalised shape {norm_shape:?}")));
    }
    let bias_shape = if ctx.has_input(2) {
        let bs = ctx.in_shape(2)?;
        if !broadcasts_to(bs, &norm_shape) {
            return Err(ctx.err(format!("bias {bs:?} does not broadcast to the normalised shape {norm_shape:?}")));
        }
        Some(bs.to_vec())
    } else {
        None
    };
    if ctx.out_shapes.is_empty() || ctx.out_shapes.len() > 3 || ctx.out_shapes[0] != xs {
        return Err(ctx.err(format!("outputs {:?}: the first must have the input shape {xs:?}", ctx.out_shapes)));
    }
    let stat_shape: Vec<usize> = xs.iter().enumerate().map(|(i, &d)| if i < axis { d } else { 1 }).collect();
    for s in &ctx.out_shapes[1..] {
        if s.iter().product::<usize>() != xs[..axis].iter().product::<usize>() {
            return Err(ctx.err(format!("Mean/InvStdDev output {s:?}, expected {stat_shape:?}")));
        }
    }
    Ok(Box::new(LayerNorm {
        outer: xs[..axis].iter().product(),
        inner: norm_shape.iter().product(),
        eps: ctx.attrs.float("epsilon", 1e-5)?,
        scale: ctx.const_opt(1).map(|t| expand(&t.data, ss, &norm_shape)),
        bias: if ctx.has_input(2) { ctx.const_opt(2).map(|t| expand(&t.data, bias_shape.as_deref().unwrap_or(&[]), &norm_shape)) } else { None },
        scale_shape: ss.to_vec(),
        bias_shape,
        norm_shape,
        out_shapes: ctx.out_shapes.iter().map(|s| s.to_vec()).collect(),
    }))
}

impl Op for LayerNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        if x.data.len() != self.outer * self.inner {
            return Err(Error::Plan(format!("LayerNormalization input has {} elements", x.data.len())));
        }
        let get = |i: usize, s: &[usize]| -> Result<Vec<f32>> {
            let t = input(inputs, i)?;
            if t.data.len() != s.iter().product::<usize>() {
                return Err(Error::Plan(format!("LayerNormalization input {i} has {} elements", t.data.len())));
            }
            Ok(expand(&t.data, s, &self.norm_shape))
        };
        let scale_rt;
        let scale = match &self.scale {
            Some(s) => s,
            None => {
                scale_rt = get(1, &self.scale_shape)?;
                &scale_rt
            }
        };
        let bias_rt;
        let bias: Option<&Vec<f32>> = match (&self.bias, &self.bias_shape) {
            (Some(b), _) => Some(b),
            (None, Some(bs)) => {
                bias_rt = get(2, bs)?;
                Some(&bias_rt)
            }
            _ => None,
        };
        let mut out = crate::kernels::alloc::zeroed(x.data.len());
        let mut stats = vec![(0f32, 0f32); self.outer];
        if self.inner > 0 {
            out.par_chunks_mut(self.inner).zip(x.data.par_chunks(self.inner)).zip(stats.par_iter_mut()).for_each(|((o, xr), st)| {
                let (mean, inv) = ln_row_stats(xr, self.eps);
                *st = (mean, inv);
                match bias {
                    Some(b) => o.iter_mut().zip(xr).zip(scale).zip(b.iter()).for_each(|(((o, x), s), b)| *o = ((x - mean) * inv).mul_add(*s, *b)),
                    None => o.iter_mut().zip(xr).zip(scale).for_each(|((o, x), s)| *o = (x - mean) * inv * s),
                }
            });
        }
        let mut v = vec![Tensor::new(self.out_shapes[0].clone(), out)];
        if self.out_shapes.len() > 1 {
            v.push(Tensor::new(self.out_shapes[1].clone(), stats.iter().map(|s| s.0).collect()));
        }
        if self.out_shapes.len() > 2 {
            v.push(Tensor::new(self.out_shapes[2].clone(), stats.iter().map(|s| s.1).collect()));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::testutil::*;
    use crate::attrs::AttrValue;
    use crate::tensor::Tensor;

    #[test]
    fn batchnorm_matches_reference_const_and_runtime_params() {
        for (t, shape) in [vec![2, 3], vec![3, 4, 5], vec![2, 5, 3, 7]].into_iter().enumerate() {
            let c = shape[1];
            let inner: usize = shape[2..].iter().product();
            let x = Tensor::new(shape.clone(), rnd(shape.iter().product(), t as u64));
            let p: Vec<Tensor> = (0..4).map(|i| Tensor::new(vec![c], rnd(c, 10 + i))).collect();
            let var = Tensor::new(vec![c], p[3].data.iter().map(|v| v.abs() + 0.1).collect());
            let eps = 1e-3f32;
            let want: Vec<f32> = x
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = (i / inner) % c;
                    ((v - p[2].data[ch]) as f64 / ((var.data[ch] + eps) as f64).sqrt() * p[0].data[ch] as f64 + p[1].data[ch] as f64) as f32
                })
                .collect();
            for konst in [true, false] {
                let ins = [Some(&x), Some(&p[0]), Some(&p[1]), Some(&p[2]), Some(&var)];
                let got = run_op("BatchNormalization", &[("epsilon", AttrValue::Float(eps as f64))], &ins, &[false, konst, konst, konst, konst], &[shape.clone()], None).unwrap();
                assert_close(&got[0], &shape, &want, "bn");
            }
        }
        let x = Tensor::zeros(&[2, 3, 4]);
        let bad = Tensor::zeros(&[4]);
        let ok = Tensor::zeros(&[3]);
        assert!(run_op("BatchNormalization", &[], &[Some(&x), Some(&bad), Some(&ok), Some(&ok), Some(&ok)], &[false, true, true, true, true], &[vec![2, 3, 4]], None).is_err());
        assert!(run_op("BatchNormalization", &[], &[Some(&x), Some(&ok), Some(&ok), Some(&ok)], &[false, true, true, true], &[vec![2, 3, 4]], None).is_err());
    }

    #[test]
    fn layernorm_matches_reference_with_broadcast_scale_and_stat_outputs() {
        let cases: &[(&[usize], usize, &[usize], Option<&[usize]>)] = &[
            (&[2, 3, 8], 2, &[8], Some(&[8])),
            (&[2, 3, 8], 1, &[3, 8], None),
            (&[4, 6], 1, &[1], Some(&[6])),
            (&[3, 2, 5], 1, &[1, 5], Some(&[2, 1])),
            (&[5, 7], 0, &[5, 7], Some(&[7])),
        ];
        for (t, &(shape, axis, ss, bs)) in cases.iter().enumerate() {
            let x = Tensor::new(shape.to_vec(), rnd(shape.iter().product(), t as u64).iter().map(|v| v * 3.0 + 1.0).collect());
            let s = Tensor::new(ss.to_vec(), rnd(ss.iter().product(), 40 + t as u64));
            let b = bs.map(|bs| Tensor::new(bs.to_vec(), rnd(bs.iter().product(), 80 + t as u64)));
            let inner: usize = shape[axis..].iter().product();
            let norm = &shape[axis..];
            let bval = |v: &Tensor, sh: &[usize], j: usize| -> f32 {
                // right-aligned broadcast index of flat position j of the normalised shape
                let mut off = 0;
                let mut stride = 1;
                let mut rem = j;
                let mut dims: Vec<(usize, usize)> = Vec::new();
                for d in (0..norm.len()).rev() {
                    dims.push((rem % norm[d], d));
                    rem /= norm[d];
                }
                for (i, d) in dims {
                    let k = d as isize - (norm.len() - sh.len()) as isize;
                    if k >= 0 {
                        let sd = sh[k as usize];
                        if sd != 1 {
                            off += i * stride;
                        }
                        stride *= sd;
                    }
                }
                v.data[off]
            };
            let eps = 1e-5;
            let mut want = Vec::new();
            let (mut means, mut invs) = (Vec::new(), Vec::new());
            for row in x.data.chunks(inner) {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
                let inv = 1.0 / (var + eps).sqrt();
                means.push(mean as f32);
                invs.push(inv as f32);
                for (j, &v) in row.iter().enumerate() {
                    let y = (v as f64 - mean) * inv * bval(&s, ss, j) as f64 + b.as_ref().map_or(0.0, |b| bval(b, bs.unwrap(), j) as f64);
                    want.push(y as f32);
                }
            }
            let stat: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if i < axis { d } else { 1 }).collect();
            for (konst, nout) in [(true, 1), (false, 3)] {
                let outs: Vec<Vec<usize>> = [shape.to_vec(), stat.clone(), stat.clone()].into_iter().take(nout).collect();
                let attrs = [("axis", AttrValue::Int(axis as i64)), ("epsilon", AttrValue::Float(eps))];
                let got = run_op("LayerNormalization", &attrs, &[Some(&x), Some(&s), b.as_ref()], &[false, konst, konst], &outs, None).unwrap();
                assert_eq!(got.len(), nout);
                assert_close(&got[0], shape, &want, &format!("ln case {t}"));
                if nout == 3 {
                    assert_close(&got[1], &stat, &means, "ln mean");
                    assert_close(&got[2], &stat, &invs, "ln invstd");
                }
            }
        }
        let x = Tensor::zeros(&[2, 3]);
        let s = Tensor::zeros(&[2]);
        assert!(run_op("LayerNormalization", &[("axis", AttrValue::Int(1))], &[Some(&x), Some(&s)], &[false, true], &[vec![2, 3]], None).is_err());
        assert!(run_op("LayerNormalization", &[("axis", AttrValue::Int(5))], &[Some(&x), Some(&s)], &[false, true], &[vec![2, 3]], None).is_err());
    }
}
