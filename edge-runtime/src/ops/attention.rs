//! Fused multi-head attention for tract: one op computes `softmax(q k^T * scale) v` for every
//! head, a block of query rows at a time, so the [heads, seq, seq] score and probability
//! tensors are never materialized.
//!
//! Why: tract 0.23.9 runs BERT attention as the ONNX graph spells it: split heads (Reshape,
//! Transpose), a batched MatMul for the scores, a Softmax over the whole [1, heads, seq, seq]
//! tensor, a second MatMul that first packs those probabilities, then merge heads. On
//! all-MiniLM-L6 at 512 tokens (one x86_64 core) that is about 60 ms of products plus 33 ms
//! of packing per prediction, and three 12.6 MB tensors alive together.
//!
//! [`fuse_attention`] rewrites the ONNX graph before tract parses it: every chain
//!
//! ```text
//! qh = Transpose<0,2,1,3>(Reshape(q, [0, 0, N, Dh]))       q [B, Tq, N*Dh]
//! kt = Transpose<0,2,3,1>(Reshape(k, [0, 0, N, Dh]))       k [B, T,  N*Dh]
//! vh = Transpose<0,2,1,3>(Reshape(v, [0, 0, N, Dh]))       v [B, T,  N*Dh]
//! p  = Softmax<axis=-1>(MatMul(qh, kt) * c)                (`* c` optional, or `/ c`)
//! y  = Reshape(Transpose<0,2,1,3>(MatMul(p, vh)), [0, 0, N*Dh])          [B, Tq, N*Dh]
//! ```
//!
//! whose intermediate values feed nothing else becomes one `CkdFusedAttention(q, k, v)` node
//! (attributes `heads`, `head_dim`, `scale`), registered by [`register`]. A chain with a mask
//! add between the product and the softmax is left alone: the engine fuses after
//! [`crate::fuse::unpadded`] has removed those adds (unpadded rows only).
//!
//! The op's arithmetic is [`attend`] (in `kernels::attend`, re-exported here with [`Dims`] and
//! [`QUERY_BLOCK`]): a block of query rows at a time, the rows split over the engine's threads.
//! Results equal the unfused graph's up to float rounding (tests: against an f64 reference,
//! against tract on the unfused graph, and a whole bundle fused vs not).
//! Speed: `cargo bench -p ckd-benches --bench attention`.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use crate::fuse::graph_rewrite::{rewrite, Fusion, Index};
pub use crate::kernels::attend::{attend, attend_in_blocks, Dims, QUERY_BLOCK};

/// ONNX op type of the fused node (only ever in a graph rewritten in memory by this crate).
pub const OP_TYPE: &str = "CkdFusedAttention";

/// Registers the builder of [`OP_TYPE`] nodes in `onnx`.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, |_ctx: &ParsingContext, node: &NodeProto| {
        let int = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
        let (Some(heads), Some(head_dim)) = (int("heads"), int("head_dim")) else {
            bail!("{}: {OP_TYPE} needs `heads` and `head_dim`", node.name)
        };
        let scale = node.attribute.iter().find(|a| a.name == "scale").map_or(1.0, |a| a.f);
        // Any file can name this op type: bound the sizes so `heads * head_dim` cannot overflow.
        ensure!(
            (1..=1 << 16).contains(&heads) && (1..=1 << 16).contains(&head_dim),
            "{}: {OP_TYPE} with {heads} heads of {head_dim}",
            node.name
        );
        let op = FusedAttention { heads: heads as usize, head_dim: head_dim as usize, scale_bits: scale.to_bits() };
        Ok((expand(op), vec![]))
    });
}

/// The fused op: inputs q [B, Tq, H], k [B, T, H], v [B, T, H] (f32, H = heads * head_dim),
/// output [B, Tq, H].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct FusedAttention {
    /// Number of heads N.
    pub heads: usize,
    /// Width of one head Dh.
    pub head_dim: usize,
    /// The score scale `c` as f32 bits (so the op is `Hash + Eq`).
    pub scale_bits: u32,
}

impl FusedAttention {
    fn scale(&self) -> f32 {
        f32::from_bits(self.scale_bits)
    }

    /// Inference rules: q, k and v f32 of rank 3; the output f32 of q's shape.
    fn infer<'r>(s: &mut Solver<'r>, inputs: &'r [TensorProxy], outputs: &'r [TensorProxy]) -> TractResult<()> {
        for input in inputs {
            s.equals(&input.datum_type, f32::datum_type())?;
            s.equals(&input.rank, 3)?;
        }
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    /// The op's `eval`: q, k, v to the attention output ([`attend`]).
    fn compute(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, k, v) = args_3!(inputs);
        let (qs, ks) = (q.shape(), k.shape());
        let width = self.heads * self.head_dim;
        ensure!(
            qs.len() == 3 && ks.len() == 3 && v.shape() == ks && qs[0] == ks[0] && qs[2] == width && ks[2] == width,
            "{OP_TYPE}: q {qs:?}, k {ks:?}, v {:?} for {} heads of {}",
            v.shape(),
            self.heads,
            self.head_dim
        );
        let dims = Dims { batch: qs[0], q_rows: qs[1], kv_rows: ks[1], heads: self.heads, head_dim: self.head_dim };
        let (q, k, v) = (q.cast_to::<f32>()?, k.cast_to::<f32>()?, v.cast_to::<f32>()?);
        // SAFETY: f32 has no invalid bit patterns, and `attend` writes every element (zeros
        // when there are no keys; `sgemm` with beta 0 does not read its output).
        let mut out = unsafe { Tensor::uninitialized::<f32>(qs)? };
        attend(
            &dims,
            self.scale(),
            q.try_as_plain_ram()?.as_slice::<f32>()?,
            k.try_as_plain_ram()?.as_slice::<f32>()?,
            v.try_as_plain_ram()?.as_slice::<f32>()?,
            out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        )?;
        Ok(tvec!(out.into_tvalue()))
    }

    /// The op's output facts: f32 of q's shape.
    fn facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 && inputs.iter().all(|f| f.rank() == 3), "{OP_TYPE} takes three rank-3 inputs");
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

expansion!(FusedAttention, OP_TYPE, inputs: 3, outputs: 1);
plan_op!(FusedAttention, "FusedAttention");

/// Rewrites every attention chain of the module doc into one [`OP_TYPE`] node. Returns how
/// many were fused (0: graph unchanged). Conservative: shapes must be the constant
/// `[0, 0, N, Dh]` and `[0, 0, N*Dh]` (no `allowzero`), the scale a scalar f32 initializer,
/// the softmax on the last axis, and no intermediate value may feed anything else or be a
/// graph output.
pub fn fuse_attention(graph: &mut GraphProto) -> usize {
    rewrite(graph, |index, i| (index.node(i).op_type == "Softmax").then(|| index.match_softmax(i)).flatten())
}

impl<'g> Index<'g> {
    /// Whether `n` is a Transpose with exactly `perm`.
    fn is_transpose(n: &NodeProto, perm: &[i64]) -> bool {
        n.op_type == "Transpose" && n.attribute.iter().any(|a| a.name == "perm" && a.ints == perm)
    }

    /// Whether `n` is a Reshape to the constant `shape` (zeros copying, not `allowzero`).
    fn is_reshape_to(&self, n: &NodeProto, shape: &[i64]) -> bool {
        n.op_type == "Reshape"
            && n.input.len() == 2
            && !n.attribute.iter().any(|a| a.name == "allowzero" && a.i != 0)
            && self.ints(&n.input[1]).is_some_and(|s| s == shape)
    }

    /// `value = Transpose<perm>(Reshape(x, [0, 0, N, Dh]))` with single-use intermediates:
    /// (x, N, Dh, [transpose, reshape]).
    fn split_heads(&self, value: &str, perm: &[i64]) -> Option<(&'g str, i64, i64, [usize; 2])> {
        let t = self.made_by(value, "Transpose")?;
        let tn = self.node(t);
        if !Self::is_transpose(tn, perm) || tn.input.len() != 1 {
            return None;
        }
        let r = self.made_by(&tn.input[0], "Reshape")?;
        let rn = self.node(r);
        self.sole_user(&rn.output[0])?;
        let shape = self.ints(rn.input.get(1)?)?;
        let (n, dh) = match shape.as_slice() {
            [0, 0, n, dh] if *n > 0 && *dh > 0 => (*n, *dh),
            _ => return None,
        };
        self.is_reshape_to(rn, &[0, 0, n, dh]).then_some((rn.input[0].as_str(), n, dh, [t, r]))
    }

    fn match_softmax(&self, si: usize) -> Option<Fusion> {
        const HEADS_FIRST: [i64; 4] = [0, 2, 1, 3];
        let sm = self.node(si);
        let axis_last = sm.attribute.iter().any(|a| a.name == "axis" && (a.i == -1 || a.i == 3));
        if !axis_last || sm.input.len() != 1 || sm.output.len() != 1 {
            return None;
        }
        // Probabilities -> context -> merged heads.
        let pv = self.sole_user(&sm.output[0])?;
        let pvn = self.node(pv);
        if pvn.op_type != "MatMul" || pvn.input.len() != 2 || pvn.input[0] != sm.output[0] || pvn.output.len() != 1 {
            return None;
        }
        let (v, nv, dv, v_nodes) = self.split_heads(&pvn.input[1], &HEADS_FIRST)?;
        self.sole_user(&pvn.input[1])?;
        let t3 = self.sole_user(&pvn.output[0])?;
        if !Self::is_transpose(self.node(t3), &HEADS_FIRST) || self.node(t3).output.len() != 1 {
            return None;
        }
        let r3 = self.sole_user(&self.node(t3).output[0])?;
        let r3n = self.node(r3);
        if !self.is_reshape_to(r3n, &[0, 0, nv * dv])
            || r3n.input[0] != self.node(t3).output[0]
            || r3n.output.len() != 1
        {
            return None;
        }
        // Scores: optional scalar scale, then the product of split q and k^T.
        let mut scores = sm.input[0].as_str();
        let mut scale = 1.0f32;
        let mut removed = vec![si, pv, t3, r3];
        self.sole_user(scores)?;
        for op in ["Mul", "Div"] {
            if let Some(mi) = self.made_by(scores, op) {
                let mn = self.node(mi);
                if mn.input.len() != 2 {
                    return None;
                }
                let (other, c) = match (self.scalar(&mn.input[0]), self.scalar(&mn.input[1])) {
                    (_, Some(c)) => (mn.input[0].as_str(), c),
                    (Some(c), None) if op == "Mul" => (mn.input[1].as_str(), c),
                    _ => return None,
                };
                scale = if op == "Mul" { c } else { c.recip() };
                scores = other;
                self.sole_user(scores)?;
                removed.push(mi);
                break;
            }
        }
        let qk = self.made_by(scores, "MatMul")?;
        let qkn = self.node(qk);
        if qkn.input.len() != 2 {
            return None;
        }
        let (q, nq, dq, q_nodes) = self.split_heads(&qkn.input[0], &HEADS_FIRST)?;
        let (k, nk, dk, k_nodes) = self.split_heads(&qkn.input[1], &[0, 2, 3, 1])?;
        self.sole_user(&qkn.input[0])?;
        self.sole_user(&qkn.input[1])?;
        if (nq, dq) != (nv, dv) || (nk, dk) != (nv, dv) || !scale.is_finite() {
            return None;
        }
        removed.push(qk);
        removed.extend(q_nodes.into_iter().chain(k_nodes).chain(v_nodes));
        let attr_int = |name: &str, i: i64| AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        };
        let node = NodeProto {
            op_type: OP_TYPE.into(),
            name: r3n.name.clone(),
            input: vec![q.into(), k.into(), v.into()],
            output: r3n.output.clone(),
            attribute: vec![
                attr_int("heads", nv),
                attr_int("head_dim", dv),
                AttributeProto {
                    name: "scale".into(),
                    r#type: AttributeType::Float as i32,
                    f: scale,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        Some(Fusion { removed, replaces: r3, node })
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{tensor_proto::DataType, ValueInfoProto};

    use super::*;
    use crate::testing::*;

    /// One layer's attention as the exporter writes it (after the mask adds are dropped), with
    /// q, k, v as graph inputs [B, T, 4] (2 heads of 2) and the context as the output.
    fn layer() -> GraphProto {
        // [1, seq, 4] f32, the sequence length symbolic as in exported files.
        let value = |n: &str| {
            value_info(n, DataType::Float, &[Dim::DimValue(1), Dim::DimParam("seq".into()), Dim::DimValue(4)])
        };
        GraphProto {
            input: vec![value("q"), value("k"), value("v")],
            output: vec![value("y")],
            initializer: vec![i64s("split", &[0, 0, 2, 2]), i64s("merge", &[0, 0, 4]), f32s("c", &[], &[0.5])],
            node: vec![
                node("Reshape", &["q", "split"], "q.split", vec![]),
                node("Transpose", &["q.split"], "qh", vec![ints("perm", &[0, 2, 1, 3])]),
                node("Reshape", &["k", "split"], "k.split", vec![]),
                node("Transpose", &["k.split"], "kt", vec![ints("perm", &[0, 2, 3, 1])]),
                node("Reshape", &["v", "split"], "v.split", vec![]),
                node("Transpose", &["v.split"], "vh", vec![ints("perm", &[0, 2, 1, 3])]),
                node("MatMul", &["qh", "kt"], "s", vec![]),
                node("Mul", &["s", "c"], "s.scaled", vec![]),
                node("Softmax", &["s.scaled"], "p", vec![int("axis", -1)]),
                node("MatMul", &["p", "vh"], "ctx", vec![]),
                node("Transpose", &["ctx"], "ctx.t", vec![ints("perm", &[0, 2, 1, 3])]),
                node("Reshape", &["ctx.t", "merge"], "y", vec![]),
            ],
            ..Default::default()
        }
    }

    fn run(graph: GraphProto, t: usize, fused_expected: bool) -> Vec<f32> {
        let plan = plan(graph, register);
        assert_eq!(
            plan.model().nodes.iter().any(|n| n.op.name() == "FusedAttention"),
            fused_expected,
            "fused op in the plan"
        );
        let x = |seed| Tensor::from_shape(&[1, t, 4], &values(t * 4, seed)).unwrap();
        let out = plan.run(tvec!(x(1).into(), x(2).into(), x(3).into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    #[test]
    fn a_layer_fuses_into_one_node_with_the_same_output() {
        let plain = run(layer(), 7, false);
        let mut g = layer();
        assert_eq!(fuse_attention(&mut g), 1);
        assert_eq!(g.node.len(), 1);
        let n = &g.node[0];
        assert_eq!((n.op_type.as_str(), n.input.join(","), n.output.join(",")), (OP_TYPE, "q,k,v".into(), "y".into()));
        let fused = run(g, 7, true);
        let err = plain.iter().zip(&fused).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-6, "fused vs tract's graph: {err}");
    }

    #[test]
    fn a_division_or_no_scale_is_folded_too() {
        let mut g = layer();
        g.initializer.push(f32s("two", &[], &[2.0]));
        g.node[7] = node("Div", &["s", "two"], "s.scaled", vec![]);
        let plain = run(g.clone(), 5, false);
        assert_eq!(fuse_attention(&mut g), 1);
        assert_eq!(g.node[0].attribute[2].f, 0.5);
        let fused = run(g, 5, true);
        assert!(plain.iter().zip(&fused).all(|(a, b)| (a - b).abs() < 1e-6));

        let mut g = layer();
        g.node.remove(7);
        g.node[7].input[0] = "s".into();
        assert_eq!(fuse_attention(&mut g), 1);
        assert_eq!(g.node[0].attribute[2].f, 1.0);
    }

    #[test]
    fn anything_unusual_leaves_the_graph_alone() {
        let cases: Vec<(&str, Edit)> = vec![
            (
                "scores used twice",
                Box::new(|g| g.output.push(ValueInfoProto { name: "s".into(), ..Default::default() })),
            ),
            ("probabilities used twice", Box::new(|g| g.node.push(node("Relu", &["p"], "p2", vec![])))),
            ("softmax on another axis", Box::new(|g| g.node[8].attribute = vec![int("axis", 2)])),
            ("softmax axis left to the default", Box::new(|g| g.node[8].attribute.clear())),
            ("keys not transposed", Box::new(|g| g.node[3].attribute = vec![ints("perm", &[0, 2, 1, 3])])),
            (
                "q split unlike k and v",
                Box::new(|g| {
                    g.initializer.push(i64s("split2", &[0, 0, 4, 1]));
                    g.node[0].input[1] = "split2".into();
                }),
            ),
            ("merge to another width", Box::new(|g| g.initializer[1] = i64s("merge", &[0, 0, 2, 2]))),
            ("allowzero reshape", Box::new(|g| g.node[0].attribute = vec![int("allowzero", 1)])),
            ("non-scalar scale", Box::new(|g| g.initializer[2] = f32s("c", &[2], &[0.5, 0.5]))),
            ("scale that is not a constant", Box::new(|g| g.node[7].input[1] = "q".into())),
            (
                "a mask add before the softmax",
                Box::new(|g| {
                    g.node[8].input[0] = "s.masked".into();
                    g.node.insert(8, node("Add", &["s.scaled", "c"], "s.masked", vec![]));
                }),
            ),
        ];
        assert_each_left_alone(layer, fuse_attention, cases);
    }
}
