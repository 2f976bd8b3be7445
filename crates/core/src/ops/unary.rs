//! One-input elementwise ops (see CONTRACT.md): activations from [`Activation`] and the math
//! kernels of [`crate::kernels::unary`], applied in place on a copy of the input, in parallel
//! chunks for large tensors.
use super::elementwise::checked;
use super::{reg, BuildCtx, Op, Registry};
use crate::error::Result;
use crate::kernels::act::Activation;
use crate::kernels::bcast::{PAR_CHUNK, PAR_MIN};
use crate::kernels::unary as k;
use crate::kernels::{simd_level, SimdLevel};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    for op in [
        "Relu", "Sigmoid", "Tanh", "Sqrt", "Exp", "Log", "Erf", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos",
        "Sign", "Not", "HardSwish", "HardSigmoid", "LeakyRelu", "Elu", "Softplus", "Gelu", "Clip",
    ] {
        reg(r, op, build);
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Act(Activation),
    Kernel(k::Kernel),
    Elu(f32),
}

impl Kind {
    pub(crate) fn apply(&self, level: SimdLevel, x: &mut [f32]) {
        match *self {
            Kind::Act(a) => a.apply_at(level, x),
            Kind::Kernel(f) => f(level, x),
            Kind::Elu(alpha) => k::elu(level, x, alpha),
        }
    }
}

struct Unary {
    op: String,
    name: String,
    kind: Kind,
    shape: Vec<usize>,
}

impl Op for Unary {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked(&self.op, &self.name, inputs, 0, numel(&self.shape))?;
        let mut y = x.data.clone();
        let level = simd_level();
        if y.len() < PAR_MIN {
            self.kind.apply(level, &mut y);
        } else {
            y.par_chunks_mut(PAR_CHUNK).for_each(|c| self.kind.apply(level, c));
        }
        Ok(vec![Tensor::new(self.shape.clone(), y)])
    }
}

/// Clip whose `min` (input 1) and/or `max` (input 2) are computed at run time (one element
/// each); a bound given as a constant input or attribute is fixed at build time.
struct RuntimeClip {
    name: String,
    lo: Option<f32>,
    hi: Option<f32>,
    shape: Vec<usize>,
}

impl Op for RuntimeClip {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let bound = |i: usize, fixed: Option<f32>, open: f32| -> Result<f32> {
            if let Some(v) = fixed {
                return Ok(v);
            }
            match inputs.get(i).copied().flatten() {
                None => Ok(open),
                Some(t) if t.data.len() == 1 && !t.data[0].is_nan() => Ok(t.data[0]),
                Some(t) => Err(crate::error::Error::node("Clip", &self.name, format!("input {i} must hold one number at run time, got {} values (or NaN)", t.data.len()))),
            }
        };
        let (lo, hi) = (bound(1, self.lo, f32::NEG_INFINITY)?, bound(2, self.hi, f32::INFINITY)?);
        let x = checked("Clip", &self.name, inputs, 0, numel(&self.shape))?;
        let mut y = x.data.clone();
        let level = simd_level();
        let act = Activation::Clip(lo, hi);
        if y.len() < PAR_MIN {
            act.apply_at(level, &mut y);
        } else {
            y.par_chunks_mut(PAR_CHUNK).for_each(|c| act.apply_at(level, c));
        }
        Ok(vec![Tensor::new(self.shape.clone(), y)])
    }
}

/// Clip with bound inputs (as lowered when a bound is not a constant): each bound is a
/// constant of the plan (fixed now) or a value computed at run time.
fn build_runtime_clip(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let fixed = |i: usize| -> Result<Option<f32>> {
        match ctx.const_opt(i) {
            Some(t) if t.data.len() == 1 && !t.data[0].is_nan() => Ok(Some(t.data[0])),
            Some(_) => Err(ctx.err(format!("input {i} must hold one number (not NaN)"))),
            None => Ok(None),
        }
    };
    for i in [1, 2] {
        if let Some(s) = ctx.in_shapes.get(i).copied().flatten() {
            if numel(s) != 1 {
                return Err(ctx.err(format!("input {i} must hold one number, has shape {s:?}")));
            }
        }
    }
    let x = ctx.in_shape(0)?;
    let out = *ctx.out_shapes.first().ok_or_else(|| ctx.err("expects 1 output"))?;
    if numel(x) != numel(out) {
        return Err(ctx.err(format!("output shape {out:?} does not match input shape {x:?}")));
    }
    Ok(Box::new(RuntimeClip { name: ctx.node.name.clone(), lo: fixed(1)?, hi: fixed(2)?, shape: out.to_vec() }))
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.node.op == "Clip" && (ctx.has_input(1) || ctx.has_input(2)) {
        return build_runtime_clip(ctx);
    }
    let kind = kind_of(&ctx.node.op, &ctx.attrs)?.ok_or_else(|| ctx.err(format!("not a unary op: {}", ctx.node.op)))?;
    let x = ctx.in_shape(0)?;
    let out = *ctx.out_shapes.first().ok_or_else(|| ctx.err("expects 1 output"))?;
    if numel(x) != numel(out) {
        return Err(ctx.err(format!("output shape {out:?} does not match input shape {x:?}")));
    }
    Ok(Box::new(Unary { op: ctx.node.op.clone(), name: ctx.node.name.clone(), kind, shape: out.to_vec() }))
}

/// The kernel of unary op `op` with attributes `a` (`None`: not a unary op; a Clip with bound
/// inputs is built by [`build_runtime_clip`], and by a fused chain when they are constants).
pub(crate) fn kind_of(op: &str, a: &crate::attrs::Attrs) -> Result<Option<Kind>> {
    let err = |m: String| crate::error::Error::node(a.op, a.node, m);
    Ok(Some(match op {
        "Relu" => Kind::Act(Activation::Relu),
        "Sigmoid" => Kind::Act(Activation::Sigmoid),
        "Tanh" => Kind::Act(Activation::Tanh),
        "HardSwish" => Kind::Act(Activation::HardSwish),
        "HardSigmoid" => Kind::Act(Activation::HardSigmoid(a.float("alpha", 0.2)?, a.float("beta", 0.5)?)),
        "LeakyRelu" => Kind::Act(Activation::LeakyRelu(a.float("alpha", 0.01)?)),
        "Clip" => {
            let (lo, hi) = (a.float("min", f32::NEG_INFINITY)?, a.float("max", f32::INFINITY)?);
            if lo.is_nan() || hi.is_nan() {
                return Err(err("min and max must not be NaN".into()));
            }
            Kind::Act(Activation::Clip(lo, hi))
        }
        "Elu" => Kind::Elu(a.float("alpha", 1.0)?),
        "Sqrt" => Kind::Kernel(k::sqrt),
        "Exp" => Kind::Kernel(k::exp),
        "Log" => Kind::Kernel(k::log),
        "Erf" => Kind::Kernel(k::erf),
        "Neg" => Kind::Kernel(k::neg),
        "Abs" => Kind::Kernel(k::abs),
        "Reciprocal" => Kind::Kernel(k::reciprocal),
        "Floor" => Kind::Kernel(k::floor),
        "Ceil" => Kind::Kernel(k::ceil),
        "Round" => Kind::Kernel(k::round),
        "Sin" => Kind::Kernel(k::sin),
        "Cos" => Kind::Kernel(k::cos),
        "Sign" => Kind::Kernel(k::sign),
        "Not" => Kind::Kernel(k::not),
        "Softplus" => Kind::Kernel(k::softplus),
        "Gelu" => match a.str("approximate", "none")?.as_str() {
            "none" => Kind::Kernel(k::gelu),
            "tanh" => Kind::Kernel(k::gelu_tanh),
            other => return Err(err(format!("approximate must be \"none\" or \"tanh\", got \"{other}\""))),
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::testutil::*;

    fn one(op: &str, attrs: &str, x: &[f32]) -> Vec<f32> {
        run(op, attrs, vec![inp(&[x.len()], x.to_vec())], &[&[x.len()]]).unwrap().remove(0).data
    }

    #[test]
    fn hand_checked_values() {
        let x = [-2.5f32, -0.5, 0.0, 0.5, 1.5, 2.5];
        assert_eq!(one("Relu", "{}", &x), vec![0., 0., 0., 0.5, 1.5, 2.5]);
        assert_eq!(one("Round", "{}", &x), vec![-2., -0., 0., 0., 2., 2.]);
        assert_eq!(one("Floor", "{}", &x), vec![-3., -1., 0., 0., 1., 2.]);
        assert_eq!(one("Ceil", "{}", &x), vec![-2., -0., 0., 1., 2., 3.]);
        assert_eq!(one("Neg", "{}", &x), vec![2.5, 0.5, -0., -0.5, -1.5, -2.5]);
        assert_eq!(one("Abs", "{}", &x), vec![2.5, 0.5, 0., 0.5, 1.5, 2.5]);
        assert_eq!(one("Sign", "{}", &x), vec![-1., -1., 0., 1., 1., 1.]);
        assert_eq!(one("Not", "{}", &[0., 1.]), vec![1., 0.]);
        assert_eq!(one("Clip", r#"{"min": -1.0, "max": 1}"#, &x), vec![-1., -0.5, 0., 0.5, 1., 1.]);
        assert_eq!(one("Clip", r#"{"min": 0.0}"#, &x), vec![0., 0., 0., 0.5, 1.5, 2.5]);
        // bounds computed at run time (inputs 1 and 2), or one of them a constant of the plan
        let xs = || inp(&[x.len()], x.to_vec());
        let out: &[&[usize]] = &[&[6]];
        assert_eq!(run("Clip", "{}", vec![xs(), inp(&[], vec![-1.0]), inp(&[1], vec![1.0])], out).unwrap()[0].data, vec![-1., -0.5, 0., 0.5, 1., 1.]);
        assert_eq!(run("Clip", "{}", vec![xs(), const_inp(&[], vec![0.0]), inp(&[], vec![0.5])], out).unwrap()[0].data, vec![0., 0., 0., 0.5, 0.5, 0.5]);
        assert!(run("Clip", "{}", vec![xs(), inp(&[2], vec![0.0, 1.0]), inp(&[], vec![0.5])], out).is_err());
        assert_eq!(one("LeakyRelu", r#"{"alpha": 0.5}"#, &x), vec![-1.25, -0.25, 0., 0.5, 1.5, 2.5]);
        assert_eq!(one("HardSigmoid", r#"{"alpha": 0.5, "beta": 0.5}"#, &x), vec![0., 0.25, 0.5, 0.75, 1., 1.]);
        assert_eq!(one("Reciprocal", "{}", &[2., -4.]), vec![0.5, -0.25]);
        assert_eq!(one("Sqrt", "{}", &[4., 2.25]), vec![2., 1.5]);
        assert_close(&one("HardSwish", "{}", &[-4., -1., 0., 1., 4.]), &[0., -1. / 3., 0., 2. / 3., 4.], 1e-6, "hardswish");
        assert_close(&one("Elu", r#"{"alpha": 2.0}"#, &[-1., 1.]), &[2. * ((-1f32).exp() - 1.), 1.], 1e-6, "elu");
        assert_close(&one("Sigmoid", "{}", &[0., 2.]), &[0.5, 0.880_797_1], 1e-6, "sigmoid");
        assert_close(&one("Tanh", "{}", &[0., 1.]), &[0., 0.761_594_2], 1e-6, "tanh");
        assert_close(&one("Exp", "{}", &[0., 1.]), &[1., std::f32::consts::E], 1e-6, "exp");
        assert_close(&one("Log", "{}", &[1., std::f32::consts::E]), &[0., 1.], 1e-6, "log");
        assert_close(&one("Sin", "{}", &[0., 1.]), &[0., 0.841_470_96], 1e-6, "sin");
        assert_close(&one("Cos", "{}", &[0., 1.]), &[1., 0.540_302_3], 1e-6, "cos");
        assert_close(&one("Erf", "{}", &[0.5, -2.0]), &[0.520_499_9, -0.995_322_3], 1e-6, "erf");
        assert_close(&one("Softplus", "{}", &[0., 1.]), &[std::f32::consts::LN_2, 1.313_261_7], 1e-6, "softplus");
        assert_close(&one("Gelu", "{}", &[1., -1.]), &[0.841_344_7, -0.158_655_3], 1e-6, "gelu");
        assert_close(&one("Gelu", r#"{"approximate": "tanh"}"#, &[1.]), &[0.841_192], 1e-5, "gelu tanh");
    }

    #[test]
    fn large_tensors_use_parallel_chunks_consistently() {
        let n = 200_003;
        let x = rand(n, 7, 5.0);
        let got = one("Gelu", "{}", &x);
        let want: Vec<f32> = x.iter().map(|&v| crate::kernels::unary::scalar::gelu(v)).collect();
        assert_close(&got, &want, 0.0, "gelu large");
        let got = one("Sigmoid", "{}", &x);
        let want: Vec<f32> = x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        assert_close(&got, &want, 1e-6, "sigmoid large");
    }

    #[test]
    fn bad_attributes_are_errors() {
        assert!(run("Gelu", r#"{"approximate": "fast"}"#, vec![inp(&[1], vec![0.])], &[&[1]]).is_err());
        assert!(run("LeakyRelu", r#"{"alpha": "x"}"#, vec![inp(&[1], vec![0.])], &[&[1]]).is_err());
        assert!(run("Relu", "{}", vec![inp(&[2], vec![0., 0.])], &[&[3]]).is_err());
    }
}
