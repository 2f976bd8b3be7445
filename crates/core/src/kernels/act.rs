//! Elementwise activations, usable as a fused GEMM/conv epilogue.
use super::{simd_level, SimdLevel};
use crate::dispatch_fn;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Clip(f32, f32),
    LeakyRelu(f32),
    /// y = max(0, min(1, alpha * x + beta))
    HardSigmoid(f32, f32),
    HardSwish,
    Sigmoid,
    Tanh,
}

impl Activation {
    /// Applies the activation in place with the CPU's best kernel.
    pub fn apply(&self, x: &mut [f32]) {
        self.apply_at(simd_level(), x)
    }

    pub fn apply_at(&self, level: SimdLevel, x: &mut [f32]) {
        match *self {
            Activation::Relu => clip(level, x, 0.0, f32::INFINITY),
            Activation::Clip(lo, hi) => clip(level, x, lo, hi),
            Activation::LeakyRelu(a) => leaky(level, x, a),
            Activation::HardSigmoid(a, b) => hard_sigmoid(level, x, a, b),
            Activation::HardSwish => hard_swish(level, x),
            Activation::Sigmoid => sigmoid(level, x),
            Activation::Tanh => tanh(level, x),
        }
    }
}

dispatch_fn!(fn clip(x: &mut [f32], lo: f32, hi: f32) {
    for v in x.iter_mut() {
        *v = v.max(lo).min(hi);
    }
});

dispatch_fn!(fn leaky(x: &mut [f32], a: f32) {
    for v in x.iter_mut() {
        *v = if *v < 0.0 { *v * a } else { *v };
    }
});

dispatch_fn!(fn hard_sigmoid(x: &mut [f32], a: f32, b: f32) {
    for v in x.iter_mut() {
        *v = (a * *v + b).max(0.0).min(1.0);
    }
});

dispatch_fn!(fn hard_swish(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = *v * (*v * (1.0 / 6.0) + 0.5).max(0.0).min(1.0);
    }
});

/// The logistic function as ONNX Runtime's MLAS computes it on x86-64 (Eigen's rational
/// approximation over [-18, 18], Horner steps fused-multiply-added, output clamped to
/// [0, 1]), so that a sigmoid feeding a quantizer rounds exactly as it does in the runtime.
/// Within 1e-7 absolute of the exact function.
pub mod logistic {
    pub const LOWER: f32 = -18.0;
    pub const UPPER: f32 = 18.0;
    pub const ALPHA: [f32; 5] = [4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03, 2.48287947061529e-01];
    pub const BETA: [f32; 6] =
        [6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01];

    #[inline(always)]
    pub fn eval(x: f32) -> f32 {
        let v = x.max(LOWER).min(UPPER);
        let x2 = v * v;
        let mut p = ALPHA[0];
        for a in &ALPHA[1..] {
            p = p.mul_add(x2, *a);
        }
        p *= v;
        let mut q = BETA[0];
        for b in &BETA[1..] {
            q = q.mul_add(x2, *b);
        }
        (p / q + 0.5).max(0.0).min(1.0)
    }
}

dispatch_fn!(fn sigmoid(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = logistic::eval(*v);
    }
});

dispatch_fn!(fn tanh(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.tanh();
    }
});
