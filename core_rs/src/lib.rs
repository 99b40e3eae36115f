//! recsys-engine's Rust core: sparse similarity with top-k pruning and top-K scoring.
//!
//! The kernels (`kernels`) are plain Rust and tested with cargo; the PyO3 layer (`py`, behind
//! the `python` feature) only converts arguments and errors.

pub mod error;
pub mod kernels;

#[cfg(feature = "python")]
mod py;

pub use error::{CoreError, Result};
