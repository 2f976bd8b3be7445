//! Broadcasting elementwise ops: binary arithmetic, comparisons and logic, variadic
//! Min/Max/Sum/Mean, Where and PRelu (see CONTRACT.md). The broadcast plan of each node is
//! made at build time ([`Bcast`]); running is one pass over the output, row by row.
use super::{input, reg, BuildCtx, Op, Registry};
use crate::error::{Error, Result};
use crate::kernels::bcast::{self, Bcast};
use crate::plan::DType;
use crate::tensor::{numel, Tensor};

pub fn register(r: &mut Registry) {
    for op in [
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
    ] {
        reg(r, op, build_binary);
    }
    for op in ["Min", "Max", "Sum", "Mean"] {
        reg(r, op, build_variadic);
    }
    reg(r, "Where", build_where);
    reg(r, "PRelu", build_prelu);
}

/// Input `i` at run time, checked against the element count the op was built for.
pub(crate) fn checked<'t>(op: &str, node: &str, inputs: &[Option<&'t Tensor>], i: usize, n: usize) -> Result<&'t Tensor> {
    let t = input(inputs, i).map_err(|_| Error::node(op, node, format!("input {i} is missing")))?;
    if t.data.len() != n {
        return Err(Error::node(op, node, format!("input {i} has {} elements, expected {n} (shape {:?})", t.data.len(), t.shape)));
    }
    Ok(t)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    /// Division of integers: truncates toward zero.
    DivInt,
    Pow,
    /// Sign of the result follows the divisor (Python's `%`), ONNX Mod with fmod = 0.
    Mod,
    /// C `fmod`: sign follows the dividend, ONNX Mod with fmod = 1.
    FMod,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    Min,
    Max,
    PRelu,
}

#[inline(always)]
fn b2f(b: bool) -> f32 {
    if b {
        1.0
    } else {
        0.0
    }
}

#[inline(always)]
fn py_mod(a: f32, b: f32) -> f32 {
    let r = a % b;
    if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
        r + b
    } else {
        r
    }
}

/// Scalar semantics of each binary op (the reference the tests compare against).
fn scalar(k: Bin, a: f32, b: f32) -> f32 {
    match k {
        Bin::Add => a + b,
        Bin::Sub => a - b,
        Bin::Mul => a * b,
        Bin::Div => a / b,
        Bin::DivInt => (a / b).trunc(),
        Bin::Pow => a.powf(b),
        Bin::Mod => py_mod(a, b),
        Bin::FMod => a % b,
        Bin::Equal => b2f(a == b),
        Bin::Less => b2f(a < b),
        Bin::Greater => b2f(a > b),
        Bin::LessOrEqual => b2f(a <= b),
        Bin::GreaterOrEqual => b2f(a >= b),
        Bin::And => b2f(a != 0.0 && b != 0.0),
        Bin::Or => b2f(a != 0.0 || b != 0.0),
        Bin::Xor => b2f((a != 0.0) != (b != 0.0)),
        Bin::Min => a.min(b),
        Bin::Max => a.max(b),
        Bin::PRelu => {
            if a < 0.0 {
                a * b
            } else {
                a
            }
        }
    }
}

/// Runs `k` under the plan with the closure monomorphised per op so the row loops vectorise.
fn apply(k: Bin, bc: &Bcast, a: &[f32], b: &[f32], out: &mut [f32]) {
    macro_rules! go {
        ($($v:ident),*) => {
            match k {
                $(Bin::$v => bcast::binary(bc, a, b, out, |x, y| scalar(Bin::$v, x, y)),)*
            }
        };
    }
    go!(Add, Sub, Mul, Div, DivInt, Pow, Mod, FMod, Equal, Less, Greater, LessOrEqual, GreaterOrEqual, And, Or, Xor, Min, Max, PRelu)
}

/// One operand of [`apply_src`]: a number or a run of values as long as the output.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    Num(f32),
    Run(&'a [f32]),
}

#[inline(always)]
fn src2<F: Fn(f32, f32) -> f32>(a: Src, b: Src, o: &mut [f32], f: F) {
    let n = o.len();
    match (a, b) {
        (Src::Num(x), Src::Num(y)) => o.fill(f(x, y)),
        (Src::Num(x), Src::Run(b)) => {
            for (o, &y) in o.iter_mut().zip(&b[..n]) {
                *o = f(x, y);
            }
        }
        (Src::Run(a), Src::Num(y)) => {
            for (o, &x) in o.iter_mut().zip(&a[..n]) {
                *o = f(x, y);
            }
        }
        (Src::Run(a), Src::Run(b)) => {
            for ((o, &x), &y) in o.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                *o = f(x, y);
            }
        }
    }
}

/// `out = k(a, b)` over one run, in the same arithmetic as the op (fused elementwise chains,
/// see `chain.rs`).
pub(crate) fn apply_src(k: Bin, a: Src, b: Src, out: &mut [f32]) {
    macro_rules! go {
        ($($v:ident),*) => {
            match k {
                $(Bin::$v => src2(a, b, out, |x, y| scalar(Bin::$v, x, y)),)*
            }
        };
    }
    go!(Add, Sub, Mul, Div, DivInt, Pow, Mod, FMod, Equal, Less, Greater, LessOrEqual, GreaterOrEqual, And, Or, Xor, Min, Max, PRelu)
}

/// The arithmetic of a float two-input node `op` that a fused chain may run (`None`: not one).
pub(crate) fn chainable_bin(op: &str) -> Option<Bin> {
    Some(match op {
        "Add" => Bin::Add,
        "Sub" => Bin::Sub,
        "Mul" => Bin::Mul,
        "Div" => Bin::Div,
        "Min" => Bin::Min,
        "Max" => Bin::Max,
        _ => return None,
    })
}

fn plan(ctx: &BuildCtx, ins: &[&[usize]], out: &[usize]) -> Result<Bcast> {
    Bcast::new(ins, out).map_err(|m| ctx.err(m))
}

struct Binary {
    op: String,
    name: String,
    kind: Bin,
    bc: Bcast,
    out_shape: Vec<usize>,
}

impl Op for Binary {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let a = checked(&self.op, &self.name, inputs, 0, self.bc.in_numel[0])?;
        let b = checked(&self.op, &self.name, inputs, 1, self.bc.in_numel[1])?;
        let mut out = vec![0.0; self.bc.out_numel];
        apply(self.kind, &self.bc, &a.data, &b.data, &mut out);
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

fn build_binary(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let is_int = ctx.in_dtypes.first().copied().flatten() == Some(DType::Int) && ctx.out_dtypes.first() != Some(&DType::Float);
    let kind = match ctx.node.op.as_str() {
        "Add" => Bin::Add,
        "Sub" => Bin::Sub,
        "Mul" => Bin::Mul,
        "Div" if is_int => Bin::DivInt,
        "Div" => Bin::Div,
        "Pow" => Bin::Pow,
        "Mod" => match ctx.attrs.int("fmod", 0)? {
            0 => Bin::Mod,
            1 => Bin::FMod,
            v => return Err(ctx.err(format!("fmod must be 0 or 1, got {v}"))),
        },
        "Equal" => Bin::Equal,
        "Less" => Bin::Less,
        "Greater" => Bin::Greater,
        "LessOrEqual" => Bin::LessOrEqual,
        "GreaterOrEqual" => Bin::GreaterOrEqual,
        "And" => Bin::And,
        "Or" => Bin::Or,
        "Xor" => Bin::Xor,
        other => return Err(ctx.err(format!("not a binary elementwise op: {other}"))),
    };
    if ctx.in_shapes.len() != 2 || ctx.out_shapes.len() != 1 {
        return Err(ctx.err("expects 2 inputs and 1 output"));
    }
    let out = ctx.out_shapes[0];
    let bc = plan(ctx, &[ctx.in_shape(0)?, ctx.in_shape(1)?], out)?;
    Ok(Box::new(Binary { op: ctx.node.op.clone(), name: ctx.node.name.clone(), kind, bc, out_shape: out.to_vec() }))
}

fn build_prelu(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let slope = ctx.in_shape(1)?;
    let out = *ctx.out_shapes.first().ok_or_else(|| ctx.err("expects 1 output"))?;
    if out != x {
        return Err(ctx.err(format!("output shape {out:?} differs from input shape {x:?}")));
    }
    // ONNX also allows a 1-D slope of size C for x of shape [N, C, ...] in old models
    let slope_b: Vec<usize> = if slope.len() == 1 && x.len() >= 2 && slope[0] == x[1] && slope[0] != x[x.len() - 1] {
        let mut s = vec![1; x.len() - 1];
        s[0] = slope[0];
        s
    } else {
        slope.to_vec()
    };
    let mut bc = plan(ctx, &[x, &slope_b], out)?;
    bc.in_numel[1] = numel(slope);
    Ok(Box::new(Binary { op: ctx.node.op.clone(), name: ctx.node.name.clone(), kind: Bin::PRelu, bc, out_shape: out.to_vec() }))
}

struct Variadic {
    op: String,
    name: String,
    kind: Bin,
    mean: bool,
    /// `steps[0]` combines inputs 0 and 1 (or broadcasts input 0 when there is one input);
    /// `steps[i]` combines the running result with input `i + 1`.
    steps: Vec<Bcast>,
    out_shape: Vec<usize>,
}

impl Op for Variadic {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let n = numel(&self.out_shape);
        let x0 = checked(&self.op, &self.name, inputs, 0, self.steps[0].in_numel[0])?;
        let mut acc = vec![0.0; n];
        let count = self.steps.len() + if self.steps[0].strides.len() == 2 { 1 } else { 0 };
        if self.steps[0].strides.len() == 1 {
            bcast::expand(&self.steps[0], &x0.data, &mut acc);
        } else {
            let mut tmp = vec![0.0; n];
            for (i, bc) in self.steps.iter().enumerate() {
                let x = checked(&self.op, &self.name, inputs, i + 1, bc.in_numel[1])?;
                if i == 0 {
                    apply(self.kind, bc, &x0.data, &x.data, &mut acc);
                } else {
                    apply(self.kind, bc, &acc, &x.data, &mut tmp);
                    std::mem::swap(&mut acc, &mut tmp);
                }
            }
        }
        if self.mean {
            let c = count as f32;
            for v in acc.iter_mut() {
                *v /= c;
            }
        }
        Ok(vec![Tensor::new(self.out_shape.clone(), acc)])
    }
}

fn build_variadic(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let (kind, mean) = match ctx.node.op.as_str() {
        "Min" => (Bin::Min, false),
        "Max" => (Bin::Max, false),
        "Sum" => (Bin::Add, false),
        "Mean" => (Bin::Add, true),
        other => return Err(ctx.err(format!("not a variadic op: {other}"))),
    };
    let out = *ctx.out_shapes.first().ok_or_else(|| ctx.err("expects 1 output"))?;
    let n = ctx.in_shapes.len();
    if n == 0 {
        return Err(ctx.err("needs at least one input"));
    }
    let shapes: Vec<&[usize]> = (0..n).map(|i| ctx.in_shape(i)).collect::<Result<_>>()?;
    let mut steps = Vec::new();
    if n == 1 {
        steps.push(plan(ctx, &[shapes[0]], out)?);
    } else {
        steps.push(plan(ctx, &[shapes[0], shapes[1]], out)?);
        for s in &shapes[2..] {
            steps.push(plan(ctx, &[out, s], out)?);
        }
    }
    Ok(Box::new(Variadic { op: ctx.node.op.clone(), name: ctx.node.name.clone(), kind, mean, steps, out_shape: out.to_vec() }))
}

struct Where {
    name: String,
    bc: Bcast,
    out_shape: Vec<usize>,
}

impl Op for Where {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let c = checked("Where", &self.name, inputs, 0, self.bc.in_numel[0])?;
        let a = checked("Where", &self.name, inputs, 1, self.bc.in_numel[1])?;
        let b = checked("Where", &self.name, inputs, 2, self.bc.in_numel[2])?;
        let mut out = vec![0.0; self.bc.out_numel];
        bcast::ternary(&self.bc, &c.data, &a.data, &b.data, &mut out, |c, a, b| if c != 0.0 { a } else { b });
        Ok(vec![Tensor::new(self.out_shape.clone(), out)])
    }
}

fn build_where(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let out = *ctx.out_shapes.first().ok_or_else(|| ctx.err("expects 1 output"))?;
    if ctx.in_shapes.len() != 3 {
        return Err(ctx.err("expects 3 inputs"));
    }
    let bc = plan(ctx, &[ctx.in_shape(0)?, ctx.in_shape(1)?, ctx.in_shape(2)?], out)?;
    Ok(Box::new(Where { name: ctx.node.name.clone(), bc, out_shape: out.to_vec() }))
}

/// Builds one-node plans for op tests.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::attrs::AttrValue;
    use crate::error::Result;
    use crate::plan::{ConstDef, DType, NodeDef, PlanDef, ValueDef};
    use crate::{Executor, Tensor, WeightStore};
    use std::collections::HashMap;

    pub struct In {
        pub shape: Vec<usize>,
        pub data: Vec<f32>,
        pub dtype: DType,
        pub constant: bool,
    }

    pub fn inp(shape: &[usize], data: Vec<f32>) -> In {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        In { shape: shape.to_vec(), data, dtype: DType::Float, constant: false }
    }

    pub fn int_inp(shape: &[usize], data: Vec<f32>) -> In {
        In { dtype: DType::Int, ..inp(shape, data) }
    }

    pub fn const_inp(shape: &[usize], data: Vec<f32>) -> In {
        In { constant: true, ..inp(shape, data) }
    }

    /// Runs `op` with attributes given as JSON, inputs, and output shapes (all float).
    pub fn run(op: &str, attrs: &str, ins: Vec<In>, outs: &[&[usize]]) -> Result<Vec<Tensor>> {
        let outs: Vec<(Vec<usize>, DType)> = outs.iter().map(|s| (s.to_vec(), DType::Float)).collect();
        run_typed(op, attrs, ins, &outs)
    }

    pub fn run_typed(op: &str, attrs: &str, ins: Vec<In>, outs: &[(Vec<usize>, DType)]) -> Result<Vec<Tensor>> {
        let attrs: HashMap<String, AttrValue> = serde_json::from_str(attrs).expect("attrs json");
        let mut values = Vec::new();
        let mut inputs = Vec::new();
        let mut constants = Vec::new();
        let mut feeds = Vec::new();
        let store = WeightStore::new();
        for (i, x) in ins.into_iter().enumerate() {
            values.push(ValueDef { name: format!("in{i}"), shape: x.shape.clone(), dtype: x.dtype });
            if x.constant {
                store.insert(format!("w{i}"), Tensor::new(x.shape, x.data));
                constants.push(ConstDef { value: i, weight: format!("w{i}"), folded: false });
            } else {
                inputs.push(i);
                feeds.push(Tensor::new(x.shape, x.data));
            }
        }
        let nin = values.len();
        for (j, (s, d)) in outs.iter().enumerate() {
            values.push(ValueDef { name: format!("out{j}"), shape: s.clone(), dtype: *d });
        }
        let outputs: Vec<usize> = (nin..values.len()).collect();
        let node = NodeDef {
            op: op.to_string(),
            name: "n0".into(),
            inputs: (0..nin).map(Some).collect(),
            outputs: outputs.clone(),
            attrs,
            opset: 17,
        };
        let plan = PlanDef { values, inputs, outputs, constants, nodes: vec![node] };
        let ex = Executor::new(plan, &store)?;
        ex.run(feeds, None)
    }

    /// Deterministic pseudo-random data in [-range, range].
    pub fn rand(n: usize, seed: u64, range: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * range
            })
            .collect()
    }

    pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * w.abs().max(1.0);
            assert!(ok, "{what}: element {i}: got {g}, want {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::tensor::strides;

    /// Naive numpy broadcast reference: out[idx] = f(a[idx mapped], b[idx mapped]).
    fn naive(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize], out: &[usize], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        let map = |s: &[usize], oi: &[usize]| -> usize {
            let st = strides(s);
            let pad = out.len() - s.len();
            (0..s.len()).map(|j| if s[j] == 1 { 0 } else { oi[pad + j] * st[j] }).sum()
        };
        let n = numel(out);
        let os = strides(out);
        (0..n)
            .map(|i| {
                let oi: Vec<usize> = (0..out.len()).map(|d| (i / os[d]) % out[d]).collect();
                f(a[map(sa, &oi)], b[map(sb, &oi)])
            })
            .collect()
    }

    fn bshape(a: &[usize], b: &[usize]) -> Vec<usize> {
        let r = a.len().max(b.len());
        (0..r)
            .map(|i| {
                let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
                let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
                da.max(db)
            })
            .collect()
    }

    const SHAPES: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4, 5], &[3, 1, 1]),
        (&[2, 3, 4, 5], &[1]),
        (&[2, 3, 4, 5], &[5]),
        (&[2, 3, 4, 5], &[2, 1, 4, 1]),
        (&[2, 1, 4, 1], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[1, 3, 1, 1]),
        (&[], &[3, 2]),
        (&[4, 1], &[1, 5]),
        (&[3, 1, 5], &[4, 1]),
        // large enough for the parallel paths
        (&[4, 64, 32, 32], &[64, 1, 1]),
        (&[4, 64, 32, 32], &[4, 64, 32, 32]),
        (&[4, 64, 32, 32], &[1]),
        (&[4, 1, 32, 32], &[4, 64, 1, 32]),
    ];

    #[test]
    fn binary_ops_match_naive_broadcast() {
        let ops: &[(&str, Bin)] = &[
            ("Add", Bin::Add),
            ("Sub", Bin::Sub),
            ("Mul", Bin::Mul),
            ("Div", Bin::Div),
            ("Greater", Bin::Greater),
            ("Max", Bin::Max),
            ("Pow", Bin::Pow),
        ];
        for (k, (sa, sb)) in SHAPES.iter().enumerate() {
            let out = bshape(sa, sb);
            let a = rand(numel(sa), k as u64, 3.0);
            let mut b = rand(numel(sb), 100 + k as u64, 3.0);
            for (op, kind) in ops {
                if *op == "Pow" {
                    b = b.iter().map(|v| v.round()).collect();
                }
                let want = naive(&a, sa, &b, sb, &out, |x, y| scalar(*kind, x, y));
                let got = run(op, "{}", vec![inp(sa, a.clone()), inp(sb, b.clone())], &[&out]).unwrap();
                assert_eq!(got[0].shape, out);
                assert_close(&got[0].data, &want, 0.0, &format!("{op} {sa:?} {sb:?}"));
            }
        }
    }

    #[test]
    fn hand_checked_arithmetic() {
        let r = run("Add", "{}", vec![inp(&[2, 2], vec![1., 2., 3., 4.]), inp(&[2], vec![10., 20.])], &[&[2, 2]]).unwrap();
        assert_eq!(r[0].data, vec![11., 22., 13., 24.]);
        let r = run("Sub", "{}", vec![inp(&[2, 1], vec![1., 2.]), inp(&[3], vec![1., 2., 3.])], &[&[2, 3]]).unwrap();
        assert_eq!(r[0].data, vec![0., -1., -2., 1., 0., -1.]);
        // integer division truncates toward zero
        let outs = [(vec![4], DType::Int)];
        let r = run_typed("Div", "{}", vec![int_inp(&[4], vec![7., -7., 7., -7.]), int_inp(&[4], vec![2., 2., -2., -2.])], &outs).unwrap();
        assert_eq!(r[0].data, vec![3., -3., -3., 3.]);
        let r = run("Div", "{}", vec![inp(&[2], vec![7., -7.]), inp(&[1], vec![2.])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![3.5, -3.5]);
        // Mod: Python sign (fmod=0) and C fmod (fmod=1)
        let a = vec![5., -5., 5., -5., 4.];
        let b = vec![3., 3., -3., -3., 2.];
        let r = run("Mod", "{}", vec![inp(&[5], a.clone()), inp(&[5], b.clone())], &[&[5]]).unwrap();
        assert_eq!(r[0].data, vec![2., 1., -1., -2., 0.]);
        let r = run("Mod", r#"{"fmod": 1}"#, vec![inp(&[5], a), inp(&[5], b)], &[&[5]]).unwrap();
        assert_eq!(r[0].data, vec![2., -2., 2., -2., 0.]);
        let r = run("Pow", "{}", vec![inp(&[3], vec![2., 3., 4.]), inp(&[], vec![2.])], &[&[3]]).unwrap();
        assert_eq!(r[0].data, vec![4., 9., 16.]);
    }

    #[test]
    fn comparisons_and_logic() {
        let a = vec![1., 2., 3.];
        let b = vec![2.];
        let cases: &[(&str, [f32; 3])] = &[
            ("Equal", [0., 1., 0.]),
            ("Less", [1., 0., 0.]),
            ("Greater", [0., 0., 1.]),
            ("LessOrEqual", [1., 1., 0.]),
            ("GreaterOrEqual", [0., 1., 1.]),
        ];
        for (op, want) in cases {
            let r = run(op, "{}", vec![inp(&[3], a.clone()), inp(&[1], b.clone())], &[&[3]]).unwrap();
            assert_eq!(r[0].data, want.to_vec(), "{op}");
        }
        let p = vec![0., 0., 1., 1.];
        let q = vec![0., 1., 0., 1.];
        for (op, want) in [("And", [0., 0., 0., 1.]), ("Or", [0., 1., 1., 1.]), ("Xor", [0., 1., 1., 0.])] {
            let r = run(op, "{}", vec![inp(&[4], p.clone()), inp(&[4], q.clone())], &[&[4]]).unwrap();
            assert_eq!(r[0].data, want.to_vec(), "{op}");
        }
    }

    #[test]
    fn variadic_ops() {
        let x0 = inp(&[2, 1], vec![1., 4.]);
        let x1 = inp(&[3], vec![2., 3., 5.]);
        let x2 = inp(&[1], vec![3.]);
        let r = run("Max", "{}", vec![x0, x1, x2], &[&[2, 3]]).unwrap();
        assert_eq!(r[0].data, vec![3., 3., 5., 4., 4., 5.]);
        let r = run("Min", "{}", vec![inp(&[2, 1], vec![1., 4.]), inp(&[3], vec![2., 3., 5.])], &[&[2, 3]]).unwrap();
        assert_eq!(r[0].data, vec![1., 1., 1., 2., 3., 4.]);
        let r = run("Sum", "{}", vec![inp(&[2], vec![1., 2.]), inp(&[2], vec![10., 20.]), inp(&[1], vec![100.])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![111., 122.]);
        let r = run("Mean", "{}", vec![inp(&[2], vec![1., 2.]), inp(&[2], vec![3., 5.]), inp(&[1], vec![2.])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![2., 3.]);
        let r = run("Sum", "{}", vec![inp(&[2], vec![1., 2.])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![1., 2.]);
        let r = run("Mean", "{}", vec![inp(&[2], vec![1., 2.])], &[&[2]]).unwrap();
        assert_eq!(r[0].data, vec![1., 2.]);
    }

    #[test]
    fn where_and_prelu() {
        let r = run(
            "Where",
            "{}",
            vec![inp(&[2, 1], vec![1., 0.]), inp(&[3], vec![1., 2., 3.]), inp(&[], vec![-1.])],
            &[&[2, 3]],
        )
        .unwrap();
        assert_eq!(r[0].data, vec![1., 2., 3., -1., -1., -1.]);
        // randomized Where against the naive reference
        let (sc, sa, sb, so): (&[usize], &[usize], &[usize], &[usize]) = (&[2, 1, 4, 1], &[3, 1, 1], &[5], &[2, 3, 4, 5]);
        let c: Vec<f32> = rand(numel(sc), 1, 1.0).iter().map(|v| if *v > 0.0 { 1.0 } else { 0.0 }).collect();
        let a = rand(numel(sa), 2, 1.0);
        let b = rand(numel(sb), 3, 1.0);
        let r = run("Where", "{}", vec![inp(sc, c.clone()), inp(sa, a.clone()), inp(sb, b.clone())], &[so]).unwrap();
        let ca = naive(&c, sc, &a, sa, so, |c, a| if c != 0.0 { a } else { f32::NAN });
        let ab = naive(&vec![0.0; numel(so)], so, &b, sb, so, |_, b| b);
        let want: Vec<f32> = ca.iter().zip(&ab).map(|(x, y)| if x.is_nan() { *y } else { *x }).collect();
        assert_eq!(r[0].data, want);

        let r = run("PRelu", "{}", vec![inp(&[1, 2, 2], vec![-1., 2., -3., 4.]), inp(&[2, 1], vec![0.5, 0.1])], &[&[1, 2, 2]]).unwrap();
        assert_close(&r[0].data, &[-0.5, 2., -0.3, 4.], 1e-7, "prelu");
        // legacy 1-D slope per channel
        let r = run("PRelu", "{}", vec![inp(&[1, 2, 3], vec![-1., -1., -1., -2., 2., -2.]), inp(&[2], vec![0.5, 0.25])], &[&[1, 2, 3]]).unwrap();
        assert_eq!(r[0].data, vec![-0.5, -0.5, -0.5, -0.5, 2., -0.5]);
    }

    #[test]
    fn bad_shapes_are_build_errors() {
        assert!(run("Add", "{}", vec![inp(&[2, 3], vec![0.; 6]), inp(&[4], vec![0.; 4])], &[&[2, 3]]).is_err());
        assert!(run("Add", "{}", vec![inp(&[2, 3], vec![0.; 6]), inp(&[3], vec![0.; 3])], &[&[2, 4]]).is_err());
        assert!(run("Mod", r#"{"fmod": 2}"#, vec![inp(&[1], vec![0.]), inp(&[1], vec![1.])], &[&[1]]).is_err());
        assert!(run("Where", "{}", vec![inp(&[2], vec![0.; 2]), inp(&[3], vec![0.; 3]), inp(&[1], vec![0.])], &[&[2]]).is_err());
    }
}
