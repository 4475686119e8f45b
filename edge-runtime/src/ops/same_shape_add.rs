//! A same-shape f32 `Add` for tract ([`SameShapeAdd`]) and the pass that puts it in an optimized
//! plan ([`use_same_shape_adds`]).
//!
//! Why: with a symbolic sequence length, tract 0.23.9 keeps a same-shape `Add` such as a BERT
//! residual ([1, S, 384] + [1, S, 384]) as its generic broadcasting op: its plan-time test for
//! the fast unicast kernel (`S * 384 > 32`) cannot be decided for a symbol. The generic op
//! costs about 4 ns per element (2 ms of a 22 ms MiniLM-L6 int8 run at 128 tokens); this loop
//! vectorizes. [`use_same_shape_adds`] swaps it in after optimization.

use tract_onnx::tract_hir::internal::*;

/// f32 `Add` of two tensors of the same shape, in place in the first.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct SameShapeAdd;

impl SameShapeAdd {
    /// The op's `eval`: `a + b`, in place in a's tensor.
    fn compute(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(a.shape() == b.shape(), "SameShapeAdd of {:?} and {:?}", a.shape(), b.shape());
        let mut a = a.into_tensor();
        {
            let mut view = a.try_as_plain_ram_mut()?;
            let xs = view.as_slice_mut::<f32>()?;
            let ys = b.try_as_plain_ram()?.as_slice::<f32>()?;
            ensure!(xs.len() == ys.len(), "SameShapeAdd of {} and {} values", xs.len(), ys.len());
            for (x, y) in xs.iter_mut().zip(ys) {
                *x += *y;
            }
        }
        Ok(tvec!(a.into_tvalue()))
    }

    /// The op's output facts: f32 of the inputs' shape.
    fn facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2 && inputs[0].shape == inputs[1].shape, "SameShapeAdd needs two inputs of one shape");
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

plan_op!(SameShapeAdd, "SameShapeAdd");

/// Replaces every plain f32 `Add` of `model` whose inputs have the same shape (equal as
/// symbolic dimensions) with [`SameShapeAdd`]. Returns how many.
pub fn use_same_shape_adds(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    let mut ids = Vec::new();
    for node in &model.nodes {
        let Some(bin) = node.op_as::<TypedBinOp>() else { continue };
        if bin.0.name() != "Add" || bin.1.is_some() || node.inputs.len() != 2 {
            continue;
        }
        let facts = model.node_input_facts(node.id)?;
        let f32_ = f32::datum_type();
        if facts[0].datum_type == f32_ && facts[1].datum_type == f32_ && facts[0].shape == facts[1].shape {
            ids.push(node.id);
        }
    }
    for &id in &ids {
        model.nodes[id].op = Box::new(SameShapeAdd);
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_shape_adds_replace_tract_adds_with_the_same_results() {
        use tract_onnx::tract_core::ops::math::add;
        let mut model = TypedModel::default();
        let s = model.symbols.sym("S");
        let shape = [1.to_dim(), s.to_dim(), 4.to_dim()];
        let a = model.add_source("a", f32::fact(shape.clone())).unwrap();
        let b = model.add_source("b", f32::fact(shape)).unwrap();
        let c = model.add_source("c", f32::fact([1usize, 1, 4])).unwrap();
        let ab = model.wire_node("ab", add(), &[a, b]).unwrap()[0];
        // A broadcasting add stays tract's.
        let abc = model.wire_node("abc", add(), &[ab, c]).unwrap()[0];
        model.select_output_outlets(&[abc]).unwrap();
        let xs: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let ys: Vec<f32> = (0..12).map(|i| 3.0 - i as f32 * 0.25).collect();
        let inputs = || {
            tvec!(
                Tensor::from_shape(&[1, 3, 4], &xs).unwrap().into_tvalue(),
                Tensor::from_shape(&[1, 3, 4], &ys).unwrap().into_tvalue(),
                Tensor::from_shape(&[1, 1, 4], &[1f32, 2., 3., 4.]).unwrap().into_tvalue()
            )
        };
        let want = model.clone().into_runnable().unwrap().run(inputs()).unwrap();
        assert_eq!(use_same_shape_adds(&mut model).unwrap(), 1);
        assert_eq!(model.nodes.iter().filter(|n| n.op.name() == "SameShapeAdd").count(), 1);
        let got = model.into_runnable().unwrap().run(inputs()).unwrap();
        assert_eq!(got[0].to_plain_array_view::<f32>().unwrap(), want[0].to_plain_array_view::<f32>().unwrap());
    }
}
