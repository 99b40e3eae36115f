//! The one error type of the kernels. The PyO3 layer maps each variant to its own Python
//! exception; nothing here knows about Python.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum CoreError {
    /// The CSR arrays do not describe a matrix (lengths, `indptr`, index range).
    #[error("invalid matrix {name}: {detail}")]
    InvalidMatrix { name: String, detail: String },
    /// A weight or vector entry is NaN or infinite.
    #[error("{name}[{pos}] is {value} (row {row}); values must be finite")]
    NonFinite {
        name: String,
        pos: usize,
        row: usize,
        value: f32,
    },
    /// An argument other than a matrix's structure is out of its domain.
    #[error("{0}")]
    InvalidArgument(String),
}

impl CoreError {
    pub fn matrix(name: &str, detail: impl Into<String>) -> Self {
        CoreError::InvalidMatrix {
            name: name.to_string(),
            detail: detail.into(),
        }
    }

    pub fn arg(detail: impl Into<String>) -> Self {
        CoreError::InvalidArgument(detail.into())
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;
