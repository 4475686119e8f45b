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
//! Arithmetic (per output element, the graph's order, no fused multiply-add):
//! `y = f32(sum_k x_q[k] * W[k, n] - x_zp * colsum_n) * (x_scale * w_scale[n]) + b[n]`, where
//! `colsum_n = sum_k W[k, n]`; the i32 sum is exact (|x_q * W| <= 255 * 128, K < 2^16 in
//! practice, checked at packing), so results are bit-identical to tract's unfused plan (tested
//! below and on a whole bundle).
//!
//! Kernel (x86_64 with AVX-512F/BW/VNNI, detected at run time): a tile of [`MR`] rows x
//! [`NR`] columns keeps 24 i32 accumulators in zmm registers; per 4 values of K it loads
//! three 64-byte weight vectors (16 columns x 4 K values each, the packed layout) and
//! broadcasts 4 activation bytes per row, straight from the row-major u8 activations (no
//! activation packing). The epilogue (zero point, convert, rescale, bias) runs on the tile in
//! registers and stores the f32 outputs. Rows are split over the engine's thread pool, one
//! chunk per thread ([`crate::kernels::parallel`]; inline with one thread). Elsewhere a portable loop computes the
//! same values (slowly), so a graph holding this op runs anywhere; the engine rewrites the
//! graph only where [`fast_kernel_available`] (else tract's own int8 path is faster).

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto};
use tract_onnx::tract_core::tract_linalg::Func;
use tract_onnx::tract_hir::internal::*;

use crate::fuse::graph_rewrite::{rewrite, Fusion, Index};
use crate::kernels::parallel::for_row_chunks;

/// ONNX op type of the fused node (only ever in a graph rewritten in memory by this crate).
pub const OP_TYPE: &str = "CkdQLinear";

/// Rows of one kernel tile.
pub const MR: usize = 8;
/// Columns of one kernel tile (three 16-lane vectors): the width of a weight panel.
pub const NR: usize = 48;
/// Columns per 64-byte weight vector.
const LANES: usize = 16;
/// Weight vectors per panel and K group.
const VECS: usize = NR / LANES;
/// Largest K accepted: the i32 accumulator cannot overflow below it (255 * 128 * 2^16 < 2^31).
pub const MAX_K: usize = 1 << 16;

/// Whether this CPU runs the fast kernel (x86_64 with AVX-512F, AVX-512BW and AVX-512 VNNI).
pub fn fast_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 16 columns x 4 K values of s8 weights: byte `4 * j + t` is `W[4 g + t, col0 + j]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
struct Quad([i8; 64]);

/// One int8 linear's constants, packed for the kernel.
///
/// Layout: panel `p` (columns `p * NR ..`), K group `g` (K values `4 g .. 4 g + 4`), vector `v`
/// is `quads[(p * groups + g) * VECS + v]`. Columns past N and K values past K are zeros, and
/// so are `colsum`, `w_scale` and `bias` past N (length `panels * NR`).
#[derive(Debug, Clone)]
pub struct PackedLinear {
    k: usize,
    n: usize,
    groups: usize,
    panels: usize,
    quads: Vec<Quad>,
    colsum: Vec<i32>,
    w_scale: Vec<f32>,
    bias: Vec<f32>,
    gelu: bool,
}

/// Equal when every value is (floats compared by their bits, so that `Eq` holds).
impl PartialEq for PackedLinear {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (self.k, self.n, self.gelu, &self.quads, &self.colsum)
            == (other.k, other.n, other.gelu, &other.quads, &other.colsum)
            && bits(&self.w_scale) == bits(&other.w_scale)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for PackedLinear {}

impl PackedLinear {
    /// Packs `w` ([k, n] row-major s8), `w_scale` [n] and `bias` [n].
    pub fn new(w: &[i8], k: usize, n: usize, w_scale: &[f32], bias: &[f32]) -> TractResult<Self> {
        ensure!(k <= MAX_K, "{OP_TYPE}: K = {k} is over {MAX_K}");
        ensure!(
            k.checked_mul(n) == Some(w.len()) && w_scale.len() == n && bias.len() == n,
            "{OP_TYPE}: weights of {} for [{k}, {n}], {} scales, {} biases",
            w.len(),
            w_scale.len(),
            bias.len()
        );
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(NR);
        let mut quads = vec![Quad([0; 64]); panels * groups * VECS];
        for (kk, row) in w.chunks_exact(n.max(1)).enumerate().take(k) {
            let (g, t) = (kk / 4, kk % 4);
            for (col, &x) in row.iter().enumerate() {
                let (p, v, j) = (col / NR, (col % NR) / LANES, col % LANES);
                quads[(p * groups + g) * VECS + v].0[4 * j + t] = x;
            }
        }
        let padded = panels * NR;
        let mut colsum = vec![0i32; padded];
        for row in w.chunks_exact(n.max(1)).take(k) {
            for (s, &x) in colsum.iter_mut().zip(row) {
                *s += i32::from(x);
            }
        }
        let pad = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(padded, 0.0);
            p
        };
        Ok(PackedLinear { k, n, groups, panels, quads, colsum, w_scale: pad(w_scale), bias: pad(bias), gelu: false })
    }

    /// The same layer followed by GELU (erf form), `y = (y * 0.5) * (1 + erf(y / sqrt 2))`,
    /// computed as tract's `GeluExact` does (its erf kernel, the same products), so the same
    /// bits as the unfused plan.
    pub fn with_gelu(mut self) -> Self {
        self.gelu = true;
        self
    }

    /// Whether GELU follows the product ([`PackedLinear::with_gelu`]).
    pub fn gelu(&self) -> bool {
        self.gelu
    }

    /// K, the input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// N, the output width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `out [m, N] = f32(x_q [m, K] . W - x_zp * colsum) * (x_scale * w_scale) + bias` (then
    /// GELU when [`PackedLinear::with_gelu`]), with the fast kernel where the CPU has it. Rows are split over the current tract executor.
    pub fn run(&self, x_q: &[u8], m: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) -> TractResult<()> {
        self.run_with(x_q, m, x_scale, x_zp, out, fast_kernel_available())
    }

    /// [`PackedLinear::run`], choosing the kernel (`fast` is ignored where the CPU lacks it).
    pub fn run_with(
        &self,
        x_q: &[u8],
        m: usize,
        x_scale: f32,
        x_zp: u8,
        out: &mut [f32],
        fast: bool,
    ) -> TractResult<()> {
        let (k, n) = (self.k, self.n);
        ensure!(
            m.checked_mul(k) == Some(x_q.len()) && m.checked_mul(n) == Some(out.len()),
            "{OP_TYPE}: {} activations and {} outputs for {m} rows of [{k}] -> [{n}]",
            x_q.len(),
            out.len()
        );
        if out.is_empty() {
            return Ok(());
        }
        let fast = fast && fast_kernel_available();
        for_row_chunks(out, n, MR, 2 * MR, |first_row, chunk| {
            let rows = chunk.len() / n;
            let a = &x_q[first_row * k..(first_row + rows) * k];
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: the CPU has the kernel's features (checked just above); `a` holds
                // rows x K and `chunk` rows x N values.
                unsafe { vnni::rows(self, a, rows, x_scale, x_zp, chunk) };
            } else {
                self.rows_portable(a, rows, x_scale, x_zp, chunk);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = fast;
                self.rows_portable(a, rows, x_scale, x_zp, chunk);
            }
            if self.gelu {
                gelu_in_place(chunk)?;
            }
            Ok(())
        })
    }

    /// The same arithmetic as the kernel, one output at a time.
    fn rows_portable(&self, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        for r in 0..rows {
            let a_row = &a[r * k..(r + 1) * k];
            for col in 0..n {
                let (p, v, j) = (col / NR, (col % NR) / LANES, col % LANES);
                let mut acc = 0i32;
                for (kk, &x) in a_row.iter().enumerate() {
                    let q = &self.quads[(p * self.groups + kk / 4) * VECS + v];
                    acc += i32::from(x) * i32::from(q.0[4 * j + kk % 4]);
                }
                let centered = acc - i32::from(x_zp) * self.colsum[col];
                out[r * n + col] = centered as f32 * (x_scale * self.w_scale[col]) + self.bias[col];
            }
        }
    }
}

/// tract 0.23.9's `GeluExact` on f32, the same operations in the same order:
/// `s = x * (1 / sqrt 2)`, `e = erf(s)` (tract's erf kernel), `x = (x * 0.5) * (e + 1)`.
fn gelu_in_place(xs: &mut [f32]) -> TractResult<()> {
    const CHUNK: usize = 1024;
    let erf = Func::Erf.ew_f32()?;
    let c = 2f32.sqrt().recip();
    let mut scratch = [0f32; CHUNK];
    for chunk in xs.chunks_mut(CHUNK) {
        let s = &mut scratch[..chunk.len()];
        gelu_loops(chunk, s, c, false);
        erf.run(s)?;
        gelu_loops(chunk, s, c, true);
    }
    Ok(())
}

/// The two elementwise loops of [`gelu_in_place`] (`finish`: the second), built for AVX-512F
/// too and picked at run time.
fn gelu_loops(x: &mut [f32], s: &mut [f32], c: f32, finish: bool) {
    #[inline(always)]
    fn body(x: &mut [f32], s: &mut [f32], c: f32, finish: bool) {
        if finish {
            x.iter_mut().zip(s.iter()).for_each(|(x, e)| *x = (*x * 0.5) * (*e + 1.0));
        } else {
            s.iter_mut().zip(x.iter()).for_each(|(s, x)| *s = *x * c);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn body_512(x: &mut [f32], s: &mut [f32], c: f32, finish: bool) {
        body(x, s, c, finish)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { body_512(x, s, c, finish) };
    }
    body(x, s, c, finish)
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{PackedLinear, LANES, MR, NR, VECS};

    /// All panels for `rows` rows of `a` ([rows, K] u8) into `out` ([rows, N]).
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI; `a.len() == rows * K`,
    /// `out.len() == rows * N`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows(pw: &PackedLinear, a: &[u8], rows: usize, x_scale: f32, x_zp: u8, out: &mut [f32]) {
        let k = pw.k;
        for p in 0..pw.panels {
            let mut r0 = 0;
            while r0 < rows {
                let mv = MR.min(rows - r0);
                // Rows past the last one read the last one again (their results are dropped).
                let a_rows: [*const u8; MR] = std::array::from_fn(|i| a.as_ptr().add((r0 + i.min(mv - 1)) * k));
                // SAFETY: as for this function; row r0 + i < rows for every pointer.
                unsafe { tile(pw, p, &a_rows, mv, x_scale, x_zp, out.as_mut_ptr().add(r0 * pw.n)) };
                r0 += mv;
            }
        }
    }

    /// One MR x NR tile: panel `p`, rows `a_rows` (the first `mv` are stored), output row 0
    /// at `out` (row stride N).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile(
        pw: &PackedLinear,
        p: usize,
        a_rows: &[*const u8; MR],
        mv: usize,
        x_scale: f32,
        x_zp: u8,
        out: *mut f32,
    ) {
        let mut acc = [[_mm512_setzero_si512(); VECS]; MR];
        let full = pw.k / 4;
        let mut b = pw.quads.as_ptr().add(p * pw.groups * VECS) as *const __m512i;
        for g in 0..full {
            let b0 = _mm512_load_si512(b);
            let b1 = _mm512_load_si512(b.add(1));
            let b2 = _mm512_load_si512(b.add(2));
            for i in 0..MR {
                let av = _mm512_set1_epi32(std::ptr::read_unaligned(a_rows[i].add(4 * g) as *const i32));
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
                acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], av, b2);
            }
            b = b.add(VECS);
        }
        let rest = pw.k % 4;
        if rest != 0 {
            // The last K group: missing bytes are 0 (as are their packed weights).
            let bv: [__m512i; VECS] = std::array::from_fn(|v| _mm512_load_si512(b.add(v)));
            for i in 0..MR {
                let mut bytes = [0u8; 4];
                std::ptr::copy_nonoverlapping(a_rows[i].add(4 * full), bytes.as_mut_ptr(), rest);
                let av = _mm512_set1_epi32(i32::from_le_bytes(bytes));
                for v in 0..VECS {
                    acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], av, bv[v]);
                }
            }
        }
        let zp = _mm512_set1_epi32(i32::from(x_zp));
        let xs = _mm512_set1_ps(x_scale);
        let n = pw.n;
        for v in 0..VECS {
            let col = p * NR + v * LANES;
            if col >= n {
                break;
            }
            let mask: __mmask16 = if n - col >= LANES { 0xffff } else { (1u16 << (n - col)) - 1 };
            let zc = _mm512_mullo_epi32(zp, _mm512_loadu_si512(pw.colsum.as_ptr().add(col) as *const __m512i));
            let scale = _mm512_mul_ps(xs, _mm512_loadu_ps(pw.w_scale.as_ptr().add(col)));
            let bias = _mm512_loadu_ps(pw.bias.as_ptr().add(col));
            for (i, row) in acc.iter().enumerate().take(mv) {
                let y = _mm512_cvtepi32_ps(_mm512_sub_epi32(row[v], zc));
                let y = _mm512_add_ps(_mm512_mul_ps(y, scale), bias);
                _mm512_mask_storeu_ps(out.add(i * n + col), mask, y);
            }
        }
    }
}

/// Registers the builder of [`OP_TYPE`] nodes in `onnx`.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, |_ctx: &ParsingContext, node: &NodeProto| {
        let gelu = match node.attribute.iter().find(|a| a.name == "activation").map(|a| a.s.as_slice()) {
            None => false,
            Some(b"gelu") => true,
            Some(other) => bail!("{}: {OP_TYPE} with activation {:?}", node.name, String::from_utf8_lossy(other)),
        };
        Ok((expand(QLinearExpansion { gelu }), vec![]))
    });
}

/// The parsed node: inputs (x_q, x_scale, x_zp, W, w_scale, b); becomes a [`QLinear`] once its
/// constants are known.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct QLinearExpansion {
    /// GELU (erf form) after the bias (attribute `activation = "gelu"`).
    gelu: bool,
}

impl Expansion for QLinearExpansion {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 6)?;
        check_output_arity(outputs, 1)?;
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

    fn wire(&self, prefix: &str, target: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
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
        let packed = if self.gelu { packed.with_gelu() } else { packed };
        target.wire_node(prefix, QLinear { packed: Arc::new(packed) }, &inputs[..3])
    }
}

/// The fused op in the plan: inputs x_q (u8 [.., K]), x_scale (f32, one value), x_zp (u8, one
/// value); output f32 [.., N].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QLinear {
    /// The layer's packed constants.
    pub packed: Arc<PackedLinear>,
}

impl Op for QLinear {
    fn name(&self) -> StaticName {
        "QLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("K = {}, N = {}, GELU: {}", self.packed.k, self.packed.n, self.packed.gelu)])
    }

    op_as_typed_op!();
}

impl EvalOp for QLinear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x_q, x_scale, x_zp) = args_3!(inputs);
        let (k, n) = (self.packed.k, self.packed.n);
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
}

impl TypedOp for QLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 3 && inputs[0].rank() >= 1,
            "{OP_TYPE} takes activations of rank >= 1, a scale and a zero point"
        );
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        *shape.last_mut().context("rank")? = self.packed.n.into();
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

/// Rewrites every int8 linear chain of the module doc into one [`OP_TYPE`] node. Returns how
/// many were fused (0: graph unchanged). Conservative: x_q, x_scale and x_zp the outputs of
/// one `DynamicQuantizeLinear`, W an s8 [K, N] initializer, w_scale and b f32 [N]
/// initializers, no weight zero point, and no intermediate value used elsewhere or a graph
/// output.
pub fn fuse_int8_linears(graph: &mut GraphProto) -> usize {
    rewrite(graph, |index, i| (index.node(i).op_type == "MatMulInteger").then(|| index.match_int8_linear(i)).flatten())
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

    /// The module doc's formula on the unpacked weights, one output at a time.
    #[allow(clippy::too_many_arguments)]
    fn reference(a: &[u8], w: &[i8], m: usize, k: usize, n: usize, xs: f32, zp: u8, ws: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let acc: i32 =
                    (0..k).map(|i| (i32::from(a[r * k + i]) - i32::from(zp)) * i32::from(w[i * n + c])).sum();
                out[r * n + c] = acc as f32 * (xs * ws[c]) + b[c];
            }
        }
        out
    }

    #[test]
    fn both_kernels_equal_the_formula_bit_for_bit() {
        if !fast_kernel_available() {
            eprintln!("this CPU has no AVX-512 VNNI: only the portable path is checked");
        }
        // Tails in every direction: K not a multiple of 4, N not of 16 or 48, rows not of MR.
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 17), (8, 4, 48), (9, 37, 49), (17, 64, 100), (20, 384, 96), (5, 3, 130)] {
            let a = bytes(m * k, 1 + k as u64);
            // Full range of s8, including -128 (the exporter's weights stay in [-127, 127]).
            let w: Vec<i8> = bytes(k * n, 2 + n as u64).into_iter().map(|x| x as i8).collect();
            let ws: Vec<f32> = (0..n).map(|c| 0.001 + c as f32 * 1e-4).collect();
            let b: Vec<f32> = (0..n).map(|c| c as f32 * 0.25 - 3.0).collect();
            let (xs, zp) = (0.0123f32, 117u8);
            let packed = PackedLinear::new(&w, k, n, &ws, &b).unwrap();
            let expected = reference(&a, &w, m, k, n, xs, zp, &ws, &b);
            for fast in [false, true] {
                let mut out = vec![f32::NAN; m * n];
                packed.run_with(&a, m, xs, zp, &mut out, fast).unwrap();
                let same = out.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "m {m} k {k} n {n} fast {fast}: {:?} vs {:?}", &out[..n.min(4)], &expected[..n.min(4)]);
            }
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(PackedLinear::new(&[0; 6], 2, 4, &[1.0; 4], &[0.0; 4]).is_err());
        assert!(PackedLinear::new(&[0; 8], 2, 4, &[1.0; 3], &[0.0; 4]).is_err());
        assert!(PackedLinear::new(&[0; 8], 2, 4, &[1.0; 4], &[0.0; 5]).is_err());
        let p = PackedLinear::new(&[1; 8], 2, 4, &[1.0; 4], &[0.5; 4]).unwrap();
        assert!(p.run(&[1; 5], 3, 1.0, 0, &mut [0.0; 12]).is_err());
        assert!(p.run(&[1; 6], 3, 1.0, 0, &mut [0.0; 11]).is_err());
        let mut none: [f32; 0] = [];
        p.run(&[], 0, 1.0, 0, &mut none).unwrap();
    }

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
        let mut fw = tract_onnx::onnx();
        register(&mut fw);
        let model = fw.parse(&model(graph), None).unwrap().model;
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
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
        type Edit = Box<dyn Fn(&mut GraphProto)>;
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
        for (what, edit) in cases {
            let mut g = linear();
            edit(&mut g);
            let before = g.clone();
            assert_eq!(fuse_int8_linears(&mut g), 0, "{what}");
            assert_eq!(g, before, "{what}");
        }
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
}
