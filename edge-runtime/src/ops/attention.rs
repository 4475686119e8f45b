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
//! [`crate::unpadded`] has removed those adds (unpadded rows only).
//!
//! The op reads the [B, T, N*Dh] layouts (head `h` is columns `h*Dh..(h+1)*Dh`). Once per call
//! it copies q and k head by head into transposed [Dh, T] matrices, so that the products'
//! operand packing reads contiguous memory (with strided views, packing took a third of the
//! time). Then per block of at most [`QUERY_BLOCK`] query rows and per head:
//! `s = q_blk k_h^T * c` ([`matrixmultiply::sgemm`], row-major [m, T]), then per row (in L1)
//! `s = exp(s - row max)` and its sum (`kernels::softmax`: on AVX-512 one pass for the max
//! and one for exp-store-sum; elsewhere vectorized loops and tract's exp kernel), then
//! `y_blk,h = s v_h` written in place in the output and `y_blk,h /= row sum` (on [m, Dh]
//! rather than the [m, T] probabilities). Rows are split over the engine's thread pool, one
//! chunk per thread ([`crate::kernels::parallel`]; inline with one thread). Results equal the unfused graph's up to float
//! rounding (tests: against an f64 reference, against tract on the unfused graph, and a whole
//! bundle fused vs not). Speed: `cargo bench -p ckd-benches --bench attention`.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use crate::fuse::graph_rewrite::{rewrite, Fusion, Index};
use crate::kernels::parallel::for_row_chunks;
use crate::kernels::softmax::softmax_numerators;

/// ONNX op type of the fused node (only ever in a graph rewritten in memory by this crate).
pub const OP_TYPE: &str = "CkdFusedAttention";

/// Most query rows per block: the block's scores (`QUERY_BLOCK` x seq f32, 128 KiB at 512
/// tokens) stay in the core's L2 cache between the two products. (64 to 512 measured within
/// about 15% of each other on one Zen 4 core at 128 and 512 tokens; 32 was slower.)
pub const QUERY_BLOCK: usize = 64;

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
}

impl Expansion for FusedAttention {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        for input in inputs {
            s.equals(&input.datum_type, f32::datum_type())?;
            s.equals(&input.rank, 3)?;
        }
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, target: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        target.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for FusedAttention {
    fn name(&self) -> StaticName {
        "FusedAttention".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FusedAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
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
}

impl TypedOp for FusedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 && inputs.iter().all(|f| f.rank() == 3), "{OP_TYPE} takes three rank-3 inputs");
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Sizes of one fused attention: q [batch, q_rows, heads * head_dim], k and v
/// [batch, kv_rows, heads * head_dim].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// B.
    pub batch: usize,
    /// Tq.
    pub q_rows: usize,
    /// T.
    pub kv_rows: usize,
    /// N.
    pub heads: usize,
    /// Dh.
    pub head_dim: usize,
}

/// `out = merge_heads(softmax(q_h k_h^T * scale) v_h)` for every batch and head; all row-major
/// with the shapes of [`Dims`]. Slices shorter than those shapes give an error. With no keys
/// (`kv_rows == 0`) the output is zeros.
pub fn attend(dims: &Dims, scale: f32, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> TractResult<()> {
    attend_in_blocks(dims, scale, q, k, v, out, QUERY_BLOCK)
}

/// [`attend`] with at most `block` query rows per block (for tuning; 0 means 1).
pub fn attend_in_blocks(
    dims: &Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    block: usize,
) -> TractResult<()> {
    let block = block.max(1);
    let &Dims { batch, q_rows, kv_rows, heads, head_dim } = dims;
    let width = heads * head_dim;
    ensure!(
        q.len() >= batch * q_rows * width && k.len() >= batch * kv_rows * width && v.len() >= batch * kv_rows * width,
        "attention inputs shorter than {dims:?}"
    );
    ensure!(out.len() == batch * q_rows * width, "attention output of {} for {dims:?}", out.len());
    if out.is_empty() || kv_rows == 0 {
        out.fill(0.0);
        return Ok(());
    }
    // Heads transposed once per call, so that the products' packing reads contiguous memory:
    // qt[b][h] = q_h^T [Dh, Tq] and kt[b][h] = k_h^T [Dh, T].
    let qt = heads_transposed(q, batch, q_rows, heads, head_dim);
    let kt = heads_transposed(k, batch, kv_rows, heads, head_dim);
    for_row_chunks(out, width, 1, 8, |first_row, chunk| {
        let rows = chunk.len() / width;
        // One block's scores, row-major [m, T].
        let mut scores = vec![0f32; block.min(rows) * kv_rows];
        let mut sum = vec![0f32; block.min(rows)];
        let mut r = 0;
        while r < rows {
            let global = first_row + r;
            let (b, i) = (global / q_rows, global % q_rows);
            // A block never crosses into the next batch entry.
            let m = block.min(rows - r).min(q_rows - i);
            let s = &mut scores[..m * kv_rows];
            for h in 0..heads {
                let qt_h = (b * heads + h) * head_dim * q_rows;
                let kt_h = (b * heads + h) * head_dim * kv_rows;
                // SAFETY: qt holds batch * heads * head_dim * q_rows values, so rows i..i+m
                // of the [Dh, Tq] matrix at qt_h are inside it (i + m <= q_rows); kt likewise
                // with kv_rows columns; `s` holds m * kv_rows.
                unsafe {
                    // s [m, T] = q_blk,h [m, Dh] . k_h^T [Dh, T] * scale
                    matrixmultiply::sgemm(
                        m,
                        head_dim,
                        kv_rows,
                        scale,
                        qt.as_ptr().add(qt_h + i),
                        1,
                        q_rows as isize,
                        kt.as_ptr().add(kt_h),
                        kv_rows as isize,
                        1,
                        0.0,
                        s.as_mut_ptr(),
                        kv_rows as isize,
                        1,
                    );
                }
                // Softmax along j: exp(s - row max), row by row while the row is in L1; the
                // 1 / sum is applied to the [m, Dh] output instead of the [m, T] probabilities.
                let sum = &mut sum[..m];
                softmax_numerators(s, kv_rows, sum)?;
                let out_blk = r * width + h * head_dim;
                // SAFETY: v rows b*kv_rows..(b+1)*kv_rows, head columns inside `width`
                // (length checked above); output rows r..r+m of this chunk, same columns.
                unsafe {
                    // out_blk,h [m, Dh] = exp_s [m, T] . v_h [T, Dh]
                    matrixmultiply::sgemm(
                        m,
                        kv_rows,
                        head_dim,
                        1.0,
                        s.as_ptr(),
                        kv_rows as isize,
                        1,
                        v.as_ptr().add(b * kv_rows * width + h * head_dim),
                        width as isize,
                        1,
                        0.0,
                        chunk.as_mut_ptr().add(out_blk),
                        width as isize,
                        1,
                    );
                }
                for (row, &z) in chunk[out_blk..].chunks_mut(width).take(m).zip(sum.iter()) {
                    let inv = z.recip();
                    for y in &mut row[..head_dim] {
                        *y *= inv;
                    }
                }
            }
            r += m;
        }
        Ok(())
    })
}

/// `x` [batch, rows, heads * head_dim] as [batch, heads, head_dim, rows] (each head transposed),
/// in 32 x 32 tiles.
fn heads_transposed(x: &[f32], batch: usize, rows: usize, heads: usize, head_dim: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let width = heads * head_dim;
    let mut t = vec![0f32; batch * rows * width];
    for b in 0..batch {
        let src = &x[b * rows * width..(b + 1) * rows * width];
        let dst = &mut t[b * rows * width..(b + 1) * rows * width];
        for j0 in (0..rows).step_by(TILE) {
            let j1 = (j0 + TILE).min(rows);
            for c0 in (0..width).step_by(TILE) {
                // Column c (= h * head_dim + within-head column) of row j goes to dst[c * rows + j].
                for c in c0..(c0 + TILE).min(width) {
                    for (j, d) in (j0..j1).zip(&mut dst[c * rows + j0..c * rows + j1]) {
                        *d = src[j * width + c];
                    }
                }
            }
        }
    }
    t
}

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

    /// Textbook attention in f64, head by head.
    fn reference(d: &Dims, scale: f32, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let w = d.heads * d.head_dim;
        let mut out = vec![0f32; d.batch * d.q_rows * w];
        for b in 0..d.batch {
            for h in 0..d.heads {
                for i in 0..d.q_rows {
                    let qi = &q[(b * d.q_rows + i) * w + h * d.head_dim..][..d.head_dim];
                    let s: Vec<f64> = (0..d.kv_rows)
                        .map(|j| {
                            let kj = &k[(b * d.kv_rows + j) * w + h * d.head_dim..][..d.head_dim];
                            qi.iter().zip(kj).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>()
                                * f64::from(scale)
                        })
                        .collect();
                    let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d.head_dim {
                        let y: f64 = (0..d.kv_rows)
                            .map(|j| e[j] / z * f64::from(v[(b * d.kv_rows + j) * w + h * d.head_dim + c]))
                            .sum();
                        out[(b * d.q_rows + i) * w + h * d.head_dim + c] = y as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attend_matches_the_textbook_formula() {
        // Odd sizes, more query rows than one block, a batch of two, a single query row
        // (the exporter's last layer), keys longer and shorter than queries.
        for (i, d) in [
            Dims { batch: 1, q_rows: 5, kv_rows: 5, heads: 1, head_dim: 3 },
            Dims { batch: 2, q_rows: 70, kv_rows: 70, heads: 3, head_dim: 8 },
            Dims { batch: 1, q_rows: 1, kv_rows: 131, heads: 4, head_dim: 16 },
            Dims { batch: 2, q_rows: 129, kv_rows: 9, heads: 2, head_dim: 5 },
        ]
        .iter()
        .enumerate()
        {
            let w = d.heads * d.head_dim;
            let q = values(d.batch * d.q_rows * w, 3 * i as u64);
            let k = values(d.batch * d.kv_rows * w, 3 * i as u64 + 1);
            let v = values(d.batch * d.kv_rows * w, 3 * i as u64 + 2);
            let scale = 1.0 / (d.head_dim as f32).sqrt();
            let mut out = vec![f32::NAN; d.batch * d.q_rows * w];
            attend(d, scale, &q, &k, &v, &mut out).unwrap();
            let want = reference(d, scale, &q, &k, &v);
            let err = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "{d:?}: max error {err}");
        }
    }

    #[test]
    fn attend_rejects_short_inputs_and_zeroes_empty_keys() {
        let d = Dims { batch: 1, q_rows: 2, kv_rows: 3, heads: 2, head_dim: 2 };
        let mut out = vec![1f32; 8];
        assert!(attend(&d, 1.0, &[0.0; 8], &[0.0; 11], &[0.0; 12], &mut out).is_err());
        assert!(attend(&d, 1.0, &[0.0; 8], &[0.0; 12], &[0.0; 12], &mut out[..7]).is_err());
        let d = Dims { kv_rows: 0, ..d };
        attend(&d, 1.0, &[0.0; 8], &[], &[], &mut out).unwrap();
        assert_eq!(out, [0.0; 8]);
    }

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
        let mut fw = tract_onnx::onnx();
        register(&mut fw);
        let proto = model(graph);
        let model = fw.parse(&proto, None).unwrap().model;
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
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
        type Change = Box<dyn Fn(&mut GraphProto)>;
        let cases: Vec<(&str, Change)> = vec![
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
        for (what, change) in cases {
            let mut g = layer();
            change(&mut g);
            let before = g.clone();
            assert_eq!(fuse_attention(&mut g), 0, "{what}");
            assert_eq!(g, before, "{what}: graph changed");
        }
    }
}
