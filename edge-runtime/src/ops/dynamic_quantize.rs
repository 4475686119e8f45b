//! A vectorizable `DynamicQuantizeLinear` for tract: same results as tract-onnx 0.23.9's
//! `DynamicQuantizeLinearU8`, about an order of magnitude faster.
//!
//! Why: in tract-onnx 0.23.9 (`src/ops/quant.rs`) the op is a scalar loop: the min/max is an
//! ndarray `fold` over a tuple, and every element goes through `f32::round_ties_even`, which on
//! the x86_64 baseline (SSE2, no SSE4.1 `roundss`) is a call into libm's `roundevenf`. On
//! MiniLM-L6 (batch 1, seq 128) the 24 activation quantizations cost 27 ms of a 52 ms int8 run,
//! more than all the integer matmuls together (15 ms).
//!
//! This op computes the same thing with loops LLVM vectorizes ([`scale_and_zero_point`] and
//! [`quantize`], in `kernels::quantize`, re-exported here). Results are bit-identical to
//! tract's op for finite inputs; a NaN input element becomes 0 here and the zero point in
//! tract's op.
//!
//! [`register`] replaces the `DynamicQuantizeLinear` builder of a `tract_onnx::Onnx`;
//! [`crate::Engine::open`] does so for every bundle. This is a stand-in for an upstream fix of
//! `DynamicQuantizeLinearU8::eval`; the same code can be sent to tract as is. The
//! model-level check (an int8 export gives bit-identical logits with and without this op) is
//! `benches/tests/edge_parity.rs`, which can build exports; the kernel's speed is in
//! `benches/benches/edge.rs`.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

pub use crate::kernels::quantize::{quantize, scale_and_zero_point};

/// Replaces tract's `DynamicQuantizeLinear` with [`FastDynamicQuantizeLinearU8`] in `onnx`.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert("DynamicQuantizeLinear", |_ctx: &ParsingContext, _node: &NodeProto| {
        Ok((expand(FastDynamicQuantizeLinear), vec![]))
    });
}

/// The parsed `DynamicQuantizeLinear` node; a [`FastDynamicQuantizeLinearU8`] in the plan.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct FastDynamicQuantizeLinear;

impl FastDynamicQuantizeLinear {
    /// Inference rules: x f32; outputs x_q u8 of x's shape, scale f32 and zero point u8 scalars.
    fn infer<'r>(s: &mut Solver<'r>, inputs: &'r [TensorProxy], outputs: &'r [TensorProxy]) -> TractResult<()> {
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[1].rank, 0)?;
        s.equals(&outputs[2].datum_type, u8::datum_type())?;
        s.equals(&outputs[2].rank, 0)?;
        Ok(())
    }

    /// The plan's node: one [`FastDynamicQuantizeLinearU8`] on x.
    fn wire_typed(&self, prefix: &str, target: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        target.wire_node(format!("{prefix}.dynamic_quantize"), FastDynamicQuantizeLinearU8, &[inputs[0]])
    }
}

expansion!(FastDynamicQuantizeLinear, "DynamicQuantizeLinear", inputs: 1, outputs: 3, wire: Self::wire_typed);

/// `DynamicQuantizeLinear` (u8): outputs (x_q, scale, zero point).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct FastDynamicQuantizeLinearU8;

impl FastDynamicQuantizeLinearU8 {
    /// The op's `eval`: x to (x_q, scale, zero point).
    fn compute(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs[0].cast_to::<f32>()?;
        let xs = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let (scale, zp) = scale_and_zero_point(xs);
        // SAFETY: u8 has no invalid bit patterns, and `quantize` writes every element of `dst`
        // (the same shape as the input, so as long as `xs`) before the tensor is read.
        let mut dst = unsafe { Tensor::uninitialized_dt(u8::datum_type(), input.shape())? };
        quantize(xs, scale, zp, dst.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?);
        Ok(tvec!(dst.into_tvalue(), tensor0(scale).into(), tensor0(zp).into()))
    }

    /// The op's output facts: x's shape in u8, then two scalars (f32 scale, u8 zero point).
    fn facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut q = inputs[0].clone();
        q.datum_type = u8::datum_type();
        Ok(tvec!(q, f32::fact([0usize; 0]), u8::fact([0usize; 0])))
    }
}

plan_op!(FastDynamicQuantizeLinearU8, "FastDynamicQuantizeLinearU8");
