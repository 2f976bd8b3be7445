//! Gemm and MatMul (see CONTRACT.md).
//!
//! Both end in [`gemm_rows`]: the output rows are cut into blocks that run in parallel
//! (single-threaded GEMMs), and each block's epilogue (alpha, beta * C, fused activation)
//! runs right after its GEMM while the block is in cache. A MatMul whose right operand is
//! 2-D is one GEMM over all rows of the left operand, whatever its batch dimensions.
//!
//! Every path but Gemm with alpha != 1 sums in onnxruntime's order (MLAS, graph
//! optimizations off): a B that is an initializer is pre-packed there (K blocks of 256,
//! [`PackedB`]); any other B (a DequantizeLinear output, an activation) is not
//! ([`mlas::gemm_unpacked`]: K blocks by the column count of each thread's part).

use super::{input, reg_fusing, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::kernels::act::Activation;
use crate::kernels::gemm::{sgemm, MatRef};
use crate::kernels::mlas;
use crate::kernels::pgemm::{gemm_packed_acc, PackedA};
use crate::tensor::Tensor;
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    reg_fusing(r, "Gemm", build_gemm);
    reg_fusing(r, "MatMul", build_matmul);
}

/// Output floats per row block (about 512 KiB).
const BLOCK_FLOATS: usize = 128 * 1024;

/// `out[m, n] = a[m, k] * b[k, n]`, then `epi(row_index, row)` on every row.
fn gemm_rows(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, out: &mut [f32], epi: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let flops = m * n * k;
    let mut rb = (BLOCK_FLOATS / n).clamp(16, m.max(16));
    if m.div_ceil(rb) < threads {
        rb = m.div_ceil(threads).max(16);
    }
    if threads == 1 || m <= rb || flops < 1 << 18 {
        // too small to split by rows: one call (threaded inside when it pays)
        let t = if flops >= 1 << 21 { threads } else { 1 };
        sgemm(m, n, k, a, b, out, n, false, t);
        for (i, row) in out.chunks_mut(n).enumerate().take(m) {
            epi(i, row);
        }
        return;
    }
    out[..m * n].par_chunks_mut(rb * n).enumerate().for_each(|(bi, ob)| {
        let r0 = bi * rb;
        let rows = ob.len() / n;
        let sub = MatRef { data: &a.data[(r0 as isize * a.rs) as usize..], rs: a.rs, cs: a.cs };
        sgemm(rows, n, k, sub, b, ob, n, false, 1);
        for (i, row) in ob.chunks_mut(n).enumerate() {
            epi(r0 + i, row);
        }
    });
}

/// MLAS's K block for a prepacked right operand (`MLAS_SGEMM_PACKED_STRIDEK`).
const PACKED_STRIDE_K: usize = 256;
/// Rows of `B^T` per packed chunk (a multiple of the kernel's 6-row tile): the parallel unit.
const CHUNK_ROWS: usize = 96;

/// A constant right operand `b[k, n]`, packed as `B^T` for [`gemm_packed_acc`]: the exact
/// path. onnxruntime prepacks constant B of Gemm and MatMul and then sums every output
/// element as FMA chains over K blocks of 256, each block added to the output (after
/// `beta * C`, which goes in first); computing `out^T = B^T A^T` with our packed kernel and
/// that block size gives the same bits.
struct PackedB {
    chunks: Vec<PackedA>,
    n: usize,
    k: usize,
}

impl PackedB {
    /// `b` is `[k, n]`, or `[n, k]` when `trans`.
    fn new(b: &[f32], k: usize, n: usize, trans: bool) -> Option<Self> {
        if k == 0 || n == 0 {
            return None;
        }
        let bt: Vec<f32> = if trans {
            b[..n * k].to_vec()
        } else {
            let mut t = vec![0f32; n * k];
            for p in 0..k {
                for j in 0..n {
                    t[j * k + p] = b[p * n + j];
                }
            }
            t
        };
        let chunks = (0..n).step_by(CHUNK_ROWS).map(|j0| {
            let r = CHUNK_ROWS.min(n - j0);
            PackedA::new(&bt[j0 * k..(j0 + r) * k], r, k)
        }).collect();
        Some(PackedB { chunks, n, k })
    }

    /// `out[m, n] = init(i, j) + a[m, k] * B` in MLAS's order (`a` is `[k, m]` when
    /// `trans_a`); `init` None: no initial value (MLAS beta = 0).
    fn run(&self, a: &[f32], m: usize, trans_a: bool, init: Option<&(dyn Fn(usize, usize) -> f32 + Sync)>, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        if m == 0 {
            return;
        }
        let owned;
        let xt: &[f32] = if trans_a {
            &a[..k * m]
        } else {
            let mut t = vec![0f32; k * m];
            for i in 0..m {
                for p in 0..k {
                    t[p * m + i] = a[i * k + p];
                }
            }
            owned = t;
            &owned
        };
        let mut ot = vec![0f32; n * m];
        if let Some(f) = init {
            for j in 0..n {
                for i in 0..m {
                    ot[j * m + i] = f(i, j);
                }
            }
        }
        let (lo, hi) = (f32::NEG_INFINITY, f32::INFINITY);
        ot.par_chunks_mut(CHUNK_ROWS * m).zip(self.chunks.par_iter()).for_each(|(o, pa)| {
            gemm_packed_acc(pa, xt, m, m, o, m, None, lo, hi, PACKED_STRIDE_K, init.is_some());
        });
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = ot[j * m + i];
            }
        }
    }
}

fn data<'t>(inputs: &[Option<&'t Tensor>], i: usize, len: usize) -> Result<&'t [f32]> {
    let t = input(inputs, i)?;
    if t.data.len() != len {
        return Err(Error::Plan(format!("input {i} has {} elements, expected {len}", t.data.len())));
    }
    Ok(&t.data)
}

struct Gemm {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    /// C viewed as `[cm, cn]` with cm in {1, m}, cn in {1, n}.
    c: Option<(usize, usize)>,
    act: Option<Activation>,
    /// Constant B packed for the exact path (alpha == 1).
    packed: Option<PackedB>,
}

fn build_gemm(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let sa = ctx.in_shape(0)?;
    let sb = ctx.in_shape(1)?;
    if sa.len() != 2 || sb.len() != 2 {
        return Err(ctx.err(format!("A {sa:?} and B {sb:?} must be 2-D")));
    }
    let a = &ctx.attrs;
    let trans_a = a.int("transA", 0)? != 0;
    let trans_b = a.int("transB", 0)? != 0;
    let (m, k) = if trans_a { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (kb, n) = if trans_b { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    if k != kb {
        return Err(ctx.err(format!("inner dimensions differ: A {sa:?} (transA={trans_a}), B {sb:?} (transB={trans_b})")));
    }
    let c = if ctx.has_input(2) {
        let sc = ctx.in_shape(2)?;
        if sc.len() > 2 {
            return Err(ctx.err(format!("C {sc:?} has rank > 2")));
        }
        let mut s2 = [1usize, 1];
        s2[2 - sc.len()..].copy_from_slice(sc);
        if (s2[0] != 1 && s2[0] != m) || (s2[1] != 1 && s2[1] != n) {
            return Err(ctx.err(format!("C {sc:?} does not broadcast to [{m}, {n}]")));
        }
        Some((s2[0], s2[1]))
    } else {
        None
    };
    if ctx.out_shapes.first().copied() != Some(&[m, n][..]) {
        return Err(ctx.err(format!("output shape {:?}, expected [{m}, {n}]", ctx.out_shapes.first())));
    }
    let alpha = a.float("alpha", 1.0)?;
    let packed = match ctx.const_initializer(1) {
        Some(b) if alpha == 1.0 && b.data.len() == k * n => PackedB::new(&b.data, k, n, trans_b),
        _ => None,
    };
    Ok(Box::new(Gemm { m, n, k, trans_a, trans_b, alpha, beta: a.float("beta", 1.0)?, c, act: ctx.fused, packed }))
}

impl Op for Gemm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (m, n, k) = (self.m, self.n, self.k);
        let a = data(inputs, 0, m * k)?;
        let b = data(inputs, 1, k * n)?;
        let c = match self.c {
            Some((cm, cn)) if self.beta != 0.0 => Some((data(inputs, 2, cm * cn)?, cm, cn)),
            _ => None,
        };
        if let Some(pb) = &self.packed {
            let mut out = crate::kernels::alloc::zeroed(m * n);
            let beta = self.beta;
            let init = c.map(|(c, cm, cn)| move |i: usize, j: usize| -> f32 {
                let v = c[if cm == 1 { 0 } else { i * cn }..][if cn == 1 { 0 } else { j }];
                if beta == 1.0 { v } else { beta * v }
            });
            pb.run(a, m, self.trans_a, init.as_ref().map(|f| f as &(dyn Fn(usize, usize) -> f32 + Sync)), &mut out);
            if let Some(act) = &self.act {
                act.apply(&mut out);
            }
            return Ok(vec![Tensor::new(vec![m, n], out)]);
        }
        if self.alpha == 1.0 {
            return Ok(vec![Tensor::new(vec![m, n], self.run_unpacked(a, b, c))]);
        }
        // alpha != 1 with a B computed at run time: not in onnxruntime's order (its kernels
        // scale each K block's sum by alpha before adding it)
        let am = if self.trans_a { MatRef::transposed(a, m) } else { MatRef::row_major(a, k) };
        let bm = if self.trans_b { MatRef::transposed(b, k) } else { MatRef::row_major(b, n) };
        let mut out = crate::kernels::alloc::zeroed(m * n);
        let (alpha, beta, act) = (self.alpha, self.beta, self.act);
        gemm_rows(m, n, k, am, bm, &mut out, &|i, row| {
            if alpha != 1.0 {
                row.iter_mut().for_each(|v| *v *= alpha);
            }
            if let Some((c, cm, cn)) = c {
                let cr = &c[if cm == 1 { 0 } else { i * cn }..][..cn];
                if cn == 1 {
                    let add = beta * cr[0];
                    row.iter_mut().for_each(|v| *v += add);
                } else {
                    row.iter_mut().zip(cr).for_each(|(v, c)| *v += beta * c);
                }
            }
            if let Some(a) = &act {
                a.apply(row);
            }
        });
        Ok(vec![Tensor::new(vec![m, n], out)])
    }
}

impl Gemm {
    /// alpha == 1, B not pre-packed: `beta * C` broadcast into the output, then MLAS's
    /// unpacked GEMM adds to it ([`mlas::gemm_unpacked`]), then the activation.
    fn run_unpacked(&self, a: &[f32], b: &[f32], c: Option<(&[f32], usize, usize)>) -> Vec<f32> {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut out = crate::kernels::alloc::zeroed(m * n);
        if let Some((c, cm, cn)) = c {
            for i in 0..m {
                for j in 0..n {
                    let v = c[if cm == 1 { 0 } else { i * cn }..][if cn == 1 { 0 } else { j }];
                    out[i * n + j] = if self.beta == 1.0 { v } else { self.beta * v };
                }
            }
        }
        let at = self.trans_a.then(|| transpose(a, k, m));
        let beta = if c.is_some() { self.beta } else { 0.0 };
        let op = mlas::Operands { a: at.as_deref().unwrap_or(a), b, ldb: if self.trans_b { k } else { n }, trans_a: self.trans_a, trans_b: self.trans_b };
        mlas::gemm_unpacked(op, m, n, k, &mut out, c.is_some(), beta == 0.0 || beta == 1.0, 1);
        if let Some(act) = &self.act {
            act.apply(&mut out);
        }
        out
    }
}

/// MatMul's operands (neither transposed; `b` has rows of `ldb`).
fn plain<'a>(a: &'a [f32], b: &'a [f32], ldb: usize) -> mlas::Operands<'a> {
    mlas::Operands { a, b, ldb, trans_a: false, trans_b: false }
}

/// The row-major transpose of the row-major `[rows, cols]` matrix `x`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = x[i * cols + j];
        }
    }
    t
}

struct MatMul {
    m: usize,
    n: usize,
    k: usize,
    /// Batch shape of the output, and each operand's batch strides (0 where broadcast).
    batch: Vec<usize>,
    a_strides: Vec<usize>,
    b_strides: Vec<usize>,
    a_len: usize,
    b_len: usize,
    /// One GEMM over all rows of A (B a single matrix): onnxruntime flattens A when both
    /// operands have rank >= 2, A's rank is at least B's and B has no batch (or when there
    /// is only one matrix product anyway); otherwise it runs a batch of GEMMs.
    flatten: bool,
    /// B is 1-D and A is not: one GEMM per row of A.
    b_vector: bool,
    act: Option<Activation>,
    out_shape: Vec<usize>,
    /// Constant 2-D B packed for the exact path.
    packed: Option<PackedB>,
}

fn build_matmul(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let sa = ctx.in_shape(0)?;
    let sb = ctx.in_shape(1)?;
    if sa.is_empty() || sb.is_empty() {
        return Err(ctx.err("MatMul operands must have rank >= 1"));
    }
    let a2: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.to_vec() };
    let b2: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(ctx.err(format!("inner dimensions differ: {sa:?} x {sb:?}")));
    }
    let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let r = ab.len().max(bb.len());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, r - s.len()).chain(s.iter().copied()).collect() };
    let (pa, pb) = (pad(ab), pad(bb));
    let mut batch = Vec::with_capacity(r);
    for i in 0..r {
        let (x, y) = (pa[i], pb[i]);
        if x != y && x != 1 && y != 1 {
            return Err(ctx.err(format!("batch dimensions of {sa:?} and {sb:?} do not broadcast")));
        }
        batch.push(if x == 1 { y } else { x });
    }
    let bstr = |p: &[usize], mat: usize| -> Vec<usize> {
        let mut s = vec![0; r];
        let mut acc = mat;
        for i in (0..r).rev() {
            s[i] = if p[i] == 1 { 0 } else { acc };
            acc *= p[i];
        }
        s
    };
    let mut out_shape = batch.clone();
    if sa.len() > 1 {
        out_shape.push(m);
    }
    if sb.len() > 1 {
        out_shape.push(n);
    }
    if ctx.out_shapes.first().copied() != Some(out_shape.as_slice()) {
        return Err(ctx.err(format!("output shape {:?}, expected {out_shape:?}", ctx.out_shapes.first())));
    }
    Ok(Box::new(MatMul {
        m,
        n,
        k,
        a_strides: bstr(&pa, m * k),
        b_strides: bstr(&pb, k * n),
        a_len: sa.iter().product(),
        b_len: sb.iter().product(),
        flatten: bb.iter().all(|&d| d == 1) && ((sa.len() >= 2 && sb.len() >= 2 && sa.len() >= sb.len()) || batch.iter().product::<usize>() == 1),
        b_vector: sb.len() == 1 && sa.len() >= 2,
        // onnxruntime pre-packs a 2-D initializer only
        packed: match ctx.const_initializer(1) {
            Some(b) if sb.len() == 2 && b.data.len() == k * n => PackedB::new(&b.data, k, n, false),
            _ => None,
        },
        batch,
        act: ctx.fused,
        out_shape,
    }))
}

impl Op for MatMul {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (m, n, k) = (self.m, self.n, self.k);
        let a = data(inputs, 0, self.a_len)?;
        let b = data(inputs, 1, self.b_len)?;
        let nb: usize = self.batch.iter().product();
        let mut out = crate::kernels::alloc::zeroed(nb * m * n);
        let act = self.act;
        // A's batches are contiguous when it is never broadcast: then rows stack.
        let a_dense = self.a_strides.iter().zip(&self.batch).all(|(&s, &d)| s != 0 || d == 1);
        if let (Some(pb), true) = (&self.packed, a_dense) {
            pb.run(a, nb * m, false, None, &mut out);
        } else if self.b_vector {
            // B 1-D: onnxruntime pads A to [..., M, 1, K], a batch of one-row GEMMs (its M1 kernel)
            let rows = nb * m;
            for (r, o) in out.chunks_mut(1).enumerate() {
                mlas::gemm_unpacked(plain(&a[r * k..(r + 1) * k], b, 1), 1, 1, k, o, false, true, rows);
            }
        } else if self.flatten && a_dense {
            // B computed at run time (a DequantizeLinear output, an activation): MLAS's
            // unpacked order, one GEMM over the flattened rows of A
            mlas::gemm_unpacked(plain(a, b, n), nb * m, n, k, &mut out, false, true, 1);
        } else if nb > 0 && m * n > 0 {
            let offsets = |bi: usize| -> (usize, usize) {
                let (mut rem, mut oa, mut ob) = (bi, 0, 0);
                for d in (0..self.batch.len()).rev() {
                    let i = rem % self.batch[d];
                    rem /= self.batch[d];
                    oa += i * self.a_strides[d];
                    ob += i * self.b_strides[d];
                }
                (oa, ob)
            };
            // a batch of GEMMs (QK^T, attention x V): each in MLAS's unpacked order, with the
            // thread parts of a batch of `nb`
            out.par_chunks_mut(m * n).enumerate().for_each(|(bi, o)| {
                let (oa, ob) = offsets(bi);
                match &self.packed {
                    Some(pb) => pb.run(&a[oa..oa + m * k], m, false, None, o),
                    None => mlas::gemm_unpacked(plain(&a[oa..oa + m * k], &b[ob..ob + k * n], n), m, n, k, o, false, true, nb),
                }
            });
        }
        if let Some(a) = &act {
            a.apply(&mut out);
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::testutil::*;
    use crate::attrs::AttrValue;
    use crate::kernels::act::Activation;
    use crate::tensor::Tensor;

    fn matmul_ref(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, at: bool, bt: bool) -> Vec<f32> {
        let mut o = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    let x = if at { a[p * m + i] } else { a[i * k + p] };
                    let y = if bt { b[j * k + p] } else { b[p * n + j] };
                    s += x as f64 * y as f64;
                }
                o[i * n + j] = s as f32;
            }
        }
        o
    }

    #[test]
    fn gemm_random_transposes_alpha_beta_and_c_broadcast() {
        let mut r = Rng(3);
        for trial in 0..120u64 {
            let big = trial % 10 == 0;
            let (m, n, k) = if big { (r.range(100, 300), r.range(30, 90), r.range(20, 70)) } else { (r.range(1, 9), r.range(1, 9), r.range(1, 9)) };
            let (ta, tb) = (r.bool(), r.bool());
            let alpha = [1.0, 0.5, -2.0][r.range(0, 2)];
            let beta = [1.0, 0.0, 0.75][r.range(0, 2)];
            let cshape: Option<Vec<usize>> = [None, Some(vec![]), Some(vec![n]), Some(vec![1, n]), Some(vec![m, 1]), Some(vec![m, n])][r.range(0, 5)].clone();
            let a = Tensor::new(if ta { vec![k, m] } else { vec![m, k] }, rnd(m * k, trial));
            let b = Tensor::new(if tb { vec![n, k] } else { vec![k, n] }, rnd(k * n, trial + 77));
            let c = cshape.as_ref().map(|s| Tensor::new(s.clone(), rnd(s.iter().product(), trial + 99)));
            let act = [None, Some(Activation::Relu)][r.range(0, 1)];
            let mut want = matmul_ref(&a.data, &b.data, m, n, k, ta, tb);
            for i in 0..m {
                for j in 0..n {
                    let mut v = alpha * want[i * n + j];
                    if let (Some(c), Some(s)) = (&c, &cshape) {
                        let cv = match s.len() {
                            0 => c.data[0],
                            1 => c.data[j],
                            _ => c.data[if s[0] == 1 { 0 } else { i * s[1] } + if s[1] == 1 { 0 } else { j }],
                        };
                        v += beta * cv;
                    }
                    want[i * n + j] = v;
                }
            }
            apply_ref(act, &mut want);
            let attrs = [
                ("alpha", AttrValue::Float(alpha as f64)),
                ("beta", AttrValue::Float(beta as f64)),
                ("transA", AttrValue::Int(ta as i64)),
                ("transB", AttrValue::Int(tb as i64)),
            ];
            let got = run_op("Gemm", &attrs, &[Some(&a), Some(&b), c.as_ref()], &[false, trial % 2 == 0, true], &[vec![m, n]], act).unwrap();
            assert_close(&got[0], &[m, n], &want, &format!("gemm trial {trial}"));
        }
        let a = Tensor::zeros(&[2, 3]);
        let b = Tensor::zeros(&[4, 5]);
        assert!(run_op("Gemm", &[], &[Some(&a), Some(&b)], &[false, true], &[vec![2, 5]], None).is_err());
        let b = Tensor::zeros(&[3, 5]);
        let c = Tensor::zeros(&[3, 5]);
        assert!(run_op("Gemm", &[], &[Some(&a), Some(&b), Some(&c)], &[false, true, true], &[vec![2, 5]], None).is_err());
        assert!(run_op("Gemm", &[], &[Some(&a), Some(&b)], &[false, true], &[vec![2, 5]], None).is_ok());
    }

    /// numpy matmul: broadcast batch dims, 1-D promotion.
    fn np_matmul(sa: &[usize], a: &[f32], sb: &[usize], b: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let a2: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.to_vec() };
        let b2: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.to_vec() };
        let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let r = ab.len().max(bb.len());
        let pa: Vec<usize> = vec![1; r - ab.len()].into_iter().chain(ab.iter().copied()).collect();
        let pb: Vec<usize> = vec![1; r - bb.len()].into_iter().chain(bb.iter().copied()).collect();
        let batch: Vec<usize> = (0..r).map(|i| pa[i].max(pb[i])).collect();
        let nb: usize = batch.iter().product();
        let mut out = Vec::new();
        for bi in 0..nb {
            let mut idx = vec![0; r];
            let mut rem = bi;
            for d in (0..r).rev() {
                idx[d] = rem % batch[d];
                rem /= batch[d];
            }
            let flat = |p: &[usize]| idx.iter().zip(p).fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i });
            let (oa, ob) = (flat(&pa) * m * k, flat(&pb) * k * n);
            out.extend(matmul_ref(&a[oa..oa + m * k], &b[ob..ob + k * n], m, n, k, false, false));
        }
        let mut shape = batch;
        if sa.len() > 1 {
            shape.push(m);
        }
        if sb.len() > 1 {
            shape.push(n);
        }
        (shape, out)
    }

    #[test]
    fn matmul_numpy_semantics_random() {
        let mut r = Rng(5);
        let shapes: &[(&[usize], &[usize])] = &[
            (&[3], &[3]),
            (&[3], &[3, 4]),
            (&[2, 3], &[3]),
            (&[5, 3], &[2, 3, 4]),
            (&[2, 1, 5, 3], &[4, 3, 2]),
            (&[4, 5, 3], &[3, 6]),
            (&[2, 3, 7, 3], &[3, 1]),
            (&[1, 5, 3], &[4, 3, 2]),
            (&[4, 1, 3], &[1, 3, 2]),
            (&[3], &[2, 3, 4]),
            (&[6, 70, 40], &[40, 50]),
            (&[300, 40], &[40, 33]),
            (&[3, 80, 40], &[3, 40, 50]),
        ];
        for (t, (sa, sb)) in shapes.iter().enumerate() {
            let a = Tensor::new(sa.to_vec(), rnd(sa.iter().product(), t as u64));
            let b = Tensor::new(sb.to_vec(), rnd(sb.iter().product(), t as u64 + 50));
            let (oshape, mut want) = np_matmul(sa, &a.data, sb, &b.data);
            let act = if r.bool() { Some(Activation::Relu) } else { None };
            apply_ref(act, &mut want);
            let got = run_op("MatMul", &[], &[Some(&a), Some(&b)], &[false, r.bool()], &[oshape.clone()], act).unwrap();
            assert_close(&got[0], &oshape, &want, &format!("matmul {sa:?} x {sb:?}"));
        }
        let a = Tensor::zeros(&[2, 3]);
        let b = Tensor::zeros(&[4, 5]);
        assert!(run_op("MatMul", &[], &[Some(&a), Some(&b)], &[false, true], &[vec![2, 5]], None).is_err());
        let b = Tensor::zeros(&[3, 5]);
        assert!(run_op("MatMul", &[], &[Some(&a), Some(&b)], &[false, true], &[vec![5, 2]], None).is_err());
        let a = Tensor::zeros(&[2, 2, 3]);
        let b = Tensor::zeros(&[3, 3, 5]);
        assert!(run_op("MatMul", &[], &[Some(&a), Some(&b)], &[false, true], &[vec![3, 2, 5]], None).is_err());
    }
}
