//! Plain-Rust kernels. Inputs are validated once at the boundary (`csr::CsrRef::new`,
//! `filters::Filters::new`); the hot loops then index without bounds checks where it pays.

pub mod accum;
pub mod als;
pub mod blend;
pub mod compressed;
pub mod csr;
pub mod dense;
pub mod filters;
pub mod ivf;
pub mod pool;
pub mod quant;
pub mod similarity;
pub mod sparse;
pub mod topk;
