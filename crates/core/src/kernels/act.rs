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

dispatch_fn!(fn sigmoid(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
});

dispatch_fn!(fn tanh(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.tanh();
    }
});
