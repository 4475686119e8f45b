//! The tract ops ckd-edge adds to a plan, one file each: the op, how it is registered in
//! tract's ONNX parser, and the graph matcher that rewrites a model's chain of nodes into it.
//! Their arithmetic on slices lives in `kernels` (per-target variants picked at run time).

pub mod attention;
pub mod dynamic_quantize;
pub mod layer_norm;
pub mod qlinear;
pub mod same_shape_add;
