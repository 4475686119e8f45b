//! The tract ops ckd-edge adds to a plan, one file each: the op, how it is registered in
//! tract's ONNX parser, and the graph matcher that rewrites a model's chain of nodes into it.
//! Their arithmetic on slices lives in `kernels` (per-target variants picked at run time).
//!
//! The tract plumbing every op needs is written once, by two macros: `expansion!` (the
//! node as the parser builds it) and `plan_op!` (the op in the typed plan). An op file then
//! only states what differs: its inference rules, what it wires, how it computes its outputs
//! and their facts.

use tract_onnx::tract_hir::internal::*;

/// Implements tract's `Expansion` for `$ty`, the node as tract's ONNX parser builds it: it
/// parses as op type `$name`, has `$inputs` inputs and `$outputs` outputs (checked before the
/// type's inherent `fn infer<'r>(s: &mut Solver<'r>, inputs: &'r [TensorProxy], outputs:
/// &'r [TensorProxy]) -> TractResult<()>`, its inference rules) and becomes, in the typed
/// plan, what `$wire(&self, prefix, target, inputs)` wires: by default `wire_itself`.
macro_rules! expansion {
    ($ty:ty, $name:expr, inputs: $inputs:expr, outputs: $outputs:expr) => {
        expansion!($ty, $name, inputs: $inputs, outputs: $outputs, wire: $crate::ops::wire_itself);
    };
    ($ty:ty, $name:expr, inputs: $inputs:expr, outputs: $outputs:expr, wire: $wire:expr) => {
        impl Expansion for $ty {
            fn name(&self) -> StaticName {
                $name.into()
            }

            fn nboutputs(&self) -> TractResult<usize> {
                Ok($outputs)
            }

            fn rules<'r, 'p: 'r, 's: 'r>(
                &'s self,
                s: &mut Solver<'r>,
                inputs: &'p [TensorProxy],
                outputs: &'p [TensorProxy],
            ) -> TractResult<()> {
                check_input_arity(inputs, $inputs)?;
                check_output_arity(outputs, $outputs)?;
                Self::infer(s, inputs, outputs)
            }

            fn wire(&self, prefix: &str, target: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
                $wire(self, prefix, target, inputs)
            }
        }
    };
}

/// Implements tract's `Op`, `EvalOp` and `TypedOp` for `$ty`, a stateless op of the typed plan
/// named `$name` there: `eval` is the type's inherent
/// `fn compute(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>>`, `output_facts` its
/// `fn facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>>`, and with
/// `info: $info` the plan's one line about the node is `self.$info()` (a `String`).
macro_rules! plan_op {
    ($ty:ty, $name:expr $(, info: $info:ident)?) => {
        impl Op for $ty {
            fn name(&self) -> StaticName {
                $name.into()
            }

            $(
                fn info(&self) -> TractResult<Vec<String>> {
                    Ok(vec![self.$info()])
                }
            )?

            op_as_typed_op!();
        }

        impl EvalOp for $ty {
            op_out_of_plan!();

            fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
                self.compute(inputs)
            }
        }

        impl TypedOp for $ty {
            fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
                self.facts(inputs)
            }

            as_op!();
        }
    };
}

pub mod attention;
pub mod dynamic_quantize;
pub mod layer_norm;
pub mod qlinear;
pub mod same_shape_add;

/// An `expansion!`'s default wiring: the parsed node is already the plan's op, wired as is.
pub(crate) fn wire_itself<O: TypedOp + Clone>(
    op: &O,
    prefix: &str,
    target: &mut TypedModel,
    inputs: &[OutletId],
) -> TractResult<TVec<OutletId>> {
    target.wire_node(prefix, op.clone(), inputs)
}
