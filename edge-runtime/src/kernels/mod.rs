//! The arithmetic of the fused ops on plain slices, one file per kernel family. Each entry point
//! checks the CPU at run time (`is_x86_feature_detected!`) and runs the widest variant this CPU
//! has (AVX-512, AVX2), else a portable loop with the same results: a build never depends on
//! its target CPU. [`parallel`] splits a kernel's rows over the engine's thread pool.

pub(crate) mod attend;
mod gelu;
pub(crate) mod int8_dot;
mod lanes;
pub(crate) mod normalize;
pub(crate) mod parallel;
pub(crate) mod quantize;
pub(crate) mod softmax;
