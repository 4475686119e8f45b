//! LayerNorm over the last axis as one tract op.
//!
//! Why: tract 0.23.9 expands ONNX `LayerNormalization` into about six plan nodes (a mean
//! reduction, a subtraction, an RMS normalization, a rescale-and-shift chain, casts), each a
//! pass over the tensor, and on a multi-thread engine each of them splits its few thousand
//! values over the pool. On all-MiniLM-L6 at 128 tokens the 13 LayerNorms took about 0.7 ms on
//! one Zen 4 core and about 1.9 ms on two.
//!
//! [`fuse_layer_norms`] renames, before tract parses the graph, every
//! `LayerNormalization(x, gamma, beta)` over the last axis (f32, gamma and beta f32 [H]
//! initializers, one output) to `CkdLayerNorm` (same inputs, `epsilon` attribute), registered
//! by [`register`]. Its arithmetic is [`normalize_rows`] (in `kernels::normalize`, re-exported
//! here): per row, in f32 as ONNX defines it, with sums in 16 lanes, so results differ from
//! tract's expansion by float rounding only (tested against an f64 reference and against tract).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use crate::fuse::graph_rewrite::{rewrite, Fusion};
pub use crate::kernels::normalize::normalize_rows;

/// ONNX op type of the fused node (only ever in a graph rewritten in memory by this crate).
pub const OP_TYPE: &str = "CkdLayerNorm";

/// Registers the builder of [`OP_TYPE`] nodes in `onnx`.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, |_ctx: &ParsingContext, node: &NodeProto| {
        let eps = node.attribute.iter().find(|a| a.name == "epsilon").map_or(1e-5, |a| a.f);
        ensure!(eps.is_finite() && eps >= 0.0, "{}: {OP_TYPE} with epsilon {eps}", node.name);
        Ok((expand(LayerNorm { eps_bits: eps.to_bits() }), vec![]))
    });
}

/// The op: inputs x (f32 [.., H]), gamma and beta (f32 [H]); output like x.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct LayerNorm {
    /// epsilon as f32 bits (so the op is `Hash + Eq`).
    pub eps_bits: u32,
}

impl LayerNorm {
    /// Inference rules: x, gamma and beta f32, gamma and beta of rank 1; the output f32 of x's shape.
    fn infer<'r>(s: &mut Solver<'r>, inputs: &'r [TensorProxy], outputs: &'r [TensorProxy]) -> TractResult<()> {
        for input in inputs {
            s.equals(&input.datum_type, f32::datum_type())?;
        }
        s.equals(&inputs[1].rank, 1)?;
        s.equals(&inputs[2].rank, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    /// The op's `eval`: x normalized row by row ([`normalize_rows`]), in place in x's tensor.
    fn compute(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, gamma, beta) = args_3!(inputs);
        let h = x.shape().last().copied().unwrap_or(0);
        ensure!(
            gamma.len() == h && beta.len() == h,
            "{OP_TYPE}: x {:?} with {} scales and {} shifts",
            x.shape(),
            gamma.len(),
            beta.len()
        );
        let mut y = x.into_tensor();
        let gamma = gamma.cast_to::<f32>()?;
        let beta = beta.cast_to::<f32>()?;
        normalize_rows(
            y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            gamma.try_as_plain_ram()?.as_slice::<f32>()?,
            beta.try_as_plain_ram()?.as_slice::<f32>()?,
            f32::from_bits(self.eps_bits),
        );
        Ok(tvec!(y.into_tvalue()))
    }

    /// The op's output facts: f32 of x's shape.
    fn facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3, "{OP_TYPE} takes x, gamma and beta");
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

expansion!(LayerNorm, OP_TYPE, inputs: 3, outputs: 1);
plan_op!(LayerNorm, "LayerNorm");

/// Renames every `LayerNormalization` of the module doc to [`OP_TYPE`]. Returns how many.
pub fn fuse_layer_norms(graph: &mut GraphProto) -> usize {
    rewrite(graph, |index, i| {
        let n = index.node(i);
        let last_axis = n.attribute.iter().find(|a| a.name == "axis").is_none_or(|a| a.i == -1);
        let f32_stash =
            n.attribute.iter().find(|a| a.name == "stash_type").is_none_or(|a| a.i == DataType::Float as i64);
        let known = n.attribute.iter().all(|a| matches!(a.name.as_str(), "axis" | "epsilon" | "stash_type"));
        let one_output = n.output.len() == 1 || n.output[1..].iter().all(String::is_empty);
        let vector =
            |name: &str| index.init(name).is_some_and(|t| t.data_type == DataType::Float as i32 && t.dims.len() == 1);
        if n.op_type != "LayerNormalization" || !(last_axis && f32_stash && known && one_output) {
            return None;
        }
        let [_, gamma, beta] = n.input.as_slice() else { return None };
        if !(vector(gamma) && vector(beta)) {
            return None;
        }
        let node = NodeProto {
            op_type: OP_TYPE.into(),
            output: n.output[..1].to_vec(),
            attribute: n.attribute.iter().filter(|a| a.name == "epsilon").cloned().collect(),
            ..n.clone()
        };
        Some(Fusion { removed: vec![i], replaces: i, node })
    })
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::tensor_proto::DataType;

    use super::*;
    use crate::kernels::normalize::normalize_rows_body;
    use crate::testing::*;

    const H: usize = 37;

    fn graph(axis: i64) -> GraphProto {
        let value = |name: &str| {
            value_info(name, DataType::Float, &[Dim::DimValue(1), Dim::DimParam("seq".into()), Dim::DimValue(H as i64)])
        };
        let mut ln = node("LayerNormalization", &["x", "g", "b"], "y", vec![int("axis", axis)]);
        ln.attribute.push(tract_onnx::pb::AttributeProto {
            name: "epsilon".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Float as i32,
            f: 1e-3,
            ..Default::default()
        });
        GraphProto {
            input: vec![value("x")],
            output: vec![value("y")],
            initializer: vec![f32s("g", &[H as i64], &values(H, 1)), f32s("b", &[H as i64], &values(H, 2))],
            node: vec![ln],
            ..Default::default()
        }
    }

    fn run(g: GraphProto, x: &[f32], t: usize) -> Vec<f32> {
        let plan = plan(g, register);
        let out = plan.run(tvec!(Tensor::from_shape(&[1, t, H], x).unwrap().into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    #[test]
    fn fused_layer_norm_matches_f64_and_tract() {
        let t = 9;
        let x: Vec<f32> = values(t * H, 3).iter().enumerate().map(|(i, v)| v * 3.0 + (i % 5) as f32).collect();
        let (g, b) = (values(H, 1), values(H, 2));
        let reference: Vec<f64> = x
            .chunks(H)
            .flat_map(|row| {
                let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / H as f64;
                let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / H as f64;
                let inv = 1.0 / (var + 1e-3f32 as f64).sqrt();
                row.iter()
                    .enumerate()
                    .map(|(j, &v)| (f64::from(v) - mean) * inv * f64::from(g[j]) + f64::from(b[j]))
                    .collect::<Vec<_>>()
            })
            .collect();
        let tract = run(graph(-1), &x, t);
        let mut fused_graph = graph(-1);
        assert_eq!(fuse_layer_norms(&mut fused_graph), 1);
        assert_eq!(fused_graph.node[0].op_type, OP_TYPE);
        let fused = run(fused_graph, &x, t);
        let err = |a: &[f32]| a.iter().zip(&reference).map(|(a, r)| (f64::from(*a) - r).abs()).fold(0f64, f64::max);
        assert!(err(&fused) < 2e-6, "fused vs f64: {}", err(&fused));
        assert!(err(&tract) < 2e-6, "tract vs f64: {}", err(&tract));
        let mut portable = x.clone();
        normalize_rows_body(&mut portable, &g, &b, 1e-3);
        assert!(err(&portable) < 2e-6, "portable vs f64: {}", err(&portable));
    }

    #[test]
    fn other_layer_norms_are_left_alone() {
        let mut g = graph(1);
        assert_eq!(fuse_layer_norms(&mut g), 0);
        let mut g = graph(-1);
        g.node[0].output.push("mean".into());
        assert_eq!(fuse_layer_norms(&mut g), 0);
        let mut g = graph(-1);
        g.initializer.pop();
        assert_eq!(fuse_layer_norms(&mut g), 0, "beta not a constant");
    }
}
