//! Rewrites of the ONNX graph before tract parses it: the matching and splicing the fused ops
//! use ([`graph_rewrite`], crate-internal) and the exact removal of the attention-mask adds for
//! unpadded inputs ([`unpadded`]).

pub(crate) mod graph_rewrite;
pub mod unpadded;
