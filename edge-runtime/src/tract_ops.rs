//! Deprecated path, kept for one release: this module held two unrelated ops, which now live
//! in [`crate::ops::dynamic_quantize`] (the vectorized `DynamicQuantizeLinear`) and
//! [`crate::ops::same_shape_add`]. Use those paths; these are re-exports of them.

pub use crate::ops::dynamic_quantize::{quantize, register, scale_and_zero_point, FastDynamicQuantizeLinearU8};
pub use crate::ops::same_shape_add::{use_same_shape_adds, SameShapeAdd};
