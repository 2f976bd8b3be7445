//! MaxPool, AveragePool (1-D and 2-D), GlobalAveragePool, GlobalMaxPool (see CONTRACT.md).
//!
//! The output size comes from the plan (ceil_mode already applied), so a window may run
//! past the padded input: each axis gets, per output position, the list of in-bounds input
//! positions its window covers and the number of its taps inside the padded region (the
//! AveragePool divisor with count_include_pad=1, as ONNX Runtime computes it).

use super::{input, reg, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    reg(r, "MaxPool", build_max);
    reg(r, "AveragePool", build_avg);
    reg(r, "GlobalAveragePool", build_global_avg);
    reg(r, "GlobalMaxPool", build_global_max);
}

/// Per output position of one axis: in-bounds input indices and taps inside the padding.
struct AxisTaps {
    taps: Vec<Vec<usize>>,
    padded: Vec<usize>,
}

fn axis_taps(n: usize, out: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> AxisTaps {
    let mut taps = Vec::with_capacity(out);
    let mut padded = Vec::with_capacity(out);
    for o in 0..out {
        let mut t = Vec::with_capacity(k);
        let mut cnt = 0;
        for j in 0..k {
            let i = (o * s + j * d) as isize - p0 as isize;
            if i >= -(p0 as isize) && i < (n + p1) as isize {
                cnt += 1;
            }
            if i >= 0 && i < n as isize {
                t.push(i as usize);
            }
        }
        taps.push(t);
        padded.push(cnt);
    }
    AxisTaps { taps, padded }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Max,
    Avg { include_pad: bool },
}

struct Pool {
    kind: Kind,
    planes: usize,
    /// Input plane as `[h, w]` (`h = 1` for 1-D).
    h: usize,
    w: usize,
    ys: AxisTaps,
    xs: AxisTaps,
    out_shape: Vec<usize>,
    with_indices: bool,
}

fn build_pool(ctx: &BuildCtx, kind: Kind) -> Result<Box<dyn Op>> {
    let xs = ctx.in_shape(0)?;
    if xs.len() != 3 && xs.len() != 4 {
        return Err(ctx.err(format!("input {xs:?}: only 1-D and 2-D pooling (rank 3 or 4) is supported")));
    }
    let nsp = xs.len() - 2;
    let a = &ctx.attrs;
    let get = |name: &str, def: Vec<i64>, len: usize, min: i64| -> Result<Vec<usize>> {
        let v = a.ints(name, &def)?;
        if v.len() != len || v.iter().any(|&x| x < min) {
            return Err(ctx.err(format!("'{name}' = {v:?}: expected {len} values >= {min}")));
        }
        Ok(v.into_iter().map(|x| x as usize).collect())
    };
    let ks = get("kernel_shape", vec![], nsp, 1)?;
    let pads = get("pads", vec![0; 2 * nsp], 2 * nsp, 0)?;
    let strides = get("strides", vec![1; nsp], nsp, 1)?;
    let dil = get("dilations", vec![1; nsp], nsp, 1)?;
    let os = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("no output"))?;
    if os.len() != xs.len() || os[..2] != xs[..2] {
        return Err(ctx.err(format!("output shape {os:?} does not match input {xs:?}")));
    }
    let with_indices = ctx.out_shapes.len() > 1;
    if with_indices {
        if kind != Kind::Max || ctx.out_shapes[1] != os {
            return Err(ctx.err(format!("second output {:?} must be MaxPool indices of shape {os:?}", ctx.out_shapes[1])));
        }
        if a.int("storage_order", 0)? != 0 {
            return Err(ctx.err("storage_order=1 (column-major indices) is not supported"));
        }
    }
    let (h, w, ys, xs_taps) = if nsp == 1 {
        (1, xs[2], axis_taps(1, 1, 1, 1, 1, 0, 0), axis_taps(xs[2], os[2], ks[0], strides[0], dil[0], pads[0], pads[1]))
    } else {
        (
            xs[2],
            xs[3],
            axis_taps(xs[2], os[2], ks[0], strides[0], dil[0], pads[0], pads[2]),
            axis_taps(xs[3], os[3], ks[1], strides[1], dil[1], pads[1], pads[3]),
        )
    };
    Ok(Box::new(Pool { kind, planes: xs[0] * xs[1], h, w, ys, xs: xs_taps, out_shape: os.to_vec(), with_indices }))
}

fn build_max(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    build_pool(ctx, Kind::Max)
}

fn build_avg(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let include_pad = ctx.attrs.int("count_include_pad", 0)? != 0;
    build_pool(ctx, Kind::Avg { include_pad })
}

impl Op for Pool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let hw = self.h * self.w;
        if x.data.len() != self.planes * hw {
            return Err(Error::Plan(format!("pool input has {} elements, expected {}", x.data.len(), self.planes * hw)));
        }
        let (oh, ow) = (self.ys.taps.len(), self.xs.taps.len());
        let ohw = oh * ow;
        let mut out = crate::kernels::alloc::zeroed(self.planes * ohw);
        let mut idx = if self.with_indices { vec![0f32; self.planes * ohw] } else { Vec::new() };
        if ohw == 0 {
            let mut v = vec![Tensor::new(self.out_shape.clone(), out)];
            if self.with_indices {
                v.push(Tensor::new(self.out_shape.clone(), idx));
            }
            return Ok(v);
        }
        let plane = |p: usize, o: &mut [f32], ix: Option<&mut [f32]>| {
            let xp = &x.data[p * hw..(p + 1) * hw];
            let mut ix = ix;
            for oy in 0..oh {
                let ty = &self.ys.taps[oy];
                for ox in 0..ow {
                    let tx = &self.xs.taps[ox];
                    let r = match self.kind {
                        Kind::Max => {
                            // ONNX Runtime starts from the lowest float (an all-padding window gives it)
                            let (mut best, mut at) = (f32::MIN, usize::MAX);
                            for &iy in ty {
                                let row = &xp[iy * self.w..(iy + 1) * self.w];
                                for &ixx in tx {
                                    let v = row[ixx];
                                    if v > best || at == usize::MAX || v.is_nan() {
                                        best = v;
                                        at = iy * self.w + ixx;
                                    }
                                }
                            }
                            if let Some(ix) = ix.as_deref_mut() {
                                ix[oy * ow + ox] = if at == usize::MAX { -1.0 } else { (p * hw + at) as f32 };
                            }
                            best
                        }
                        Kind::Avg { include_pad } => {
                            let mut s = 0f32;
                            for &iy in ty {
                                let row = &xp[iy * self.w..(iy + 1) * self.w];
                                for &ixx in tx {
                                    s += row[ixx];
                                }
                            }
                            let cnt = if include_pad { self.ys.padded[oy] * self.xs.padded[ox] } else { ty.len() * tx.len() };
                            if cnt == 0 {
                                0.0
                            } else {
                                s / cnt as f32
                            }
                        }
                    };
                    o[oy * ow + ox] = r;
                }
            }
        };
        if self.with_indices {
            out.par_chunks_mut(ohw).zip(idx.par_chunks_mut(ohw)).enumerate().for_each(|(p, (o, i))| plane(p, o, Some(i)));
        } else {
            out.par_chunks_mut(ohw).enumerate().for_each(|(p, o)| plane(p, o, None));
        }
        let mut v = vec![Tensor::new(self.out_shape.clone(), out)];
        if self.with_indices {
            v.push(Tensor::new(self.out_shape.clone(), idx));
        }
        Ok(v)
    }
}

struct GlobalPool {
    max: bool,
    planes: usize,
    size: usize,
    out_shape: Vec<usize>,
}

fn build_global(ctx: &BuildCtx, max: bool) -> Result<Box<dyn Op>> {
    let xs = ctx.in_shape(0)?;
    if xs.len() < 3 {
        return Err(ctx.err(format!("input {xs:?} must have rank >= 3 ([N, C, spatial...])")));
    }
    let os = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("no output"))?;
    if os.len() != xs.len() || os[..2] != xs[..2] || os[2..].iter().any(|&d| d != 1) {
        return Err(ctx.err(format!("output shape {os:?} must be [N, C, 1, ...] for input {xs:?}")));
    }
    let size: usize = xs[2..].iter().product();
    if size == 0 {
        return Err(ctx.err(format!("input {xs:?} has an empty spatial extent")));
    }
    Ok(Box::new(GlobalPool { max, planes: xs[0] * xs[1], size, out_shape: os.to_vec() }))
}

fn build_global_avg(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    build_global(ctx, false)
}

fn build_global_max(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    build_global(ctx, true)
}

impl Op for GlobalPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        if x.data.len() != self.planes * self.size {
            return Err(Error::Plan(format!("pool input has {} elements, expected {}", x.data.len(), self.planes * self.size)));
        }
        let out: Vec<f32> = x
            .data
            .par_chunks(self.size)
            .map(|p| {
                if self.max {
                    p.iter().copied().fold(f32::NEG_INFINITY, |m, v| if v > m || v.is_nan() { v } else { m })
                } else {
                    global_mean_like_mlas(p)
                }
            })
            .collect();
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

/// The mean of a plane summed as ONNX Runtime's MLAS global pooling kernel sums it, so that the
/// value feeding a quantizer is bit-identical: four lane sums over the 4-aligned part, reduced
/// as (l0 + l2) + (l1 + l3), then the remaining elements one by one, then one division.
fn global_mean_like_mlas(p: &[f32]) -> f32 {
    let mut lanes = [0f32; 4];
    let mut it = p.chunks_exact(4);
    for c in &mut it {
        for (a, v) in lanes.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
    for v in it.remainder() {
        s += v;
    }
    s / p.len() as f32
}

#[cfg(test)]
mod tests {
    use super::super::conv::testutil::*;
    use crate::attrs::AttrValue;
    use crate::tensor::Tensor;

    /// Direct definition over a padded grid, with explicit ceil-mode overrun.
    #[allow(clippy::too_many_arguments)]
    fn pool_ref(x: &[f32], planes: usize, ins: &[usize], outs: &[usize], ks: &[usize], st: &[usize], dl: &[usize], pads: &[usize], max: bool, incl: bool) -> (Vec<f32>, Vec<f32>) {
        let nsp = ins.len();
        let (h, w) = if nsp == 1 { (1, ins[0]) } else { (ins[0], ins[1]) };
        let (oh, ow) = if nsp == 1 { (1, outs[0]) } else { (outs[0], outs[1]) };
        let pick = |v: &[usize], one: usize| if nsp == 1 { (one, v[0]) } else { (v[0], v[1]) };
        let (kh, kw) = pick(ks, 1);
        let (sh, sw) = pick(st, 1);
        let (dh, dw) = pick(dl, 1);
        let (ph, pw, ph1, pw1) = if nsp == 1 { (0, pads[0], 0, pads[1]) } else { (pads[0], pads[1], pads[2], pads[3]) };
        let mut out = vec![0f32; planes * oh * ow];
        let mut idx = vec![0f32; planes * oh * ow];
        for p in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut best, mut at, mut s, mut n_in, mut n_pad) = (f32::NEG_INFINITY, -1i64, 0f64, 0usize, 0usize);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * sh + ky * dh) as i64 - ph as i64;
                            let ix = (ox * sw + kx * dw) as i64 - pw as i64;
                            let in_pad = iy >= -(ph as i64) && iy < (h + ph1) as i64 && ix >= -(pw as i64) && ix < (w + pw1) as i64;
                            if in_pad {
                                n_pad += 1;
                            }
                            if iy >= 0 && iy < h as i64 && ix >= 0 && ix < w as i64 {
                                let fi = p * h * w + iy as usize * w + ix as usize;
                                let v = x[fi];
                                n_in += 1;
                                s += v as f64;
                                if v > best {
                                    best = v;
                                    at = fi as i64;
                                }
                            }
                        }
                    }
                    let o = p * oh * ow + oy * ow + ox;
                    out[o] = if max { best } else { (s / if incl { n_pad } else { n_in } as f64) as f32 };
                    idx[o] = at as f32;
                }
            }
        }
        (out, idx)
    }

    #[test]
    fn pools_random_shapes_with_ceil_overrun_match_reference() {
        let mut r = Rng(21);
        let mut done = 0;
        for trial in 0..300u64 {
            let nsp = r.range(1, 2);
            let (n, c) = (r.range(1, 3), r.range(1, 4));
            let ins: Vec<usize> = (0..nsp).map(|_| r.range(1, 11)).collect();
            let ks: Vec<usize> = (0..nsp).map(|_| r.range(1, 4)).collect();
            let st: Vec<usize> = (0..nsp).map(|_| r.range(1, 3)).collect();
            let dl: Vec<usize> = (0..nsp).map(|_| r.range(1, 2)).collect();
            let pads: Vec<usize> = (0..2 * nsp).map(|i| r.range(0, ks[i % nsp] - 1)).collect();
            let ceil = r.bool();
            // ONNX output size, floor or ceil; with ceil, drop a last window starting past the input + left pad
            let outs: Option<Vec<usize>> = (0..nsp)
                .map(|i| {
                    let span = (ks[i] - 1) * dl[i] + 1;
                    let padded = ins[i] + pads[i] + pads[i + nsp];
                    let num = padded.checked_sub(span)?;
                    let mut o = if ceil { num.div_ceil(st[i]) } else { num / st[i] } + 1;
                    if ceil && (o - 1) * st[i] >= ins[i] + pads[i] {
                        o -= 1;
                    }
                    Some(o)
                })
                .collect();
            let Some(outs) = outs else { continue };
            let xshape: Vec<usize> = [n, c].iter().chain(&ins).copied().collect();
            let oshape: Vec<usize> = [n, c].iter().chain(&outs).copied().collect();
            let x = Tensor::new(xshape.clone(), rnd(xshape.iter().product(), trial));
            let incl = r.bool();
            let base = vec![("kernel_shape", ints(&ks)), ("pads", ints(&pads)), ("strides", ints(&st)), ("dilations", ints(&dl))];
            let (want_max, want_idx) = pool_ref(&x.data, n * c, &ins, &outs, &ks, &st, &dl, &pads, true, incl);
            let got = run_op("MaxPool", &base, &[Some(&x)], &[false], &[oshape.clone(), oshape.clone()], None).unwrap();
            assert_close(&got[0], &oshape, &want_max, &format!("maxpool trial {trial}"));
            assert_eq!(got[1].data, want_idx, "maxpool indices trial {trial}");
            let (want_avg, _) = pool_ref(&x.data, n * c, &ins, &outs, &ks, &st, &dl, &pads, false, incl);
            let mut attrs = base.clone();
            attrs.push(("count_include_pad", AttrValue::Int(incl as i64)));
            let got = run_op("AveragePool", &attrs, &[Some(&x)], &[false], &[oshape.clone()], None).unwrap();
            assert_close(&got[0], &oshape, &want_avg, &format!("avgpool trial {trial} incl={incl}"));
            done += 1;
        }
        assert!(done > 200, "{done}");
    }

    #[test]
    fn average_pool_count_include_pad_matches_onnxruntime_values() {
        // x = 1..=9 in a 3x3 plane, kernel 2x2, stride 2, pads 1 (begin) 0 (end), ceil mode output 2x2.
        let x = Tensor::new(vec![1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
        let attrs = |incl: i64| vec![("kernel_shape", ints(&[2, 2])), ("pads", ints(&[1, 1, 0, 0])), ("strides", ints(&[2, 2])), ("count_include_pad", AttrValue::Int(incl))];
        let got = run_op("AveragePool", &attrs(1), &[Some(&x)], &[false], &[vec![1, 1, 2, 2]], None).unwrap();
        // windows: [pad,pad;pad,1] -> 1/4; [pad,pad;2,3] -> 5/4; [pad,4;pad,7] -> 11/4; [5,6;8,9] -> 28/4
        assert_eq!(got[0].data, vec![0.25, 1.25, 2.75, 7.0]);
        let got = run_op("AveragePool", &attrs(0), &[Some(&x)], &[false], &[vec![1, 1, 2, 2]], None).unwrap();
        assert_eq!(got[0].data, vec![1.0, 2.5, 5.5, 7.0]);
        // 4x4 plane, kernel 3, stride 2, pads 1, ceil mode: the last window runs past the
        // padded input. Expected values printed by onnxruntime 1.32.
        let x = Tensor::new(vec![1, 1, 4, 4], (1..=16).map(|v| v as f32).collect());
        let attrs = |incl: i64| vec![("kernel_shape", ints(&[3, 3])), ("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2])), ("count_include_pad", AttrValue::Int(incl))];
        let got = run_op("AveragePool", &attrs(1), &[Some(&x)], &[false], &[vec![1, 1, 3, 3]], None).unwrap();
        assert_close(&got[0], &[1, 1, 3, 3], &[1.5555556, 3.3333333, 2.0, 6.3333335, 11.0, 6.0, 4.5, 7.5, 4.0], "ort include_pad");
        let got = run_op("AveragePool", &attrs(0), &[Some(&x)], &[false], &[vec![1, 1, 3, 3]], None).unwrap();
        assert_close(&got[0], &[1, 1, 3, 3], &[3.5, 5.0, 6.0, 9.5, 11.0, 12.0, 13.5, 15.0, 16.0], "ort exclude_pad");
    }

    #[test]
    fn global_pools_match_reference_and_reject_bad_output() {
        for shape in [vec![2, 3, 5], vec![3, 2, 7, 9], vec![1, 4, 1, 1]] {
            let x = Tensor::new(shape.clone(), rnd(shape.iter().product(), 4));
            let size: usize = shape[2..].iter().product();
            let mut oshape = shape.clone();
            oshape[2..].iter_mut().for_each(|d| *d = 1);
            let want_avg: Vec<f32> = x.data.chunks(size).map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / size as f64) as f32).collect();
            let want_max: Vec<f32> = x.data.chunks(size).map(|p| p.iter().copied().fold(f32::NEG_INFINITY, f32::max)).collect();
            let got = run_op("GlobalAveragePool", &[], &[Some(&x)], &[false], &[oshape.clone()], None).unwrap();
            assert_close(&got[0], &oshape, &want_avg, "gap");
            let got = run_op("GlobalMaxPool", &[], &[Some(&x)], &[false], &[oshape.clone()], None).unwrap();
            assert_close(&got[0], &oshape, &want_max, "gmp");
        }
        let x = Tensor::zeros(&[1, 2, 3, 3]);
        assert!(run_op("GlobalAveragePool", &[], &[Some(&x)], &[false], &[vec![1, 2, 3, 1]], None).is_err());
        assert!(run_op("MaxPool", &[], &[Some(&x)], &[false], &[vec![1, 2, 3, 3]], None).is_err()); // no kernel_shape
        assert!(run_op("MaxPool", &[("kernel_shape", ints(&[2, 2]))], &[Some(&x)], &[false], &[vec![1, 3, 2, 2]], None).is_err());
    }
}
