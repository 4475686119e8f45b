//! Fused int8 linear layer for tract: one op does the integer product, the zero-point
//! correction, the rescale and the bias of an exported int8 linear, with weights packed once
//! at load time for the AVX-512 VNNI instruction `vpdpbusd` (u8 x i8 -> i32).
//!
//! Why: tract 0.23.9 runs each int8 linear of the exported graph (see `ckd-trainer`'s
//! `export::onnx`) as about seven plan nodes: a shift of the u8 activations to i8, packing
//! of those activations, the integer product, a zero-point correction, a cast of the i32
//! result to f32, and a rescale-and-bias chain, each a pass over memory. On all-MiniLM-L6 at
//! 512 tokens (one Zen 4 core) that was about 11 ms around 35 ms of products.
//!
//! [`fuse_int8_linears`] rewrites the ONNX graph before tract parses it: every chain
//!
//! ```text
//! acc = MatMulInteger(x_q u8 [.., K], W s8 [K, N] initializer, x_zp u8 scalar)
//! y   = Cast<f32>(acc) * Mul(x_scale f32 scalar, w_scale f32 [N] initializer) + b [N] initializer
//! ```
//!
//! whose intermediate values feed nothing else becomes one `CkdQLinear(x_q, x_scale, x_zp,
//! W, w_scale, b)` node, registered by [`register`]. When `y` feeds only the exporter's GELU
//! (`Mul(Mul(y, Add(Erf(Mul(y, 1/sqrt 2)), 1)), 0.5)`), that is folded in too (attribute
//! `activation = "gelu"`): computed as tract's `GeluExact` computes it, on each thread's rows
//! right after the product. When tract builds the plan, the op takes
//! W, w_scale and b (which must be constants) into a [`PackedLinear`] and keeps only the
//! three activation inputs. `DynamicQuantizeLinear` stays a node of its own (its output feeds
//! the q, k and v linears alike).
//!
//! The arithmetic is [`PackedLinear::run`] (in `kernels::int8_dot`, re-exported here with its
//! tile sizes and [`Int8Kernel`]): bit-identical to tract's unfused plan (tested there against
//! the formula, here against tract on a graph for every kernel this CPU has, and on a whole
//! bundle). The engine rewrites the graph only where a fast kernel is chosen (else tract's own
//! int8 path is faster than the portable loop); [`set_kernel`] records that choice in the fused
//! nodes (attribute `kernel`, an [`Int8Kernel::name`]; absent: [`Int8Kernel::best`]).

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use crate::fuse::graph_rewrite::{rewrite, Fusion, Index};
pub use crate::kernels::int8_dot::{fast_kernel_available, Int8Kernel, PackedLinear, KERNEL_ENV, MAX_K, MR, NR};

/// ONNX op type of the fused node (only ever in a graph rewritten in memory by this crate).
pub const OP_TYPE: &str = "CkdQLinear";

/// Registers the builder of [`OP_TYPE`] nodes in `onnx`.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, |_ctx: &ParsingContext, node: &NodeProto| {
        let attr = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.s.as_slice());
        let gelu = match attr("activation") {
            None => false,
            Some(b"gelu") => true,
            Some(other) => bail!("{}: {OP_TYPE} with activation {:?}", node.name, String::from_utf8_lossy(other)),
        };
        let kernel = match attr("kernel") {
            None => Int8Kernel::best(),
            Some(name) => {
                Some(Int8Kernel::ALL.into_iter().find(|k| k.name().as_bytes() == name).with_context(|| {
                    format!("{}: {OP_TYPE} with kernel {:?}", node.name, String::from_utf8_lossy(name))
                })?)
            }
        };
        Ok((expand(QLinearExpansion { gelu, kernel }), vec![]))
    });
}

/// The parsed node: inputs (x_q, x_scale, x_zp, W, w_scale, b); becomes a [`QLinear`] once its
/// constants are known.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct QLinearExpansion {
    /// GELU (erf form) after the bias (attribute `activation = "gelu"`).
    gelu: bool,
    /// The kernel that runs the product (attribute `kernel`; `None`: the portable loop).
    kernel: Option<Int8Kernel>,
}

impl QLinearExpansion {
    /// Inference rules: x_q u8 [.., K], x_scale f32, x_zp u8, W i8 [K, N]; the output f32 [.., N].
    fn infer<'r>(s: &mut Solver<'r>, inputs: &'r [TensorProxy], outputs: &'r [TensorProxy]) -> TractResult<()> {
        s.equals(&inputs[0].datum_type, u8::datum_type())?;
        s.equals(&inputs[1].datum_type, f32::datum_type())?;
        s.equals(&inputs[2].datum_type, u8::datum_type())?;
        s.equals(&inputs[3].datum_type, i8::datum_type())?;
        s.equals(&inputs[3].rank, 2)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            ensure!(rank >= 1, "{OP_TYPE} on a scalar");
            for d in 0..rank - 1 {
                s.equals(&outputs[0].shape[d], &inputs[0].shape[d])?;
            }
            s.equals(&inputs[0].shape[rank - 1], &inputs[3].shape[0])?;
            s.equals(&outputs[0].shape[rank - 1], &inputs[3].shape[1])?;
            Ok(())
        })
    }

    /// The plan's node: a [`QLinear`] holding W, w_scale and b (constants) packed, on the three
    /// activation inputs.
    fn wire_typed(&self, prefix: &str, target: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize, what: &str| -> TractResult<Arc<Tensor>> {
            target
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .with_context(|| format!("{prefix}: {OP_TYPE} needs constant {what}"))
        };
        let (w, w_scale, bias) = (konst(3, "weights")?, konst(4, "weight scales")?, konst(5, "bias")?);
        let &[k, n] = w.shape() else { bail!("{prefix}: {OP_TYPE} weights of shape {:?}", w.shape()) };
        let packed = PackedLinear::new(
            w.try_as_plain_ram()?.as_slice::<i8>()?,
            k,
            n,
            w_scale.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?,
            bias.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?,
        )
        .with_context(|| prefix.to_string())?;
        let packed = packed.with_kernel(self.kernel);
        let packed = if self.gelu { packed.with_gelu() } else { packed };
        target.wire_node(prefix, QLinear { packed: Arc::new(packed) }, &inputs[..3])
    }
}

expansion!(QLinearExpansion, OP_TYPE, inputs: 6, outputs: 1, wire: Self::wire_typed);

/// The fused op in the plan: inputs x_q (u8 [.., K]), x_scale (f32, one value), x_zp (u8, one
/// value); output f32 [.., N].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QLinear {
    /// The layer's packed constants.
    pub packed: Arc<PackedLinear>,
}

impl QLinear {
    /// The plan's line about the node: its sizes, whether GELU follows, and the kernel.
    fn describe(&self) -> String {
        let kernel = self.packed.kernel().map_or("portable", |k| k.name());
        format!("K = {}, N = {}, GELU: {}, kernel: {kernel}", self.packed.k(), self.packed.n(), self.packed.gelu())
    }

    /// The op's `eval`: x_q [.., K] to y [.., N] ([`PackedLinear::run`]).
    fn compute(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x_q, x_scale, x_zp) = args_3!(inputs);
        let (k, n) = (self.packed.k(), self.packed.n());
        let shape = x_q.shape();
        ensure!(
            shape.last() == Some(&k) && x_q.datum_type() == u8::datum_type(),
            "{OP_TYPE}: activations {:?} {shape:?} for K = {k}",
            x_q.datum_type()
        );
        ensure!(x_scale.len() == 1 && x_zp.len() == 1, "{OP_TYPE}: per-tensor scale and zero point expected");
        let x_scale = *x_scale.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.first().context("scale")?;
        let x_zp = *x_zp.try_as_plain_ram()?.as_slice::<u8>()?.first().context("zero point")?;
        let m = shape[..shape.len() - 1].iter().product::<usize>();
        let mut out_shape: TVec<usize> = shape.into();
        *out_shape.last_mut().context("rank")? = n;
        // SAFETY: f32 has no invalid bit patterns, and `run` writes every element.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        self.packed.run(
            x_q.try_as_plain_ram()?.as_slice::<u8>()?,
            m,
            x_scale,
            x_zp,
            out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        )?;
        Ok(tvec!(out.into_tvalue()))
    }

    /// The op's output facts: f32, x_q's shape with N last.
    fn facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 3 && inputs[0].rank() >= 1,
            "{OP_TYPE} takes activations of rank >= 1, a scale and a zero point"
        );
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        *shape.last_mut().context("rank")? = self.packed.n().into();
        Ok(tvec!(f32::fact(shape)))
    }
}

plan_op!(QLinear, "QLinear", info: describe);

/// Rewrites every int8 linear chain of the module doc into one [`OP_TYPE`] node. Returns how
/// many were fused (0: graph unchanged). Conservative: x_q, x_scale and x_zp the outputs of
/// one `DynamicQuantizeLinear`, W an s8 [K, N] initializer, w_scale and b f32 [N]
/// initializers, no weight zero point, and no intermediate value used elsewhere or a graph
/// output.
pub fn fuse_int8_linears(graph: &mut GraphProto) -> usize {
    rewrite(graph, |index, i| (index.node(i).op_type == "MatMulInteger").then(|| index.match_int8_linear(i)).flatten())
}

/// Makes every [`OP_TYPE`] node of `graph` run on `kernel` (its `kernel` attribute). Returns
/// how many nodes it set.
pub fn set_kernel(graph: &mut GraphProto, kernel: Int8Kernel) -> usize {
    let mut set = 0;
    for node in graph.node.iter_mut().filter(|n| n.op_type == OP_TYPE) {
        node.attribute.retain(|a| a.name != "kernel");
        node.attribute.push(AttributeProto {
            name: "kernel".into(),
            r#type: AttributeType::String as i32,
            s: kernel.name().as_bytes().to_vec(),
            ..Default::default()
        });
        set += 1;
    }
    set
}

impl<'g> Index<'g> {
    /// An initializer's dims if it has `data_type`.
    fn init_dims(&self, name: &str, data_type: DataType) -> Option<Vec<i64>> {
        self.init(name).filter(|t| t.data_type == data_type as i32).map(|t| t.dims.clone())
    }

    fn match_int8_linear(&self, mi: usize) -> Option<Fusion> {
        let mm = self.node(mi);
        let [x_q, w, x_zp] = mm.input.as_slice() else { return None };
        let [acc] = mm.output.as_slice() else { return None };
        let [k, n] = self.init_dims(w, DataType::Int8)?[..] else { return None };
        // x_q and x_zp straight from a DynamicQuantizeLinear (so the zero point is one value).
        let dq = self.node(self.producer(x_q)?);
        let [dq_q, dq_scale, dq_zp] = dq.output.as_slice() else { return None };
        if dq.op_type != "DynamicQuantizeLinear" || dq_q != x_q || dq_zp != x_zp {
            return None;
        }
        // acc -> Cast<f32>
        let ci = self.sole_user(acc)?;
        let cast = self.node(ci);
        if cast.op_type != "Cast"
            || !cast.attribute.iter().any(|a| a.name == "to" && a.i == DataType::Float as i64)
            || cast.output.len() != 1
        {
            return None;
        }
        // * scale, scale = Mul(x_scale, w_scale)
        let (ri, scale) = self.binary_user(&cast.output[0], "Mul")?;
        let rescale = self.node(ri);
        let si = self.made_by(scale, "Mul")?;
        self.sole_user(scale)?;
        let sn = self.node(si);
        let [a, b] = sn.input.as_slice() else { return None };
        let is_w_scale = |v: &str| self.init_dims(v, DataType::Float).is_some_and(|d| d == [n]);
        let (x_scale, w_scale) = if is_w_scale(b) {
            (a, b)
        } else if is_w_scale(a) {
            (b, a)
        } else {
            return None;
        };
        if x_scale != dq_scale {
            return None;
        }
        // + b
        let (ai, bias) = self.binary_user(&rescale.output[0], "Add")?;
        let add = self.node(ai);
        if self.init_dims(bias, DataType::Float)? != [n] || k <= 0 {
            return None;
        }
        let mut removed = vec![mi, ci, si, ri, ai];
        let (mut name, mut output, mut attribute) = (add.name.clone(), add.output.clone(), vec![]);
        if let Some((gelu_nodes, last)) = self.match_gelu(&add.output[0]) {
            removed.extend(gelu_nodes);
            name.clone_from(&self.node(last).name);
            output.clone_from(&self.node(last).output);
            attribute.push(AttributeProto {
                name: "activation".into(),
                r#type: AttributeType::String as i32,
                s: b"gelu".to_vec(),
                ..Default::default()
            });
        }
        let node = NodeProto {
            op_type: OP_TYPE.into(),
            name,
            input: vec![x_q.clone(), x_scale.clone(), x_zp.clone(), w.clone(), w_scale.clone(), bias.to_string()],
            output,
            attribute,
            ..Default::default()
        };
        let replaces = *removed.iter().max()?;
        Some(Fusion { removed, replaces, node })
    }

    /// The exporter's GELU on `y`: `Mul(Mul(y, Add(Erf(Mul(y, 1/sqrt 2)), 1)), 0.5)` (either
    /// operand order), with `y` used by exactly those two products and every intermediate used
    /// once. Returns the five nodes and the last one.
    fn match_gelu(&self, y: &str) -> Option<([usize; 5], usize)> {
        let [Some(u1), Some(u2)] = self.users_of(y)? else { return None };
        // `Mul(v, c)` / `Mul(c, v)` with a scalar initializer c: (v, c).
        let mul_by_const = |i: usize| -> Option<(&str, f32)> {
            let n = self.node(i);
            let [a, b] = n.input.as_slice() else { return None };
            if n.op_type != "Mul" || n.output.len() != 1 {
                return None;
            }
            match (self.scalar(a), self.scalar(b)) {
                (None, Some(c)) => Some((a.as_str(), c)),
                (Some(c), None) => Some((b.as_str(), c)),
                _ => None,
            }
        };
        let inv_sqrt2 = |i: usize| mul_by_const(i).is_some_and(|(v, c)| v == y && c == 2f32.sqrt().recip());
        let (scale, outer) = if inv_sqrt2(*u1) {
            (*u1, *u2)
        } else if inv_sqrt2(*u2) {
            (*u2, *u1)
        } else {
            return None;
        };
        let erf = self.sole_user(&self.node(scale).output[0])?;
        let en = self.node(erf);
        if en.op_type != "Erf" || en.output.len() != 1 {
            return None;
        }
        let (plus_one, one) = self.binary_user(&en.output[0], "Add")?;
        let pn = self.node(plus_one);
        if self.scalar(one) != Some(1.0) {
            return None;
        }
        let on = self.node(outer);
        let mut operands = on.input.iter().map(String::as_str).collect::<Vec<_>>();
        operands.sort_unstable();
        let mut expected = vec![y, pn.output[0].as_str()];
        expected.sort_unstable();
        if on.op_type != "Mul" || on.output.len() != 1 || operands != expected {
            return None;
        }
        let half = self.sole_user(&on.output[0])?;
        if mul_by_const(half) != Some((on.output[0].as_str(), 0.5)) {
            return None;
        }
        Some(([scale, erf, plus_one, outer, half], half))
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{tensor_proto::DataType, ValueInfoProto};

    use super::*;
    use crate::testing::*;

    const K: usize = 37;
    const N: usize = 53;

    /// One int8 linear as the exporter writes it, x [1, seq, K] -> y [1, seq, N].
    fn linear() -> GraphProto {
        let seq = |name: &str, width: usize| {
            value_info(
                name,
                DataType::Float,
                &[Dim::DimValue(1), Dim::DimParam("seq".into()), Dim::DimValue(width as i64)],
            )
        };
        let w: Vec<i8> = bytes(K * N, 3).into_iter().map(|x| (x as i8).max(-127)).collect();
        let ws: Vec<f32> = (0..N).map(|c| 0.002 + c as f32 * 3e-5).collect();
        let b: Vec<f32> = values(N, 4);
        let dql = NodeProto {
            op_type: "DynamicQuantizeLinear".into(),
            name: "x.quantize".into(),
            input: vec!["x".into()],
            output: vec!["x_q".into(), "x_scale".into(), "x_zp".into()],
            ..Default::default()
        };
        GraphProto {
            input: vec![seq("x", K)],
            output: vec![seq("y", N)],
            initializer: vec![
                i8s("w", &[K as i64, N as i64], &w),
                f32s("w_scale", &[N as i64], &ws),
                f32s("b", &[N as i64], &b),
            ],
            node: vec![
                dql,
                node("MatMulInteger", &["x_q", "w", "x_zp"], "acc", vec![]),
                node("Cast", &["acc"], "acc_f", vec![int("to", DataType::Float as i64)]),
                node("Mul", &["x_scale", "w_scale"], "scale", vec![]),
                node("Mul", &["acc_f", "scale"], "rescaled", vec![]),
                node("Add", &["rescaled", "b"], "y", vec![]),
            ],
            ..Default::default()
        }
    }

    fn run(graph: GraphProto, t: usize, fused_expected: bool) -> Vec<f32> {
        let plan = plan(graph, register);
        let ops: Vec<_> = plan.model().nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(ops.iter().any(|o| o == "QLinear"), fused_expected, "fused op in the plan: {ops:?}");
        let x = Tensor::from_shape(&[1, t, K], &values(t * K, 5)).unwrap();
        let out = plan.run(tvec!(x.into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    #[test]
    fn a_linear_fuses_into_one_node_with_identical_output() {
        let mut g = linear();
        assert_eq!(fuse_int8_linears(&mut g), 1);
        assert_eq!(g.node.len(), 2, "DynamicQuantizeLinear and the fused node");
        let n = &g.node[1];
        assert_eq!(
            (n.op_type.as_str(), n.input.join(","), n.output.join(",")),
            (OP_TYPE, "x_q,x_scale,x_zp,w,w_scale,b".into(), "y".into())
        );
        for t in [1, 9, 30] {
            let plain = run(linear(), t, false);
            let fused = run(g.clone(), t, true);
            assert_eq!(plain.len(), t * N);
            let same = plain.iter().zip(&fused).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "seq {t}: fused differs from tract's plan");
        }
    }

    /// Each kernel this CPU has, named in the fused node, gives tract's plan bit for bit (and
    /// an unknown kernel name is an error naming the node).
    #[test]
    fn every_kernel_here_matches_tracts_plan() {
        for kernel in Int8Kernel::ALL {
            if !kernel.available() {
                eprintln!("this CPU lacks the {} kernel: not checked here", kernel.name());
                continue;
            }
            for graph in [linear(), linear_gelu()] {
                let mut g = graph.clone();
                assert_eq!(fuse_int8_linears(&mut g), 1);
                assert_eq!(set_kernel(&mut g, kernel), 1);
                let p = plan(g, register);
                let line = p.model().nodes.iter().find(|n| n.op.name() == "QLinear").unwrap().op.info().unwrap();
                assert!(line[0].ends_with(&format!("kernel: {}", kernel.name())), "{line:?}");
                for t in [1, 7, 30] {
                    let x = Tensor::from_shape(&[1, t, K], &values(t * K, 5)).unwrap();
                    let fused = p.run(tvec!(x.clone().into())).unwrap();
                    let plain = plan(graph.clone(), register).run(tvec!(x.into())).unwrap();
                    let bits = |o: &TValue| {
                        o.to_plain_array_view::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&fused[0]), bits(&plain[0]), "{} seq {t}", kernel.name());
                }
            }
        }
        let mut g = linear();
        fuse_int8_linears(&mut g);
        g.node[1].attribute.push(AttributeProto { name: "kernel".into(), s: b"sse9".to_vec(), ..Default::default() });
        let mut fw = tract_onnx::onnx();
        register(&mut fw);
        let err = fw.parse(&model(g), None).err().unwrap();
        assert!(format!("{err:?}").contains("kernel \"sse9\""), "{err:?}");
    }

    /// [`linear`] followed by the exporter's GELU: y = Mul(Mul(lin, Add(Erf(Mul(lin, c)), 1)), 0.5).
    fn linear_gelu() -> GraphProto {
        let mut g = linear();
        for n in &mut g.node {
            for o in n.output.iter_mut().chain([&mut n.name]).filter(|o| *o == "y") {
                *o = "lin".into();
            }
        }
        g.initializer.extend([
            f32s("inv_sqrt2", &[], &[std::f32::consts::FRAC_1_SQRT_2]),
            f32s("one", &[], &[1.0]),
            f32s("half", &[], &[0.5]),
        ]);
        g.node.extend([
            node("Mul", &["lin", "inv_sqrt2"], "g.div", vec![]),
            node("Erf", &["g.div"], "g.erf", vec![]),
            node("Add", &["g.erf", "one"], "g.add", vec![]),
            node("Mul", &["lin", "g.add"], "g.mul", vec![]),
            node("Mul", &["g.mul", "half"], "y", vec![]),
        ]);
        g
    }

    #[test]
    fn a_linear_and_its_gelu_fuse_with_identical_output() {
        let mut g = linear_gelu();
        assert_eq!(fuse_int8_linears(&mut g), 1);
        assert_eq!(g.node.len(), 2, "DynamicQuantizeLinear and the fused node");
        assert_eq!(g.node[1].attribute.first().map(|a| a.s.as_slice()), Some(&b"gelu"[..]));
        assert_eq!(g.node[1].output, ["y"]);
        for t in [1, 9, 30] {
            let plain = run(linear_gelu(), t, false);
            let fused = run(g.clone(), t, true);
            let same = plain.iter().zip(&fused).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "seq {t}: fused linear + GELU differs from tract's plan");
        }
        // The linear's output used elsewhere too: the linear fuses, the GELU stays.
        let mut g = linear_gelu();
        g.output.push(ValueInfoProto { name: "lin".into(), ..Default::default() });
        assert_eq!(fuse_int8_linears(&mut g), 1);
        assert!(g.node[1].attribute.is_empty() && g.node.len() == 7);
        // Another constant than 1 / sqrt 2: not GELU.
        let mut g = linear_gelu();
        g.initializer[3] = f32s("inv_sqrt2", &[], &[0.7]);
        assert_eq!(fuse_int8_linears(&mut g), 1);
        assert!(g.node[1].attribute.is_empty());
    }

    #[test]
    fn anything_unusual_leaves_the_graph_alone() {
        let cases: Vec<(&str, Edit)> = vec![
            ("weight zero point", Box::new(|g| g.node[1].input.push("x_zp".into()))),
            ("cast to double", Box::new(|g| g.node[2].attribute[0].i = DataType::Double as i64)),
            (
                "product is an output",
                Box::new(|g| g.output.push(ValueInfoProto { name: "acc_f".into(), ..Default::default() })),
            ),
            (
                "scale used twice",
                Box::new(|g| g.output.push(ValueInfoProto { name: "scale".into(), ..Default::default() })),
            ),
            ("bias of the wrong width", Box::new(|g| g.initializer[2].dims = vec![N as i64 - 1])),
            ("weights not s8", Box::new(|g| g.initializer[0].data_type = DataType::Uint8 as i32)),
            ("weights not constant", Box::new(|g| g.initializer[0].name = "w2".into())),
            ("zero point not the quantizer's", Box::new(|g| g.node[1].input[2] = "zp2".into())),
            ("scale not the quantizer's", Box::new(|g| g.node[3].input[0] = "s2".into())),
            ("not an add", Box::new(|g| g.node[5].op_type = "Sub".into())),
        ];
        assert_each_left_alone(linear, fuse_int8_linears, cases);
    }

    #[test]
    fn wrong_inputs_at_run_time_are_errors() {
        let op = QLinear { packed: Arc::new(PackedLinear::new(&[1; 8], 2, 4, &[1.0; 4], &[0.0; 4]).unwrap()) };
        let x = |shape: &[usize]| Tensor::zero::<u8>(shape).unwrap().into_tvalue();
        let s = tensor0(0.5f32).into_tvalue();
        let z = tensor0(3u8).into_tvalue();
        let ok = op.eval(&EvalContext::out_of_plan(), tvec!(x(&[3, 2]), s.clone(), z.clone())).unwrap();
        assert_eq!(ok[0].shape(), &[3, 4]);
        assert!(op.eval(&EvalContext::out_of_plan(), tvec!(x(&[3, 3]), s.clone(), z.clone())).is_err());
        let two = tensor1(&[1u8, 2]).into_tvalue();
        assert!(op.eval(&EvalContext::out_of_plan(), tvec!(x(&[3, 2]), s, two)).is_err());
    }

    #[test]
    fn the_kernels_errors_name_this_op() {
        assert_eq!(crate::kernels::int8_dot::OP_TYPE, OP_TYPE);
    }
}
