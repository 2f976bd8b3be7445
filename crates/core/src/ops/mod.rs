//! Ops, registered by ONNX op type in a table (see [`registry`]). Each file registers the
//! ops it implements; an op is built once per plan node (weights can be packed at build
//! time) and run many times.

use crate::attrs::Attrs;
use crate::error::{Error, Result};
use crate::kernels::act::Activation;
use crate::plan::{DType, NodeDef};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

pub mod basic;
pub mod conv;
pub mod matmul;
pub mod pool;
pub mod norm;
pub mod elementwise;
pub mod unary;
pub mod movement;
pub mod reduce;
pub mod resize;
pub mod softmax;
pub mod qdq;
pub(crate) mod chain;
pub mod rnn;

/// Everything an op may look at when it is built.
pub struct BuildCtx<'a> {
    pub node: &'a NodeDef,
    pub attrs: Attrs<'a>,
    /// Static shape of each input (`None` for an omitted optional input).
    pub in_shapes: Vec<Option<&'a [usize]>>,
    pub in_dtypes: Vec<Option<DType>>,
    pub out_shapes: Vec<&'a [usize]>,
    pub out_dtypes: Vec<DType>,
    /// The value of each input that is a constant of the plan (weights, folded constants).
    pub consts: Vec<Option<Arc<Tensor>>>,
    /// Whether each constant input is one that onnxruntime sees as a constant initializer
    /// (an initializer or a Constant node of the model), which its MatMul and Gemm pre-pack.
    /// False for values the plan folded (a DequantizeLinear of an integer weight in a QDQ
    /// model, a Transpose of a weight) and for the simulation's weight variants (exported as
    /// DequantizeLinear outputs): onnxruntime computes those at run time and multiplies them
    /// in its unpacked order (graph optimizations off).
    pub initializer: Vec<bool>,
    /// An activation the executor fused into this node (only offered to ops that
    /// return true from [`Registration::fuses_activation`]).
    pub fused: Option<Activation>,
    /// A per-output-channel affine `y = x * a[c] + b[c]` (a BatchNormalization with constant
    /// parameters) the executor fused into a Conv: applied after the bias and before
    /// [`Self::fused`], in the unfused op's arithmetic.
    pub post: Option<Arc<(Vec<f32>, Vec<f32>)>>,
}

impl<'a> BuildCtx<'a> {
    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::node(&self.node.op, &self.node.name, msg)
    }
    /// Shape of input `i`, or an error naming the node when it is missing.
    pub fn in_shape(&self, i: usize) -> Result<&'a [usize]> {
        self.in_shapes.get(i).copied().flatten().ok_or_else(|| self.err(format!("input {i} is required")))
    }
    pub fn has_input(&self, i: usize) -> bool {
        matches!(self.in_shapes.get(i), Some(Some(_)))
    }
    /// Constant value of input `i`, or an error saying that it must be constant.
    pub fn const_input(&self, i: usize) -> Result<Arc<Tensor>> {
        self.consts
            .get(i)
            .cloned()
            .flatten()
            .ok_or_else(|| self.err(format!("input {i} must be a constant (initializer or folded value)")))
    }
    pub fn const_opt(&self, i: usize) -> Option<Arc<Tensor>> {
        self.consts.get(i).cloned().flatten()
    }
    /// Constant value of input `i` when it is an initializer in onnxruntime's eyes (see
    /// [`Self::initializer`]): what its MatMul and Gemm pre-pack.
    pub fn const_initializer(&self, i: usize) -> Option<Arc<Tensor>> {
        self.const_opt(i).filter(|_| self.initializer.get(i).copied().unwrap_or(false))
    }
}

/// A built op. `run` gets the inputs in node order (`None` for omitted optional inputs)
/// and returns the outputs in node order, with the shapes the plan declares.
pub trait Op: Send + Sync {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>>;
}

pub type BuildFn = fn(&BuildCtx) -> Result<Box<dyn Op>>;

#[derive(Clone, Copy)]
pub struct Registration {
    pub build: BuildFn,
    /// Whether a following elementwise activation may be fused into this op's epilogue.
    pub fuses_activation: bool,
}

pub type Registry = HashMap<&'static str, Registration>;

pub fn reg(r: &mut Registry, op: &'static str, build: BuildFn) {
    r.insert(op, Registration { build, fuses_activation: false });
}

pub fn reg_fusing(r: &mut Registry, op: &'static str, build: BuildFn) {
    r.insert(op, Registration { build, fuses_activation: true });
}

/// The op table: ONNX op type -> builder.
pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = Registry::new();
        basic::register(&mut r);
        conv::register(&mut r);
        matmul::register(&mut r);
        pool::register(&mut r);
        norm::register(&mut r);
        elementwise::register(&mut r);
        unary::register(&mut r);
        movement::register(&mut r);
        reduce::register(&mut r);
        resize::register(&mut r);
        softmax::register(&mut r);
        qdq::register(&mut r);
        rnn::register(&mut r);
        r
    })
}

/// Op types the engine can run, sorted (for error messages and `mpq inspect`).
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<_> = registry().keys().copied().collect();
    v.sort();
    v
}

/// Helper for ops with one input and one output computed elementwise.
pub fn input<'t>(inputs: &[Option<&'t Tensor>], i: usize) -> Result<&'t Tensor> {
    inputs.get(i).copied().flatten().ok_or_else(|| Error::Plan(format!("missing input {i}")))
}
