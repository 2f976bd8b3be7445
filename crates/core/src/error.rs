use thiserror::Error;

/// The one error type of the core. Every variant carries enough context (op, node, tensor,
/// shape) for the message to say what is wrong and where.
#[derive(Debug, Error)]
pub enum Error {
    #[error("op '{op}' (node '{node}') is not supported by the engine")]
    UnsupportedOp { op: String, node: String },
    #[error("node '{node}' ({op}): {msg}")]
    BadNode { op: String, node: String, msg: String },
    #[error("node '{node}' ({op}): attribute '{attr}': {msg}")]
    BadAttr { op: String, node: String, attr: String, msg: String },
    #[error("input '{name}': expected shape {expected:?}, got {got:?}")]
    InputShape { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("tensor '{name}': {msg}")]
    BadTensor { name: String, msg: String },
    #[error("weight '{0}' is not in the weight store")]
    MissingWeight(String),
    #[error("invalid plan: {0}")]
    Plan(String),
    /// A tensor or working set over the size limits (see [`crate::limits`]).
    #[error("{0}")]
    TooLarge(String),
    /// Input data the engine cannot work with (non-finite statistics, ...).
    #[error("{0}")]
    BadData(String),
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn node(op: &str, node: &str, msg: impl Into<String>) -> Self {
        Error::BadNode { op: op.to_string(), node: node.to_string(), msg: msg.into() }
    }
}
