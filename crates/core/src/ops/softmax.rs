//! Softmax and LogSoftmax over one axis (see CONTRACT.md), numerically stable (the row
//! maximum is subtracted before `exp`), parallel over independent rows, in onnxruntime's
//! arithmetic (MLAS's exp polynomial and lane sums, [`SumExpKernel`]), so that a quantizer
//! reading an attention Softmax rounds what the runtime rounds.
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

/// Which of onnxruntime's softmax kernels (MLAS `ComputeSumExpF32Kernel`) this CPU runs:
/// the AVX-512F one when the CPU and OS have AVX-512F, else the FMA3 one. They differ in
/// the exp's range clamp and scaling and in how many lane sums the row is added into, so
/// onnxruntime's Softmax itself differs between the two CPU classes in the last bit; the
/// engine follows the class of the CPU it runs on at every engine level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SumExpKernel {
    Avx512F,
    Fma3,
}

impl SumExpKernel {
    /// The kernel onnxruntime selects on this CPU (CPUs without AVX2 + FMA run MLAS's plain
    /// SSE2 kernel, not mirrored: they get the FMA3 arithmetic).
    pub fn of_cpu() -> SumExpKernel {
        match crate::kernels::detected_level() {
            crate::kernels::SimdLevel::Avx512 => SumExpKernel::Avx512F,
            _ => SumExpKernel::Fma3,
        }
    }
}

/// MLAS's exp constants (`MlasExpConstants`).
mod exp_c {
    pub const LOWER_RANGE: f32 = f32::from_bits(0xc2cf_f1b5); // -103.9720840454
    pub const LOWER_RANGE_SUM_EXP: f32 = f32::from_bits(0xc2b0_c0a5); // -88.3762626647949
    pub const ROUNDING_BIAS: f32 = 12582912.0; // 1.5 * 2^23
    pub const LOG2_RECIPROCAL: f32 = f32::from_bits(0x3fb8_aa3b);
    pub const LOG2_HIGH: f32 = f32::from_bits(0xbf31_7200);
    pub const LOG2_LOW: f32 = f32::from_bits(0xb5bf_be8e);
    pub const POLY: [f32; 5] = [f32::from_bits(0x3c09_2f6e), f32::from_bits(0x3d2a_adad), f32::from_bits(0x3e2a_aa28), f32::from_bits(0x3eff_fffb), 1.0];
    pub const POLY_0: f32 = f32::from_bits(0x3ab4_a000);
    pub const MAXIMUM_EXPONENT: u32 = 0x3F80_0000;
}

/// `exp(x)` for `x = v - max <= 0` as the SumExp kernel computes it, operation by operation:
/// clamp below (`vmaxps`: a NaN passes), range reduction by FMAs, the degree-6 polynomial
/// as an FMA chain, then the scaling by `2^m`: `vscalefps` (AVX-512F, exact into the
/// subnormals) or the integer exponent field (FMA3: zero below `2^-126`).
#[inline(always)]
fn mlas_exp(x: f32, k: SumExpKernel) -> f32 {
    use exp_c::*;
    let lower = if k == SumExpKernel::Avx512F { LOWER_RANGE } else { LOWER_RANGE_SUM_EXP };
    let x = if lower > x { lower } else { x };
    let biased = x.mul_add(LOG2_RECIPROCAL, ROUNDING_BIAS);
    let m = biased - ROUNDING_BIAS;
    let r = m.mul_add(LOG2_HIGH, x);
    let r = m.mul_add(LOG2_LOW, r);
    let mut p = POLY_0;
    for c in POLY {
        p = p.mul_add(r, c);
    }
    p = p.mul_add(r, 1.0);
    match k {
        SumExpKernel::Avx512F => {
            // vscalefps: p * 2^m in one rounding, into the subnormals: p * 2^(m - e) is exact
            // (m - e >= -25, p in [1, 2)), then times 2^e (e = max(m, -126)) rounds once
            let mi = m as i32;
            let e = mi.max(-126);
            let pow = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
            (p * pow(mi - e)) * pow(e)
        }
        SumExpKernel::Fma3 => p * f32::from_bits((biased.to_bits() << 23).wrapping_add(MAXIMUM_EXPONENT)),
    }
}

crate::dispatch_fn!(
    /// `out[i] = mlas_exp(x[i] + neg_max)`, compiled with FMA where the CPU has it (the
    /// exp is a chain of fused multiply-adds: without hardware FMA each is a libm call).
    fn exp_all(x: &[f32], out: &mut [f32], neg_max: f32, avx512: bool) {
        let k = if avx512 { SumExpKernel::Avx512F } else { SumExpKernel::Fma3 };
        for (o, &v) in out.iter_mut().zip(x) {
            *o = mlas_exp(v + neg_max, k);
        }
    }
);

/// MLAS's `ComputeSumExpF32Kernel`: `out[i] = exp(x[i] + neg_max)` and their sum: lane `j`
/// of 16 (AVX-512F) or 8 (FMA3) lanes adds the elements `i = j mod lanes` in order, then
/// the lanes are reduced by the kernel's tree. `out` has the length of `x`.
fn sum_exp(x: &[f32], out: &mut [f32], neg_max: f32, k: SumExpKernel) -> f32 {
    exp_all(crate::kernels::simd_level(), x, out, neg_max, k == SumExpKernel::Avx512F);
    let lanes = if k == SumExpKernel::Avx512F { 16 } else { 8 };
    let mut acc = [0f32; 16];
    for c in out.chunks(lanes) {
        for (a, &e) in acc.iter_mut().zip(c) {
            *a += e;
        }
    }
    let l = if k == SumExpKernel::Avx512F { std::array::from_fn::<f32, 8, _>(|i| acc[i + 8] + acc[i]) } else { std::array::from_fn(|i| acc[i]) };
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// One contiguous row (`inner == 1`) in onnxruntime's arithmetic (`MlasComputeSoftmax`):
/// `y = exp(x - max) * (1 / sum)`, or `y = (x - max) - log(sum)`.
fn row(x: &mut [f32], log: bool, k: SumExpKernel) {
    let m = x.iter().fold(f32::MIN, |a, &b| if a > b { a } else { b });
    let neg = -m;
    let mut e = vec![0f32; x.len()];
    let sum = sum_exp(x, &mut e, neg, k);
    if log {
        let l = sum.ln();
        for v in x.iter_mut() {
            *v = (*v + neg) - l;
        }
    } else {
        let scale = 1.0 / sum;
        for (v, e) in x.iter_mut().zip(&e) {
            *v = e * scale;
        }
    }
}

/// One `[n, inner]` block reduced over `n`: onnxruntime transposes the axis last, so each
/// of the `inner` columns is a row.
fn block(x: &mut [f32], n: usize, inner: usize, log: bool, k: SumExpKernel) {
    let mut r = vec![0f32; n];
    for i in 0..inner {
        for (t, v) in r.iter_mut().enumerate() {
            *v = x[t * inner + i];
        }
        row(&mut r, log, k);
        for (t, v) in r.iter().enumerate() {
            x[t * inner + i] = *v;
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
            let k = SumExpKernel::of_cpu();
            let f = |c: &mut [f32]| {
                for b in c.chunks_mut(blk) {
                    if inner == 1 {
                        row(b, log, k)
                    } else {
                        block(b, n, inner, log, k)
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
    fn both_mlas_kernels_are_close_to_exp_and_differ_only_where_documented() {
        use super::{mlas_exp, sum_exp, SumExpKernel};
        for k in [SumExpKernel::Avx512F, SumExpKernel::Fma3] {
            for i in 0..2000 {
                let x = -87.0 * i as f32 / 2000.0;
                let (got, want) = (mlas_exp(x, k) as f64, (x as f64).exp());
                assert!((got - want).abs() <= 2e-7 * want, "{k:?} exp({x}) = {got}, want {want}");
            }
            let x: Vec<f32> = (0..101).map(|i| -(i as f32) * 0.05).collect();
            let want: f64 = x.iter().map(|&v| (v as f64).exp()).sum();
            assert!((sum_exp(&x, &mut vec![0.0; x.len()], 0.0, k) as f64 - want).abs() < 1e-6 * want, "{k:?} sum");
        }
        // below 2^-126 the FMA3 kernel's exponent field gives 0, vscalefps a subnormal
        assert_eq!(mlas_exp(-100.0, SumExpKernel::Fma3), 0.0);
        assert!(mlas_exp(-100.0, SumExpKernel::Avx512F) > 0.0);
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
