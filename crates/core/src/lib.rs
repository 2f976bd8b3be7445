//! mpq-core: the pure-Rust engine of onnx-mpq.
//!
//! A graph is lowered (in TypeScript) into a [`plan::PlanDef`] with static shapes and handed
//! to [`exec::Executor`], which builds one [`ops::Op`] per node (ops are registered by type in
//! [`ops::registry`]) and runs them. Weights live in a [`plan::WeightStore`] shared by plans.
//! Every tensor is `f32`; integer and boolean values are stored as exact `f32` numbers.

pub mod attrs;
pub mod error;
pub mod exec;
pub mod gptq;
pub mod hessian;
pub mod kernels;
pub mod limits;
pub mod ops;
pub mod plan;
pub mod sim;
pub mod ranges;
pub mod stats;
pub mod tensor;
#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
pub use exec::Executor;
pub use plan::{PlanDef, WeightStore};
pub use tensor::Tensor;
