//! Data movement ops (see CONTRACT.md): reshapes, Expand, Tile, Slice, Transpose, Concat,
//! Split, Gather, Pad, Cast. Output shapes come from the plan; each op checks them.
//!
//! Slice, Tile, Pad and general transposes share one engine: per output axis a table maps
//! each output coordinate to an input offset ([`Tables`]), built at build time, so running
//! is a sum of table lookups per row and a contiguous copy or gather along the last axis.
use super::elementwise::checked;
use super::{reg, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::kernels::bcast::{self, Bcast, PAR_CHUNK, PAR_MIN};
use crate::plan::DType;
use crate::tensor::{numel, strides, Tensor};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    for op in ["Reshape", "Flatten", "Squeeze", "Unsqueeze"] {
        reg(r, op, build_reshape);
    }
    reg(r, "Expand", build_expand);
    reg(r, "Tile", build_tile);
    reg(r, "Slice", build_slice);
    reg(r, "Transpose", build_transpose);
    reg(r, "Concat", build_concat);
    reg(r, "Split", build_split);
    reg(r, "Gather", build_gather);
    reg(r, "Pad", build_pad);
    reg(r, "Cast", build_cast);
    reg(r, "MpqExpectValue", build_expect);
}

/// `MpqExpectValue(x, expected)`: no outputs; fails when `x` differs from the constant
/// `expected`. The plan's shapes were made for a value measured on the data (a Reshape target,
/// a Range bound, an If condition computed from input values): a run whose data gives another
/// value is refused rather than computed with shapes that do not fit it.
struct Expect {
    name: String,
    expected: std::sync::Arc<Tensor>,
}

impl Op for Expect {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = super::input(inputs, 0)?;
        if x.shape != self.expected.shape || x.data.iter().zip(&self.expected.data).any(|(a, b)| a.to_bits() != b.to_bits() && a != b) {
            let show = |d: &[f32]| {
                let mut s: Vec<String> = d.iter().take(8).map(|v| v.to_string()).collect();
                if d.len() > 8 {
                    s.push("...".into());
                }
                s.join(",")
            };
            let value = self.name.strip_suffix("@check").unwrap_or(&self.name);
            return Err(Error::BadData(format!(
                "the shapes of this run depend on the value of '{value}', which the data gives as [{}] (shape {:?}); the plan was made for [{}], measured on earlier data (data-dependent shapes must be the same over a data set)",
                show(&x.data),
                x.shape,
                show(&self.expected.data)
            )));
        }
        Ok(vec![])
    }
}

fn build_expect(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    ctx.in_shape(0)?;
    Ok(Box::new(Expect { name: ctx.node.name.clone(), expected: ctx.const_input(1)? }))
}

fn out0<'a>(ctx: &BuildCtx<'a>) -> Result<&'a [usize]> {
    ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("expects 1 output"))
}

// ---------------------------------------------------------------- offset tables

/// Marks an output coordinate that reads no input (Pad's constant border).
const NONE: usize = usize::MAX;

/// `out[i_0, ..., i_k] = x[t_0[i_0] + ... + t_k[i_k]]`, or `fill` where an entry is [`NONE`].
struct Tables {
    t: Vec<Vec<usize>>,
    out_numel: usize,
    /// The last table is `t[0] + j`: rows are contiguous copies.
    contiguous: bool,
    fill: f32,
}

impl Tables {
    /// `in_numel` bounds every offset: checked here so running can never read out of bounds.
    fn new(mut t: Vec<Vec<usize>>, in_numel: usize, fill: f32) -> std::result::Result<Self, String> {
        if t.is_empty() {
            t.push(vec![0]);
        }
        let out_numel: usize = t.iter().map(|v| v.len()).product();
        if out_numel > 0 {
            let max: usize = t.iter().map(|v| v.iter().filter(|&&o| o != NONE).max().copied().unwrap_or(0)).sum();
            if max >= in_numel {
                return Err(format!("reads offset {max} of an input with {in_numel} elements"));
            }
        }
        let last = t.last().map(|v| v.as_slice()).unwrap_or(&[]);
        let contiguous = last.iter().enumerate().all(|(j, &o)| o != NONE && o == last[0] + j);
        Ok(Tables { t, out_numel, contiguous, fill })
    }

    fn run(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.out_numel];
        let inner = self.t.last().map(|v| v.len()).unwrap_or(1);
        if inner == 0 || self.out_numel == 0 {
            return out;
        }
        let outer = &self.t[..self.t.len() - 1];
        let last = &self.t[self.t.len() - 1];
        let do_rows = |r0: usize, ch: &mut [f32]| {
            for (k, o) in ch.chunks_mut(inner).enumerate() {
                let mut rem = r0 + k;
                let mut base = 0usize;
                let mut none = false;
                for t in outer.iter().rev() {
                    let off = t[rem % t.len()];
                    rem /= t.len();
                    if off == NONE {
                        none = true;
                    } else {
                        base += off;
                    }
                }
                if none {
                    o.fill(self.fill);
                } else if self.contiguous {
                    o.copy_from_slice(&x[base + last[0]..base + last[0] + inner]);
                } else {
                    for (o, &l) in o.iter_mut().zip(last) {
                        *o = if l == NONE { self.fill } else { x[base + l] };
                    }
                }
            }
        };
        if out.len() < PAR_MIN {
            do_rows(0, &mut out);
        } else {
            let rows_per = PAR_CHUNK.div_ceil(inner).max(1);
            out.par_chunks_mut(rows_per * inner).enumerate().for_each(|(i, ch)| do_rows(i * rows_per, ch));
        }
        out
    }
}

/// An op that runs a [`Tables`] gather on its single input.
struct TableOp {
    op: String,
    name: String,
    in_numel: usize,
    tables: Tables,
    out_shape: Vec<usize>,
}

impl Op for TableOp {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked(&self.op, &self.name, inputs, 0, self.in_numel)?;
        Ok(vec![Tensor::new(self.out_shape.clone(), self.tables.run(&x.data))])
    }
}

fn table_op(ctx: &BuildCtx, x: &[usize], out: &[usize], t: Vec<Vec<usize>>, fill: f32) -> Result<Box<dyn Op>> {
    let tables = Tables::new(t, numel(x), fill).map_err(|m| ctx.err(m))?;
    Ok(Box::new(TableOp { op: ctx.node.op.clone(), name: ctx.node.name.clone(), in_numel: numel(x), tables, out_shape: out.to_vec() }))
}

// ---------------------------------------------------------------- reshape family, Expand

struct Copy {
    op: String,
    name: String,
    shape: Vec<usize>,
}

impl Op for Copy {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked(&self.op, &self.name, inputs, 0, numel(&self.shape))?;
        Ok(vec![Tensor::new(self.shape.clone(), x.data.clone())])
    }
}

fn build_reshape(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = out0(ctx)?;
    if numel(x) != numel(out) {
        return Err(ctx.err(format!("cannot reshape {x:?} ({} elements) to {out:?} ({} elements)", numel(x), numel(out))));
    }
    Ok(Box::new(Copy { op: ctx.node.op.clone(), name: ctx.node.name.clone(), shape: out.to_vec() }))
}

struct Expand {
    name: String,
    bc: Bcast,
    out_shape: Vec<usize>,
}

impl Op for Expand {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked("Expand", &self.name, inputs, 0, self.bc.in_numel[0])?;
        let mut out = vec![0.0; self.bc.out_numel];
        bcast::expand(&self.bc, &x.data, &mut out);
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

fn build_expand(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = out0(ctx)?;
    let bc = Bcast::new(&[x], out).map_err(|m| ctx.err(m))?;
    Ok(Box::new(Expand { name: ctx.node.name.clone(), bc, out_shape: out.to_vec() }))
}

// ---------------------------------------------------------------- Tile, Slice, Pad

fn build_tile(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = out0(ctx)?;
    if x.len() != out.len() || x.iter().zip(out).any(|(&i, &o)| if i == 0 { o != 0 } else { o % i != 0 }) {
        return Err(ctx.err(format!("output {out:?} is not a tiling of input {x:?}")));
    }
    let st = strides(x);
    let t = (0..x.len()).map(|d| (0..out[d]).map(|i| (i % x[d].max(1)) * st[d]).collect()).collect();
    table_op(ctx, x, out, t, 0.0)
}

fn build_slice(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = out0(ctx)?;
    let starts = ctx.attrs.ints("starts", &[])?;
    let steps = ctx.attrs.ints_opt("steps")?.unwrap_or_else(|| vec![1; x.len()]);
    if starts.len() != x.len() || steps.len() != x.len() || out.len() != x.len() {
        return Err(ctx.err(format!("starts {starts:?} and steps {steps:?} need one entry per axis of {x:?} (output {out:?})")));
    }
    let st = strides(x);
    let mut t = Vec::with_capacity(x.len());
    for d in 0..x.len() {
        if steps[d] == 0 {
            return Err(ctx.err(format!("step of axis {d} is 0")));
        }
        let mut v = Vec::with_capacity(out[d]);
        for i in 0..out[d] as i64 {
            let p = starts[d] + i * steps[d];
            if p < 0 || p >= x[d] as i64 {
                return Err(ctx.err(format!("axis {d}: element {i} reads index {p}, outside 0..{}", x[d])));
            }
            v.push(p as usize * st[d]);
        }
        t.push(v);
    }
    table_op(ctx, x, out, t, 0.0)
}

fn build_pad(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = out0(ctx)?;
    let r = x.len();
    let pads = ctx.attrs.ints("pads", &[])?;
    let mode = ctx.attrs.str("mode", "constant")?;
    let value = ctx.attrs.float("value", 0.0)?;
    if pads.len() != 2 * r || out.len() != r {
        return Err(ctx.err(format!("pads {pads:?} must have 2 x rank entries for input {x:?}")));
    }
    let st = strides(x);
    let mut t = Vec::with_capacity(r);
    for d in 0..r {
        let (b, e, n) = (pads[d], pads[d + r], x[d] as i64);
        if n + b + e != out[d] as i64 {
            return Err(ctx.err(format!("axis {d}: {n} + pads {b}, {e} != output size {}", out[d])));
        }
        let mut v = Vec::with_capacity(out[d]);
        for i in 0..out[d] as i64 {
            let p = i - b;
            let q = match mode.as_str() {
                "constant" => (0..n).contains(&p).then_some(p),
                "edge" => {
                    if n == 0 {
                        return Err(ctx.err(format!("edge padding of empty axis {d}")));
                    }
                    Some(p.clamp(0, n - 1))
                }
                "reflect" => {
                    if n == 0 {
                        return Err(ctx.err(format!("reflect padding of empty axis {d}")));
                    }
                    if n == 1 {
                        Some(0)
                    } else {
                        let period = 2 * (n - 1);
                        let m = p.rem_euclid(period);
                        Some(if m >= n { period - m } else { m })
                    }
                }
                other => return Err(ctx.err(format!("unsupported pad mode \"{other}\" (constant, reflect, edge)"))),
            };
            v.push(q.map(|q| q as usize * st[d]).unwrap_or(NONE));
        }
        t.push(v);
    }
    table_op(ctx, x, out, t, value)
}

// ---------------------------------------------------------------- Transpose

/// Drops size-1 axes and merges input axes that stay adjacent and in order under `perm`.
/// Returns the collapsed input shape and permutation.
fn collapse_perm(x: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut map = vec![usize::MAX; x.len()];
    let mut shape = Vec::new();
    for (d, &n) in x.iter().enumerate() {
        if n != 1 {
            map[d] = shape.len();
            shape.push(n);
        }
    }
    let p: Vec<usize> = perm.iter().filter(|&&d| x[d] != 1).map(|&d| map[d]).collect();
    // groups of consecutive input axes, in output order
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &d in &p {
        match groups.last_mut() {
            Some((s, c)) if *s + *c == d => *c += 1,
            _ => groups.push((d, 1)),
        }
    }
    let mut by_in: Vec<usize> = (0..groups.len()).collect();
    by_in.sort_by_key(|&g| groups[g].0);
    let cshape: Vec<usize> = by_in.iter().map(|&g| shape[groups[g].0..groups[g].0 + groups[g].1].iter().product()).collect();
    let mut rank_of = vec![0; groups.len()];
    for (r, &g) in by_in.iter().enumerate() {
        rank_of[g] = r;
    }
    (cshape, rank_of)
}

/// `out[b] = x[b]^T` for `batch` row-major `[m, n]` matrices, in cache blocks.
fn transpose_batched(x: &[f32], out: &mut [f32], batch: usize, m: usize, n: usize) {
    const B: usize = 32;
    let one = |xb: &[f32], ob: &mut [f32], j0: usize| {
        // ob holds output rows j0.. (each of length m)
        let rows = ob.len() / m;
        for ib in (0..m).step_by(B) {
            let ie = (ib + B).min(m);
            for j in 0..rows {
                let o = &mut ob[j * m..(j + 1) * m];
                for i in ib..ie {
                    o[i] = xb[i * n + j0 + j];
                }
            }
        }
    };
    let mn = m * n;
    if mn == 0 {
        return;
    }
    for (xb, ob) in x.chunks(mn).zip(out.chunks_mut(mn)).take(batch) {
        if mn < PAR_MIN {
            for (k, oc) in ob.chunks_mut(B * m).enumerate() {
                one(xb, oc, k * B);
            }
        } else {
            ob.par_chunks_mut(B * m).enumerate().for_each(|(k, oc)| one(xb, oc, k * B));
        }
    }
}

struct Transpose2d {
    name: String,
    batch: usize,
    m: usize,
    n: usize,
    out_shape: Vec<usize>,
}

impl Op for Transpose2d {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let len = self.batch * self.m * self.n;
        let x = checked("Transpose", &self.name, inputs, 0, len)?;
        let mut out = vec![0.0; len];
        transpose_batched(&x.data, &mut out, self.batch, self.m, self.n);
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

fn build_transpose(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = out0(ctx)?;
    let r = x.len();
    let perm = ctx.attrs.ints_opt("perm")?.unwrap_or_else(|| (0..r as i64).rev().collect());
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| p < 0 || p as usize >= r || std::mem::replace(&mut seen[p as usize], true)) {
        return Err(ctx.err(format!("perm {perm:?} is not a permutation of 0..{r}")));
    }
    let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
    let want: Vec<usize> = perm.iter().map(|&p| x[p]).collect();
    if want != out {
        return Err(ctx.err(format!("output shape {out:?} should be {want:?} for perm {perm:?}")));
    }
    let (cs, cp) = collapse_perm(x, &perm);
    let k = cs.len();
    if k <= 1 || cp.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(Box::new(Copy { op: ctx.node.op.clone(), name: ctx.node.name.clone(), shape: out.to_vec() }));
    }
    if cp[k - 1] == k - 2 && cp[k - 2] == k - 1 && cp[..k - 2].iter().enumerate().all(|(i, &p)| i == p) {
        let batch = cs[..k - 2].iter().product();
        return Ok(Box::new(Transpose2d { name: ctx.node.name.clone(), batch, m: cs[k - 2], n: cs[k - 1], out_shape: out.to_vec() }));
    }
    let st = strides(&cs);
    let t = cp.iter().map(|&p| (0..cs[p]).map(|i| i * st[p]).collect()).collect();
    table_op(ctx, x, out, t, 0.0)
}

// ---------------------------------------------------------------- Concat, Split

struct Concat {
    name: String,
    outer: usize,
    /// Elements each input contributes per outer index.
    chunks: Vec<usize>,
    out_shape: Vec<usize>,
}

impl Op for Concat {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let xs: Vec<&Tensor> = (0..self.chunks.len())
            .map(|i| checked("Concat", &self.name, inputs, i, self.outer * self.chunks[i]))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(numel(&self.out_shape));
        for o in 0..self.outer {
            for (x, &c) in xs.iter().zip(&self.chunks) {
                out.extend_from_slice(&x.data[o * c..(o + 1) * c]);
            }
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

fn build_concat(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let out = out0(ctx)?;
    let axis = ctx.attrs.int("axis", 0)?;
    if axis < 0 || axis as usize >= out.len() {
        return Err(ctx.err(format!("axis {axis} out of range for output {out:?}")));
    }
    let a = axis as usize;
    let inner: usize = out[a + 1..].iter().product();
    let mut chunks = Vec::new();
    let mut total = 0;
    for i in 0..ctx.in_shapes.len() {
        let s = ctx.in_shape(i)?;
        if s.len() != out.len() || s.iter().zip(out).enumerate().any(|(d, (&x, &o))| d != a && x != o) {
            return Err(ctx.err(format!("input {i} of shape {s:?} does not concatenate into {out:?} on axis {a}")));
        }
        total += s[a];
        chunks.push(s[a] * inner);
    }
    if total != out[a] || chunks.is_empty() {
        return Err(ctx.err(format!("inputs sum to {total} on axis {a}, output has {}", out[a])));
    }
    Ok(Box::new(Concat { name: ctx.node.name.clone(), outer: out[..a].iter().product(), chunks, out_shape: out.to_vec() }))
}

struct Split {
    name: String,
    outer: usize,
    in_numel: usize,
    chunks: Vec<usize>,
    out_shapes: Vec<Vec<usize>>,
}

impl Op for Split {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked("Split", &self.name, inputs, 0, self.in_numel)?;
        let row: usize = self.chunks.iter().sum();
        let mut outs: Vec<Vec<f32>> = self.chunks.iter().map(|c| Vec::with_capacity(c * self.outer)).collect();
        for o in 0..self.outer {
            let mut off = o * row;
            for (v, &c) in outs.iter_mut().zip(&self.chunks) {
                v.extend_from_slice(&x.data[off..off + c]);
                off += c;
            }
        }
        Ok(outs.into_iter().zip(&self.out_shapes).map(|(v, s)| Tensor::new(s.clone(), v)).collect())
    }
}

fn build_split(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let axis = ctx.attrs.int("axis", 0)?;
    if axis < 0 || axis as usize >= x.len() {
        return Err(ctx.err(format!("axis {axis} out of range for input {x:?}")));
    }
    let a = axis as usize;
    let inner: usize = x[a + 1..].iter().product();
    let sizes: Vec<usize> = ctx.out_shapes.iter().map(|s| s.get(a).copied().unwrap_or(0)).collect();
    if let Some(split) = ctx.attrs.ints_opt("split")? {
        if split.len() != sizes.len() || split.iter().zip(&sizes).any(|(&s, &n)| s < 0 || s as usize != n) {
            return Err(ctx.err(format!("split {split:?} does not match the output shapes {:?}", ctx.out_shapes)));
        }
    }
    for (i, s) in ctx.out_shapes.iter().enumerate() {
        if s.len() != x.len() || s.iter().zip(x).enumerate().any(|(d, (&o, &n))| d != a && o != n) {
            return Err(ctx.err(format!("output {i} of shape {s:?} is not a split of {x:?} on axis {a}")));
        }
    }
    if sizes.iter().sum::<usize>() != x[a] || sizes.is_empty() {
        return Err(ctx.err(format!("split sizes {sizes:?} do not sum to {}", x[a])));
    }
    Ok(Box::new(Split {
        name: ctx.node.name.clone(),
        outer: x[..a].iter().product(),
        in_numel: numel(x),
        chunks: sizes.iter().map(|s| s * inner).collect(),
        out_shapes: ctx.out_shapes.iter().map(|s| s.to_vec()).collect(),
    }))
}

// ---------------------------------------------------------------- Gather

struct Gather {
    name: String,
    outer: usize,
    dim: usize,
    inner: usize,
    data_numel: usize,
    idx_numel: usize,
    out_shape: Vec<usize>,
}

impl Op for Gather {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked("Gather", &self.name, inputs, 0, self.data_numel)?;
        let idx = checked("Gather", &self.name, inputs, 1, self.idx_numel)?;
        let mut pos = Vec::with_capacity(idx.data.len());
        for &v in &idx.data {
            let i = if v.fract() == 0.0 && v.is_finite() { v as i64 } else { i64::MAX };
            let j = if i < 0 { i + self.dim as i64 } else { i };
            if j < 0 || j >= self.dim as i64 {
                return Err(Error::node("Gather", &self.name, format!("index {v} is out of range for an axis of size {}", self.dim)));
            }
            pos.push(j as usize);
        }
        let mut out = Vec::with_capacity(numel(&self.out_shape));
        for o in 0..self.outer {
            let base = o * self.dim * self.inner;
            for &p in &pos {
                out.extend_from_slice(&x.data[base + p * self.inner..base + (p + 1) * self.inner]);
            }
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

fn build_gather(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let idx = ctx.in_shape(1)?;
    let out = out0(ctx)?;
    let axis = ctx.attrs.int("axis", 0)?;
    if axis < 0 || axis as usize >= x.len() {
        return Err(ctx.err(format!("axis {axis} out of range for data {x:?}")));
    }
    let a = axis as usize;
    let want: Vec<usize> = x[..a].iter().chain(idx).chain(&x[a + 1..]).copied().collect();
    if want != out {
        return Err(ctx.err(format!("output shape {out:?} should be {want:?}")));
    }
    Ok(Box::new(Gather {
        name: ctx.node.name.clone(),
        outer: x[..a].iter().product(),
        dim: x[a],
        inner: x[a + 1..].iter().product(),
        data_numel: numel(x),
        idx_numel: numel(idx),
        out_shape: out.to_vec(),
    }))
}

// ---------------------------------------------------------------- Cast

struct Cast {
    name: String,
    to: DType,
    shape: Vec<usize>,
}

impl Op for Cast {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked("Cast", &self.name, inputs, 0, numel(&self.shape))?;
        let data = match self.to {
            DType::Float => x.data.clone(),
            DType::Int => x.data.iter().map(|v| v.trunc()).collect(),
            DType::Bool => x.data.iter().map(|&v| if v != 0.0 { 1.0 } else { 0.0 }).collect(),
        };
        Ok(vec![Tensor::new(self.shape.clone(), data)])
    }
}

fn build_cast(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = out0(ctx)?;
    if numel(x) != numel(out) {
        return Err(ctx.err(format!("output shape {out:?} does not match input {x:?}")));
    }
    let to = match ctx.attrs.int_opt("to") {
        // ONNX TensorProto.DataType codes, in case a plan carries them unlowered
        Ok(Some(code)) => match code {
            1 | 10 | 11 | 16 => DType::Float,
            2..=7 | 12 | 13 => DType::Int,
            9 => DType::Bool,
            c => return Err(ctx.err(format!("cannot cast to ONNX type {c}"))),
        },
        _ => match ctx.attrs.str("to", "float")?.as_str() {
            "float" => DType::Float,
            "int" => DType::Int,
            "bool" => DType::Bool,
            other => return Err(ctx.err(format!("to must be \"float\", \"int\" or \"bool\", got \"{other}\""))),
        },
    };
    Ok(Box::new(Cast { name: ctx.node.name.clone(), to, shape: out.to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::testutil::*;
    use super::*;

    fn iota(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    /// Multi-index of flat position `i` in `shape`.
    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut v = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            v[d] = i % shape[d];
            i /= shape[d];
        }
        v
    }

    fn ravel(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
    }

    #[test]
    fn expect_value_passes_the_measured_value_and_refuses_another() {
        let v = |d: Vec<f32>| Tensor::new(vec![2], d);
        let e = Expect { name: "n@check".into(), expected: std::sync::Arc::new(v(vec![3.0, 4.0])) };
        assert!(e.run(&[Some(&v(vec![3.0, 4.0]))]).unwrap().is_empty());
        let m = e.run(&[Some(&v(vec![3.0, 5.0]))]).unwrap_err().to_string();
        assert!(m.contains("'n'") && m.contains("[3,5]") && m.contains("[3,4]"), "{m}");
        assert!(e.run(&[Some(&Tensor::new(vec![1], vec![3.0]))]).is_err());
    }

    #[test]
    fn reshape_family_and_expand() {
        let r = run("Reshape", "{}", vec![inp(&[2, 3], iota(6))], &[&[3, 2]]).unwrap();
        assert_eq!((r[0].shape.clone(), r[0].data.clone()), (vec![3, 2], iota(6)));
        assert!(run("Reshape", "{}", vec![inp(&[2, 3], iota(6))], &[&[4, 2]]).is_err());
        let r = run("Expand", "{}", vec![inp(&[3, 1], vec![1., 2., 3.])], &[&[2, 3, 2]]).unwrap();
        assert_eq!(r[0].data, vec![1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]);
        assert!(run("Expand", "{}", vec![inp(&[3], vec![1., 2., 3.])], &[&[2, 2]]).is_err());
    }

    #[test]
    fn tile_and_slice() {
        let r = run("Tile", "{}", vec![inp(&[2, 2], vec![1., 2., 3., 4.])], &[&[4, 4]]).unwrap();
        assert_eq!(r[0].data, vec![1., 2., 1., 2., 3., 4., 3., 4., 1., 2., 1., 2., 3., 4., 3., 4.]);
        assert!(run("Tile", "{}", vec![inp(&[2, 2], iota(4))], &[&[3, 4]]).is_err());
        // x[1:3, ::-2] on a 3x5 input
        let r = run("Slice", r#"{"starts": [1, 4], "steps": [1, -2]}"#, vec![inp(&[3, 5], iota(15))], &[&[2, 3]]).unwrap();
        assert_eq!(r[0].data, vec![9., 7., 5., 14., 12., 10.]);
        assert!(run("Slice", r#"{"starts": [1, 4], "steps": [1, 2]}"#, vec![inp(&[3, 5], iota(15))], &[&[2, 3]]).is_err());
        assert!(run("Slice", r#"{"starts": [0, 0], "steps": [1, 0]}"#, vec![inp(&[3, 5], iota(15))], &[&[2, 3]]).is_err());
        // a larger randomized slice against a naive reference
        let xs = [6, 7, 40, 50];
        let (starts, steps) = ([5i64, 1, 2, 49], [-2i64, 3, 1, -3]);
        let out = [3, 2, 38, 17];
        let x = rand(numel(&xs), 3, 1.0);
        let attrs = format!(r#"{{"starts": {starts:?}, "steps": {steps:?}}}"#);
        let r = run("Slice", &attrs, vec![inp(&xs, x.clone())], &[&out]).unwrap();
        for i in 0..numel(&out) {
            let oi = unravel(i, &out);
            let ii: Vec<usize> = (0..4).map(|d| (starts[d] + oi[d] as i64 * steps[d]) as usize).collect();
            assert_eq!(r[0].data[i], x[ravel(&ii, &xs)]);
        }
    }

    #[test]
    fn transpose_all_paths_match_naive() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3, 4, 5], &[0, 2, 3, 1]),
            (&[2, 3, 4, 5], &[0, 3, 1, 2]),
            (&[2, 3, 4, 5], &[0, 2, 1, 3]),
            (&[2, 3, 4, 5], &[3, 2, 1, 0]),
            (&[2, 3, 4, 5], &[1, 0, 2, 3]),
            (&[2, 1, 4, 5], &[0, 2, 3, 1]),
            (&[3, 4], &[1, 0]),
            (&[2, 3, 4], &[0, 1, 2]),
            (&[2, 64, 33, 35], &[0, 2, 3, 1]),
            (&[2, 3, 4, 5, 6], &[4, 0, 3, 1, 2]),
        ];
        for (xs, perm) in cases {
            let out: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
            let x = rand(numel(xs), 9, 1.0);
            let attrs = format!(r#"{{"perm": {perm:?}}}"#);
            let r = run("Transpose", &attrs, vec![inp(xs, x.clone())], &[&out]).unwrap();
            for i in 0..numel(&out) {
                let oi = unravel(i, &out);
                let mut ii = vec![0; xs.len()];
                for (d, &p) in perm.iter().enumerate() {
                    ii[p] = oi[d];
                }
                assert_eq!(r[0].data[i], x[ravel(&ii, xs)], "{xs:?} {perm:?} at {i}");
            }
        }
        assert!(run("Transpose", r#"{"perm": [0, 0]}"#, vec![inp(&[2, 2], iota(4))], &[&[2, 2]]).is_err());
        assert!(run("Transpose", r#"{"perm": [1, 0]}"#, vec![inp(&[2, 3], iota(6))], &[&[2, 3]]).is_err());
    }

    #[test]
    fn concat_and_split() {
        let r = run("Concat", r#"{"axis": 1}"#, vec![inp(&[2, 1], vec![1., 2.]), inp(&[2, 2], vec![3., 4., 5., 6.])], &[&[2, 3]]).unwrap();
        assert_eq!(r[0].data, vec![1., 3., 4., 2., 5., 6.]);
        assert!(run("Concat", r#"{"axis": 1}"#, vec![inp(&[2, 1], vec![1., 2.]), inp(&[3, 2], iota(6))], &[&[2, 3]]).is_err());
        let r = run("Split", r#"{"axis": 1, "split": [1, 2]}"#, vec![inp(&[2, 3], iota(6))], &[&[2, 1], &[2, 2]]).unwrap();
        assert_eq!(r[0].data, vec![0., 3.]);
        assert_eq!(r[1].data, vec![1., 2., 4., 5.]);
        let r = run("Split", r#"{"axis": 0}"#, vec![inp(&[4], iota(4))], &[&[2], &[2]]).unwrap();
        assert_eq!((r[0].data.clone(), r[1].data.clone()), (vec![0., 1.], vec![2., 3.]));
        assert!(run("Split", r#"{"axis": 1, "split": [2, 2]}"#, vec![inp(&[2, 3], iota(6))], &[&[2, 1], &[2, 2]]).is_err());
    }

    #[test]
    fn gather_indices_negative_and_out_of_range() {
        let r = run("Gather", r#"{"axis": 1}"#, vec![inp(&[2, 3], iota(6)), int_inp(&[2, 2], vec![0., -1., 2., 1.])], &[&[2, 2, 2]]).unwrap();
        assert_eq!(r[0].data, vec![0., 2., 2., 1., 3., 5., 5., 4.]);
        let r = run("Gather", r#"{"axis": 0}"#, vec![inp(&[3, 2], iota(6)), int_inp(&[], vec![-2.])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![2., 3.]);
        let e = run("Gather", r#"{"axis": 0}"#, vec![inp(&[3, 2], iota(6)), int_inp(&[1], vec![3.])], &[&[1, 2]]);
        assert!(e.unwrap_err().to_string().contains("out of range"));
        assert!(run("Gather", r#"{"axis": 0}"#, vec![inp(&[3, 2], iota(6)), int_inp(&[1], vec![-4.])], &[&[1, 2]]).is_err());
        assert!(run("Gather", r#"{"axis": 0}"#, vec![inp(&[3, 2], iota(6)), int_inp(&[1], vec![f32::NAN])], &[&[1, 2]]).is_err());
        assert!(run("Gather", r#"{"axis": 0}"#, vec![inp(&[3, 2], iota(6)), int_inp(&[1], vec![0.])], &[&[2, 2]]).is_err());
    }

    #[test]
    fn pad_modes_and_negative_pads() {
        let x = inp(&[1, 3], vec![1., 2., 3.]);
        let r = run("Pad", r#"{"pads": [0, 2, 0, 1], "mode": "constant", "value": 9.0}"#, vec![x], &[&[1, 6]]).unwrap();
        assert_eq!(r[0].data, vec![9., 9., 1., 2., 3., 9.]);
        let r = run("Pad", r#"{"pads": [0, 2, 0, 2], "mode": "reflect"}"#, vec![inp(&[1, 3], vec![1., 2., 3.])], &[&[1, 7]]).unwrap();
        assert_eq!(r[0].data, vec![3., 2., 1., 2., 3., 2., 1.]);
        let r = run("Pad", r#"{"pads": [0, 2, 0, 1], "mode": "edge"}"#, vec![inp(&[1, 3], vec![1., 2., 3.])], &[&[1, 6]]).unwrap();
        assert_eq!(r[0].data, vec![1., 1., 1., 2., 3., 3.]);
        // negative pads crop; padding rows of a 2-D input
        let r = run("Pad", r#"{"pads": [1, -1, 0, 0], "mode": "constant"}"#, vec![inp(&[2, 3], iota(6))], &[&[3, 2]]).unwrap();
        assert_eq!(r[0].data, vec![0., 0., 1., 2., 4., 5.]);
        assert!(run("Pad", r#"{"pads": [0, 1, 0, 1], "mode": "wrap"}"#, vec![inp(&[1, 3], iota(3))], &[&[1, 5]]).is_err());
        assert!(run("Pad", r#"{"pads": [0, 1, 0, 1]}"#, vec![inp(&[1, 3], iota(3))], &[&[1, 6]]).is_err());
    }

    #[test]
    fn cast_targets() {
        let x = vec![-1.7, -0.2, 0.0, 2.9];
        let r = run_typed("Cast", r#"{"to": "int"}"#, vec![inp(&[4], x.clone())], &[(vec![4], DType::Int)]).unwrap();
        assert_eq!(r[0].data, vec![-1., -0., 0., 2.]);
        let r = run_typed("Cast", r#"{"to": "bool"}"#, vec![inp(&[4], x.clone())], &[(vec![4], DType::Bool)]).unwrap();
        assert_eq!(r[0].data, vec![1., 1., 0., 1.]);
        let r = run("Cast", r#"{"to": "float"}"#, vec![inp(&[4], x.clone())], &[&[4]]).unwrap();
        assert_eq!(r[0].data, x);
        assert!(run("Cast", r#"{"to": "string"}"#, vec![inp(&[4], x)], &[&[4]]).is_err());
    }
}
