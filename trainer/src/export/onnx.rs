//! The BERT multi-label model as an ONNX graph (opset 17), in f32 or int8.
//!
//! Graph (B batch and T tokens dynamic, H hidden, N heads, Dh = H / N, I intermediate, L labels):
//!
//! ```text
//! input_ids [B, T] i64, attention_mask [B, T] i64
//! x    = LayerNorm(Gather(word_emb, input_ids) + type_emb[0] + Slice(pos_emb, 0, T))  [B, T, H]
//! ext  = Unsqueeze(Cast(attention_mask) * 1e9 + (-1e9), [1, 2])                       [B, 1, 1, T]
//! per layer:
//!   q, k, v = lin_q(x), lin_k(x), lin_v(x), split into heads                         [B, N, T, Dh]
//!   p   = Softmax(q k^T * Dh^-0.5 + ext)                                                [B, N, T, T]
//!   a   = LayerNorm(lin_o(merge(p v)) + x)
//!   x   = LayerNorm(lin_out(GELU_erf(lin_i(a))) + a)
//! pooled = x[:, 0]  (Pooling::Cls)  or  sum_t(x * m) / max(sum_t(m), 1)  (Pooling::Mean) [B, H]
//! logits = classifier([tanh(pooler(] pooled [))])                                      [B, L]
//! ```
//!
//! The mask is the candle model's convention exactly: (1 - m) * -1e9 is written as
//! m * 1e9 + (-1e9), which is exactly 0 for real keys. Token types are all 0, so the type
//! embedding is its row 0 added as a constant. GELU is 0.5 * x * (1 + erf(x / sqrt 2)).
//!
//! A `lin_*` is `MatMul(x, W^T) + b` in f32. In int8 ([`Precision::Int8`]) every encoder
//! linear becomes
//!
//! ```text
//! (x_q u8, x_scale f32, x_zp u8) = DynamicQuantizeLinear(x)        (once per distinct x)
//! y = Cast<f32>(MatMulInteger(x_q, Wq [K, N] s8, x_zp)) * (x_scale * w_scale [N]) + b
//! ```
//!
//! with per-output-channel symmetric weights (zero point 0, so the optional weight zero
//! point input is left out). Embeddings, LayerNorm, softmax, the attention matmuls
//! (activation x activation) and the head stay f32, and so do the encoder linears whose
//! [`LinearKind`] is in [`BuildOptions::keep_f32`] (mixed precision; none by default).
//!
//! Accuracy (measurements in BENCHMARKS.md): on trained tiny students the int8 file is close
//! to f32 per probability. On all-MiniLM-L6-v2 with a head giving realistic logits it is
//! several times further off with per-tensor activations, and no single kind of linear causes
//! it: each kind quantized alone costs part of the error, and weight quantization alone already
//! a share of it. The int8 outputs are also chaotic there: a 1e-7 relative input perturbation
//! moves them by about the int8 error itself (a u8 code flip perturbs the next quantized tensor
//! by one step, which flips codes there, and so on), so two correct runtimes (tract,
//! onnxruntime) disagree by about as much as int8 and f32 do. Per-row activations
//! ([`Int8Form::ExpandedPerRow`]) and keeping the feed-forward block in f32
//! ([`LinearKinds::FFN`]) each reduce the error, at a cost in speed.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::ModelProto;

use super::graph::{attr_float, attr_int, attr_ints, Dim, GraphBuilder};
use super::quantize::{quantize_per_channel, quantize_table_rows, transpose};
use super::{ExportError, Precision};
use crate::models::bert::{Config, HeadConfig, Pooling};
use crate::models::common::MASK_NEG;

/// Name of the token id input.
pub const INPUT_IDS: &str = "input_ids";
/// Name of the attention mask input (1 real token, 0 padding).
pub const ATTENTION_MASK: &str = "attention_mask";
/// Name of the logits output.
pub const LOGITS: &str = "logits";

/// Which operators an int8 linear layer is made of. [`Int8Form::DynamicMatMulInteger`] is the
/// default (what `ckd export` writes): fastest in onnxruntime and, with the vectorized
/// `DynamicQuantizeLinear` of `ckd_edge::ops::dynamic_quantize`, in tract for concrete and symbolic input
/// shapes alike. The expanded forms run fast in stock tract only in plans optimized for a
/// concrete input shape (with symbolic shapes tract leaves their broadcasting element-wise
/// ops unfused); [`Int8Form::ExpandedPerRow`] is the more accurate one (on MiniLM, a smaller
/// probability error than per-tensor activations) at some more time (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Form {
    /// `DynamicQuantizeLinear` + `MatMulInteger` (u8 x s8 -> i32) + f32 rescale: the form
    /// onnxruntime runs with integer kernels.
    DynamicMatMulInteger,
    /// The same arithmetic with `DynamicQuantizeLinear` written out in standard ops (its ONNX
    /// definition): `ReduceMin`/`ReduceMax` -> scale and zero point, then
    /// `Cast<u8>(Clip(x / scale + zp + 0.5, 0, 255))` (the truncating cast rounds; exact ties
    /// go up rather than to even), feeding `MatMulInteger(x_q, W, zp)`.
    ExpandedPerTensor,
    /// Per-token (per-row) asymmetric u8 activations: min/max over the last axis, so each
    /// token has its own scale and zero point. `MatMulInteger` takes no zero point
    /// (onnxruntime accepts only a scalar one); the zero point is removed after the matmul
    /// with the weight's column sums: `y = (acc - zp_row * colsum(Wq)) * scale_row * w_scale + b`.
    ExpandedPerRow,
}

/// The six encoder linear layers of a BERT layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearKind {
    /// `attention.self.query` (H -> H, input: the layer input).
    Query,
    /// `attention.self.key` (H -> H, input: the layer input).
    Key,
    /// `attention.self.value` (H -> H, input: the layer input).
    Value,
    /// `attention.output.dense` (H -> H, input: the attention context).
    AttentionOutput,
    /// `intermediate.dense` (H -> I, input: the attention block's output).
    Intermediate,
    /// `output.dense` (I -> H, input: the GELU activation).
    Output,
}

impl LinearKind {
    /// Every kind, in graph order.
    pub const ALL: [LinearKind; 6] = [
        LinearKind::Query,
        LinearKind::Key,
        LinearKind::Value,
        LinearKind::AttentionOutput,
        LinearKind::Intermediate,
        LinearKind::Output,
    ];

    /// Tensor name prefix within `encoder.layer.{l}`.
    pub fn suffix(self) -> &'static str {
        match self {
            LinearKind::Query => "attention.self.query",
            LinearKind::Key => "attention.self.key",
            LinearKind::Value => "attention.self.value",
            LinearKind::AttentionOutput => "attention.output.dense",
            LinearKind::Intermediate => "intermediate.dense",
            LinearKind::Output => "output.dense",
        }
    }
}

/// A set of [`LinearKind`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LinearKinds(u8);

impl LinearKinds {
    /// No linear.
    pub const NONE: LinearKinds = LinearKinds(0);
    /// The feed-forward block: [`LinearKind::Intermediate`] and [`LinearKind::Output`].
    pub const FFN: LinearKinds = LinearKinds(1 << LinearKind::Intermediate as u8 | 1 << LinearKind::Output as u8);

    /// This set with `k` added.
    pub const fn with(self, k: LinearKind) -> Self {
        LinearKinds(self.0 | 1 << k as u8)
    }

    pub const fn contains(self, k: LinearKind) -> bool {
        self.0 & (1 << k as u8) != 0
    }
}

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    pub precision: Precision,
    pub int8_form: Int8Form,
    /// In an int8 build, the encoder linears kept in f32 (in every layer). Empty by default.
    pub keep_f32: LinearKinds,
    /// Store the word embedding table as per-row symmetric s8 codes + one f32 scale per row
    /// (a quarter of the f32 table's bytes: MiniLM 11.7 MB instead of 46.9 MB); the looked-up
    /// rows are dequantized to f32 right after the `Gather`, so the embedding sum, LayerNorm
    /// and everything after stay f32. Off by default (the table stays f32); for devices where
    /// memory is the constraint. Position and token-type
    /// embeddings stay f32 (small). Independent of `precision`.
    pub int8_embeddings: bool,
}

impl BuildOptions {
    /// The default build of `precision`: [`Int8Form::DynamicMatMulInteger`] for every encoder
    /// linear in int8.
    pub fn new(precision: Precision) -> Self {
        Self {
            precision,
            int8_form: Int8Form::DynamicMatMulInteger,
            keep_f32: LinearKinds::NONE,
            int8_embeddings: false,
        }
    }

    /// `precision` int8 with `form` and the linears `keep_f32` kept in f32.
    pub const fn int8(int8_form: Int8Form, keep_f32: LinearKinds) -> Self {
        Self { precision: Precision::Int8, int8_form, keep_f32, int8_embeddings: false }
    }
}

/// Reads the model's tensors by name, checking shapes; errors name the tensor.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ExportError> {
        let t = self.tensors.get(name).ok_or_else(|| ExportError::MissingTensor(name.to_string()))?;
        if t.dims() != shape {
            return Err(ExportError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
            return Err(ExportError::NonFinite { name: name.to_string(), index: bad });
        }
        Ok(v)
    }
}

/// Counts of what the builder emitted, for the export report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Nodes in the graph.
    pub nodes: usize,
    /// Linear layers written as integer matmuls.
    pub int8_linears: usize,
    /// Linear layers written as f32 matmuls.
    pub f32_linears: usize,
}

struct Builder<'a> {
    g: GraphBuilder,
    w: Weights<'a>,
    opts: BuildOptions,
    /// Quantized activations already emitted, by source value name: (x_q, x_scale, x_zp).
    quantized: HashMap<String, (String, String, String)>,
    /// Shared scalar constants already emitted.
    scalars: std::collections::HashSet<String>,
    stats: GraphStats,
}

impl Builder<'_> {
    /// The encoder linear `kind` of the layer `layer_prefix` (`encoder.layer.{l}`): int8 unless
    /// the options keep its kind in f32.
    fn encoder_linear(
        &mut self,
        x: &str,
        layer_prefix: &str,
        kind: LinearKind,
        k: usize,
        n: usize,
    ) -> Result<String, ExportError> {
        let int8 = !self.opts.keep_f32.contains(kind);
        self.linear(x, &format!("{layer_prefix}.{}", kind.suffix()), k, n, int8)
    }

    /// `y = x W^T + b` for the linear `prefix` (`{prefix}.weight` [n, k], `{prefix}.bias` [n]).
    fn linear(&mut self, x: &str, prefix: &str, k: usize, n: usize, int8: bool) -> Result<String, ExportError> {
        let w = self.w.get(&format!("{prefix}.weight"), &[n, k])?;
        let b = self.w.get(&format!("{prefix}.bias"), &[n])?;
        let bias = self.g.const_f32(&format!("{prefix}.bias"), &[n], &b)?;
        if !(int8 && self.opts.precision == Precision::Int8) {
            self.stats.f32_linears += 1;
            let wt = self.g.const_f32(&format!("{prefix}.weight_t"), &[k, n], &transpose(&w, n, k))?;
            let y = self.g.node("MatMul", &[x, &wt], format!("{prefix}.matmul"), vec![])?;
            return self.g.node("Add", &[&y, &bias], format!("{prefix}.out"), vec![]);
        }
        self.stats.int8_linears += 1;
        let qw = quantize_per_channel(&w, n, k)
            .ok_or_else(|| ExportError::Graph(format!("cannot quantize {prefix}.weight")))?;
        match self.opts.int8_form {
            Int8Form::DynamicMatMulInteger | Int8Form::ExpandedPerTensor => {
                let (xq, xs, xz) = self.dynamic_quantize(x)?;
                let wq = self.g.const_i8(&format!("{prefix}.weight_q"), &[k, n], &qw.q)?;
                let ws = self.g.const_f32(&format!("{prefix}.weight_scale"), &[n], &qw.scales)?;
                let acc = self.g.node("MatMulInteger", &[&xq, &wq, &xz], format!("{prefix}.matmul_i32"), vec![])?;
                let accf = self.g.node(
                    "Cast",
                    &[&acc],
                    format!("{prefix}.matmul_f32"),
                    vec![attr_int("to", DataType::Float as i64)],
                )?;
                let scale = self.g.node("Mul", &[&xs, &ws], format!("{prefix}.scale"), vec![])?;
                let y = self.g.node("Mul", &[&accf, &scale], format!("{prefix}.rescaled"), vec![])?;
                self.g.node("Add", &[&y, &bias], format!("{prefix}.out"), vec![])
            }
            Int8Form::ExpandedPerRow => {
                let (xq, xs, xzf) = self.quantize_rows(x)?;
                let wq = self.g.const_i8(&format!("{prefix}.weight_q"), &[k, n], &qw.q)?;
                let ws = self.g.const_f32(&format!("{prefix}.weight_scale"), &[n], &qw.scales)?;
                let colsum: Vec<f32> =
                    (0..n).map(|nn| (0..k).map(|kk| i32::from(qw.q[kk * n + nn])).sum::<i32>() as f32).collect();
                let cs = self.g.const_f32(&format!("{prefix}.weight_colsum"), &[1, n], &colsum)?;
                let acc = self.g.node("MatMulInteger", &[&xq, &wq], format!("{prefix}.matmul_i32"), vec![])?;
                let accf = self.g.node(
                    "Cast",
                    &[&acc],
                    format!("{prefix}.matmul_f32"),
                    vec![attr_int("to", DataType::Float as i64)],
                )?;
                // zp_row [.., 1] x colsum [1, N] as a K = 1 matmul: tract runs it in its f32
                // kernel, where a broadcasting Mul of this outer product is a slow generic loop.
                let corr = self.g.node("MatMul", &[&xzf, &cs], format!("{prefix}.zp_correction"), vec![])?;
                let centered = self.g.node("Sub", &[&accf, &corr], format!("{prefix}.centered"), vec![])?;
                let y = self.g.node("Mul", &[&centered, &xs], format!("{prefix}.rescaled_rows"), vec![])?;
                let y = self.g.node("Mul", &[&y, &ws], format!("{prefix}.rescaled"), vec![])?;
                self.g.node("Add", &[&y, &bias], format!("{prefix}.out"), vec![])
            }
        }
    }

    /// Asymmetric u8 quantization of `x` over `axes` (all when `None`), as ONNX defines
    /// `DynamicQuantizeLinear`: range [min(x, 0), max(x, 0)], scale = range / 255,
    /// zp = clip(round(-min / scale), 0, 255), x_q = clip(round(x / scale) + zp, 0, 255).
    /// Returns (x_q u8, scale f32, zp f32) with scale and zp of rank 0 (per tensor) or keeping
    /// the reduced axis as 1 (per row).
    fn quantize_expanded(&mut self, x: &str, per_row: bool) -> Result<(String, String, String), ExportError> {
        let tag = if per_row { "qr" } else { "qt" };
        let p = format!("{x}.{tag}");
        let reduce_attrs = |keep: i64| {
            let mut a = vec![attr_int("keepdims", keep)];
            if per_row {
                a.push(attr_ints("axes", &[-1]));
            }
            a
        };
        let keep = i64::from(per_row);
        let mn = self.g.node("ReduceMin", &[x], format!("{p}.min"), reduce_attrs(keep))?;
        let mx = self.g.node("ReduceMax", &[x], format!("{p}.max"), reduce_attrs(keep))?;
        let zero = self.scalar("const.q.zero", 0.0)?;
        let mn = self.g.node("Min", &[&mn, &zero], format!("{p}.min0"), vec![])?;
        let mx = self.g.node("Max", &[&mx, &zero], format!("{p}.max0"), vec![])?;
        let range = self.g.node("Sub", &[&mx, &mn], format!("{p}.range"), vec![])?;
        // An all-zero input would give scale 0 (and NaN codes): floor the range.
        let tiny = self.scalar("const.q.tiny_range", 1e-30)?;
        let range = self.g.node("Max", &[&range, &tiny], format!("{p}.range_floor"), vec![])?;
        let q255 = self.scalar("const.q.255", 255.0)?;
        let scale = self.g.node("Div", &[&range, &q255], format!("{p}.scale"), vec![])?;
        let neg = self.g.node("Neg", &[&mn], format!("{p}.neg_min"), vec![])?;
        let zp = self.g.node("Div", &[&neg, &scale], format!("{p}.zp_raw"), vec![])?;
        let zp = self.g.node("Round", &[&zp], format!("{p}.zp_round"), vec![])?;
        let zp = self.g.node("Clip", &[&zp, &zero, &q255], format!("{p}.zp"), vec![])?;
        // round(v) + zp = trunc(v + zp + 0.5) once clipped to [0, 255] (non-negative), so the
        // rounding is folded into the truncating Cast: one `Round` pass less. (Ties round up
        // instead of to even: a different but equally valid code on exact ties.)
        let half = self.scalar("const.q.half", 0.5)?;
        let zp_half = self.g.node("Add", &[&zp, &half], format!("{p}.zp_half"), vec![])?;
        let v = self.g.node("Div", &[x, &scale], format!("{p}.scaled"), vec![])?;
        let v = self.g.node("Add", &[&v, &zp_half], format!("{p}.shifted"), vec![])?;
        let v = self.g.node("Clip", &[&v, &zero, &q255], format!("{p}.clipped"), vec![])?;
        let to_u8 = vec![attr_int("to", DataType::Uint8 as i64)];
        let xq = self.g.node("Cast", &[&v], format!("{p}.u8"), to_u8)?;
        Ok((xq, scale, zp))
    }

    /// Per-row quantization of `x` (cached): (x_q u8, scale [.., 1], zp f32 [.., 1]).
    fn quantize_rows(&mut self, x: &str) -> Result<(String, String, String), ExportError> {
        if let Some(q) = self.quantized.get(x) {
            return Ok(q.clone());
        }
        let q = self.quantize_expanded(x, true)?;
        self.quantized.insert(x.to_string(), q.clone());
        Ok(q)
    }

    /// A shared f32 scalar constant.
    fn scalar(&mut self, name: &str, v: f32) -> Result<String, ExportError> {
        if self.scalars.insert(name.to_string()) {
            self.g.const_f32(name, &[], &[v])?;
        }
        Ok(name.to_string())
    }

    /// Per-tensor u8 quantization of `x` (cached): (x_q u8, scale f32, zero point u8).
    fn dynamic_quantize(&mut self, x: &str) -> Result<(String, String, String), ExportError> {
        if let Some(q) = self.quantized.get(x) {
            return Ok(q.clone());
        }
        let (q, s, z) = if self.opts.int8_form == Int8Form::ExpandedPerTensor {
            let (q, s, zf) = self.quantize_expanded(x, false)?;
            let z =
                self.g.node("Cast", &[&zf], format!("{x}.qt.zp_u8"), vec![attr_int("to", DataType::Uint8 as i64)])?;
            (q, s, z)
        } else {
            let outs = [format!("{x}.q"), format!("{x}.q_scale"), format!("{x}.q_zero_point")];
            self.g.node_n("DynamicQuantizeLinear", &[x], &outs, vec![])?;
            let [q, s, z] = outs;
            (q, s, z)
        };
        self.quantized.insert(x.to_string(), (q.clone(), s.clone(), z.clone()));
        Ok((q, s, z))
    }

    fn layer_norm(&mut self, x: &str, prefix: &str, h: usize, eps: f64) -> Result<String, ExportError> {
        let gamma = self.w.get(&format!("{prefix}.weight"), &[h])?;
        let beta = self.w.get(&format!("{prefix}.bias"), &[h])?;
        let gamma = self.g.const_f32(&format!("{prefix}.weight"), &[h], &gamma)?;
        let beta = self.g.const_f32(&format!("{prefix}.bias"), &[h], &beta)?;
        self.g.node(
            "LayerNormalization",
            &[x, &gamma, &beta],
            format!("{prefix}.out"),
            vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)],
        )
    }
}

/// Builds the ONNX model of a BERT multi-label classifier from its tensors (model names, no
/// `bert.` prefix, as in a saved student's `model.safetensors`). Pure: no I/O.
pub fn build_model(
    cfg: &Config,
    head: &HeadConfig,
    tensors: &HashMap<String, Tensor>,
    opts: BuildOptions,
) -> Result<(ModelProto, GraphStats), ExportError> {
    cfg.validate()?;
    if head.num_labels == 0 {
        return Err(ExportError::Graph("num_labels must be > 0".into()));
    }
    let mut b = Builder {
        g: GraphBuilder::new(),
        w: Weights { tensors },
        opts,
        quantized: HashMap::new(),
        scalars: Default::default(),
        stats: GraphStats::default(),
    };
    let io_dims = [Dim::Param("batch"), Dim::Param("seq")];
    let ids = b.g.input(INPUT_IDS, DataType::Int64, &io_dims)?;
    let mask = b.g.input(ATTENTION_MASK, DataType::Int64, &io_dims)?;
    let (mut x, zero1, one1) = b.embeddings(cfg, &ids)?;
    let (maskf, ext) = b.attention_mask(&mask)?;
    let c = b.layer_consts(cfg, zero1, one1, ext)?;
    for l in 0..cfg.num_hidden_layers {
        // Only [CLS] (position 0) leaves the encoder, so the last layer's queries, attention
        // output and feed-forward run on that row alone ([batch, 1, H]); its keys and values
        // still see every position. Exact: the other rows of the last layer feed nothing.
        // (In int8 the [CLS] row is quantized on its own range for the query.) Mean pooling
        // reads every row, so there the last layer runs in full.
        let cls_only = l + 1 == cfg.num_hidden_layers && head.pooling == Pooling::Cls;
        x = b.encoder_layer(cfg, l, &x, cls_only, &c)?;
    }
    let pooled = b.pool(cfg, head, &x, &maskf, &c)?;
    let logits = b.classifier(cfg, head, &pooled)?;
    b.g.output(&logits, DataType::Float, &[Dim::Param("batch"), Dim::Fixed(head.num_labels as i64)])?;

    b.stats.nodes = b.g.node_count();
    let meta = [
        ("ckd.precision", opts.precision.as_str().to_string()),
        ("ckd.int8_form", format!("{:?}", opts.int8_form)),
        (
            "ckd.int8_keep_f32",
            format!("{:?}", LinearKind::ALL.iter().filter(|k| opts.keep_f32.contains(**k)).collect::<Vec<_>>()),
        ),
        ("ckd.num_labels", head.num_labels.to_string()),
        ("ckd.int8_embeddings", opts.int8_embeddings.to_string()),
    ];
    Ok((b.g.finish("ckd_bert_multilabel", &meta), b.stats))
}

/// Values every encoder layer (and the mean pooling) reads.
struct LayerConsts {
    /// `[0]` and `[1]` (i64, 1-d): slice bounds and the sequence axis.
    zero1: String,
    one1: String,
    /// The additive attention mask [B, 1, 1, T].
    ext: String,
    /// Reshape targets [0, 0, N, Dh] and [0, 0, H].
    split_shape: String,
    merge_shape: String,
    /// Dh^-0.5, 1/sqrt 2, 1 and 0.5 (f32 scalars).
    scale: String,
    inv_sqrt2: String,
    one: String,
    half: String,
}

impl Builder<'_> {
    /// `LayerNorm(Gather(word_emb, ids) + type_emb[0] + Slice(pos_emb, 0, T))` [B, T, H] (the
    /// word table per-row int8 with [`BuildOptions::int8_embeddings`]), and the constants `[0]`
    /// and `[1]` (i64, 1-d) it made for the slice.
    fn embeddings(&mut self, cfg: &Config, ids: &str) -> Result<(String, String, String), ExportError> {
        let h = cfg.hidden_size;
        let word = self.w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
        let pos = self.w.get("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h])?;
        let types = self.w.get("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, h])?;
        let pos = self.g.const_f32("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h], &pos)?;
        let type0 = self.g.const_f32("embeddings.token_type_embeddings.row0", &[h], &types[..h])?;
        let words = self.word_embeddings(cfg, &word, ids)?;
        let x = self.g.node("Add", &[&words, &type0], "embeddings.words_types", vec![])?;
        let seq = self.g.node("Shape", &[ids], "embeddings.seq_len", vec![attr_int("start", 1), attr_int("end", 2)])?;
        let zero1 = self.g.const_i64("const.zero_1d", &[1], &[0])?;
        let one1 = self.g.const_i64("const.one_1d", &[1], &[1])?;
        let positions = self.g.node("Slice", &[&pos, &zero1, &seq, &zero1], "embeddings.positions", vec![])?;
        let x = self.g.node("Add", &[&x, &positions], "embeddings.sum", vec![])?;
        let x = self.layer_norm(&x, "embeddings.LayerNorm", h, cfg.layer_norm_eps)?;
        Ok((x, zero1, one1))
    }

    /// The rows of the word table `word` [V, H] at `ids`, f32 [B, T, H].
    fn word_embeddings(&mut self, cfg: &Config, word: &[f32], ids: &str) -> Result<String, ExportError> {
        let h = cfg.hidden_size;
        if self.opts.int8_embeddings {
            // words = Cast<f32>(Gather(codes [V, H] s8, ids)) * Gather(scales [V, 1], ids).
            let (q, scales) = quantize_table_rows(word, cfg.vocab_size, h)
                .ok_or_else(|| ExportError::Graph("cannot quantize embeddings.word_embeddings.weight".into()))?;
            let q = self.g.const_i8("embeddings.word_embeddings.weight_q", &[cfg.vocab_size, h], &q)?;
            let s = self.g.const_f32("embeddings.word_embeddings.weight_scale", &[cfg.vocab_size, 1], &scales)?;
            let axis0 = || vec![attr_int("axis", 0)];
            let wq = self.g.node("Gather", &[&q, ids], "embeddings.words_q", axis0())?;
            let ws = self.g.node("Gather", &[&s, ids], "embeddings.words_scale", axis0())?;
            let to_f32 = vec![attr_int("to", DataType::Float as i64)];
            let wf = self.g.node("Cast", &[&wq], "embeddings.words_q_f32", to_f32)?;
            self.g.node("Mul", &[&wf, &ws], "embeddings.words", vec![])
        } else {
            let word = self.g.const_f32("embeddings.word_embeddings.weight", &[cfg.vocab_size, h], word)?;
            self.g.node("Gather", &[&word, ids], "embeddings.words", vec![attr_int("axis", 0)])
        }
    }

    /// The mask as f32 [B, T], and the additive attention mask [B, 1, 1, T]:
    /// `m * 1e9 + (-1e9)`, 0 for real keys.
    fn attention_mask(&mut self, mask: &str) -> Result<(String, String), ExportError> {
        let maskf = self.g.node("Cast", &[mask], "mask.f32", vec![attr_int("to", DataType::Float as i64)])?;
        let big = self.g.const_f32("const.mask_scale", &[], &[-MASK_NEG])?;
        let neg = self.g.const_f32("const.mask_neg", &[], &[MASK_NEG])?;
        let m = self.g.node("Mul", &[&maskf, &big], "mask.scaled", vec![])?;
        let m = self.g.node("Add", &[&m, &neg], "mask.additive", vec![])?;
        let axes12 = self.g.const_i64("const.axes_1_2", &[2], &[1, 2])?;
        let ext = self.g.node("Unsqueeze", &[&m, &axes12], "mask.extended", vec![])?;
        Ok((maskf, ext))
    }

    /// Emits the layers' shape and scalar constants.
    fn layer_consts(
        &mut self,
        cfg: &Config,
        zero1: String,
        one1: String,
        ext: String,
    ) -> Result<LayerConsts, ExportError> {
        let (h, nh, dh) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
        let split_shape = self.g.const_i64("const.split_heads_shape", &[4], &[0, 0, nh as i64, dh as i64])?;
        let merge_shape = self.g.const_i64("const.merge_heads_shape", &[3], &[0, 0, h as i64])?;
        let scale = self.g.const_f32("const.attn_scale", &[], &[(1.0 / (dh as f64).sqrt()) as f32])?;
        let inv_sqrt2 = self.g.const_f32("const.inv_sqrt2", &[], &[std::f32::consts::FRAC_1_SQRT_2])?;
        let one = self.g.const_f32("const.one", &[], &[1.0])?;
        let half = self.g.const_f32("const.half", &[], &[0.5])?;
        Ok(LayerConsts { zero1, one1, ext, split_shape, merge_shape, scale, inv_sqrt2, one, half })
    }

    /// Encoder layer `l` on `x` [B, T, H]; with `cls_only`, its queries, attention output and
    /// feed-forward run on row 0 alone (the result is [B, 1, H]).
    fn encoder_layer(
        &mut self,
        cfg: &Config,
        l: usize,
        x: &str,
        cls_only: bool,
        c: &LayerConsts,
    ) -> Result<String, ExportError> {
        let p = format!("encoder.layer.{l}");
        let rows = if cls_only {
            self.g.node("Slice", &[x, &c.zero1, &c.one1, &c.one1], format!("{p}.cls_row"), vec![])?
        } else {
            x.to_string()
        };
        let a = self.self_attention(cfg, &p, x, &rows, c)?;
        self.feed_forward(cfg, &p, &a, c)
    }

    /// `LayerNorm(lin_o(merge(Softmax(q k^T * Dh^-0.5 + ext) v)) + rows)` of the layer `p`:
    /// queries from `rows`, keys and values from `x`.
    fn self_attention(
        &mut self,
        cfg: &Config,
        p: &str,
        x: &str,
        rows: &str,
        c: &LayerConsts,
    ) -> Result<String, ExportError> {
        let h = cfg.hidden_size;
        let q = self.encoder_linear(rows, p, LinearKind::Query, h, h)?;
        let k = self.encoder_linear(x, p, LinearKind::Key, h, h)?;
        let v = self.encoder_linear(x, p, LinearKind::Value, h, h)?;
        let qh = self.heads(p, &q, "q", &[0, 2, 1, 3], c)?;
        let kt = self.heads(p, &k, "k", &[0, 2, 3, 1], c)?;
        let vh = self.heads(p, &v, "v", &[0, 2, 1, 3], c)?;
        let s = self.g.node("MatMul", &[&qh, &kt], format!("{p}.attention.scores"), vec![])?;
        let s = self.g.node("Mul", &[&s, &c.scale], format!("{p}.attention.scaled"), vec![])?;
        let s = self.g.node("Add", &[&s, &c.ext], format!("{p}.attention.masked"), vec![])?;
        let probs = self.g.node("Softmax", &[&s], format!("{p}.attention.probs"), vec![attr_int("axis", -1)])?;
        let ctx = self.g.node("MatMul", &[&probs, &vh], format!("{p}.attention.context"), vec![])?;
        let ctx = self.g.node(
            "Transpose",
            &[&ctx],
            format!("{p}.attention.context_t"),
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        )?;
        let ctx = self.g.node("Reshape", &[&ctx, &c.merge_shape], format!("{p}.attention.context_merged"), vec![])?;
        let o = self.encoder_linear(&ctx, p, LinearKind::AttentionOutput, h, h)?;
        let o = self.g.node("Add", &[&o, rows], format!("{p}.attention.residual"), vec![])?;
        self.layer_norm(&o, &format!("{p}.attention.output.LayerNorm"), h, cfg.layer_norm_eps)
    }

    /// `v` [B, T, H] split into heads [B, N, T, Dh] and transposed by `perm`.
    fn heads(&mut self, p: &str, v: &str, what: &str, perm: &[i64], c: &LayerConsts) -> Result<String, ExportError> {
        let r = self.g.node("Reshape", &[v, &c.split_shape], format!("{p}.attention.{what}.split"), vec![])?;
        self.g.node("Transpose", &[&r], format!("{p}.attention.{what}.heads"), vec![attr_ints("perm", perm)])
    }

    /// `LayerNorm(lin_out(GELU_erf(lin_i(a))) + a)` of the layer `p`.
    fn feed_forward(&mut self, cfg: &Config, p: &str, a: &str, c: &LayerConsts) -> Result<String, ExportError> {
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let i = self.encoder_linear(a, p, LinearKind::Intermediate, h, inter)?;
        let e = self.g.node("Mul", &[&i, &c.inv_sqrt2], format!("{p}.intermediate.gelu_div"), vec![])?;
        let e = self.g.node("Erf", &[&e], format!("{p}.intermediate.gelu_erf"), vec![])?;
        let e = self.g.node("Add", &[&e, &c.one], format!("{p}.intermediate.gelu_add"), vec![])?;
        let e = self.g.node("Mul", &[&i, &e], format!("{p}.intermediate.gelu_mul"), vec![])?;
        let act = self.g.node("Mul", &[&e, &c.half], format!("{p}.intermediate.gelu"), vec![])?;
        let o = self.encoder_linear(&act, p, LinearKind::Output, inter, h)?;
        let o = self.g.node("Add", &[&o, a], format!("{p}.output.residual"), vec![])?;
        self.layer_norm(&o, &format!("{p}.output.LayerNorm"), h, cfg.layer_norm_eps)
    }

    /// The pooled encoder output [B, H] (`maskf`: the f32 mask [B, T]), through the pooler when
    /// the head has one.
    fn pool(
        &mut self,
        cfg: &Config,
        head: &HeadConfig,
        x: &str,
        maskf: &str,
        c: &LayerConsts,
    ) -> Result<String, ExportError> {
        let cls = match head.pooling {
            // Head on [CLS] (position 0; the last layer kept that row only, [batch, 1, H]).
            Pooling::Cls => {
                let zero = self.g.const_i64("const.zero", &[], &[0])?;
                self.g.node("Gather", &[x, &zero], "head.cls", vec![attr_int("axis", 1)])?
            }
            // Masked mean over positions: sum_t(x * m) / max(sum_t(m), 1), [batch, H].
            Pooling::Mean => {
                let axis2 = self.g.const_i64("const.axis_2", &[1], &[2])?;
                let m3 = self.g.node("Unsqueeze", &[maskf, &axis2], "head.mask", vec![])?;
                let xm = self.g.node("Mul", &[x, &m3], "head.masked", vec![])?;
                let keep0 = vec![attr_int("keepdims", 0)];
                let sum = self.g.node("ReduceSum", &[&xm, &c.one1], "head.sum", keep0.clone())?;
                let n = self.g.node("ReduceSum", &[&m3, &c.one1], "head.count", keep0)?;
                let n = self.g.node("Max", &[&n, &c.one], "head.count_min1", vec![])?;
                self.g.node("Div", &[&sum, &n], "head.mean", vec![])?
            }
        };
        if head.use_pooler {
            let h = cfg.hidden_size;
            let pooled = self.linear(&cls, "pooler.dense", h, h, false)?;
            return self.g.node("Tanh", &[&pooled], "pooler.tanh", vec![]);
        }
        Ok(cls)
    }

    /// The logits [B, L] (always f32): `MatMul(pooled, W^T) + b`.
    fn classifier(&mut self, cfg: &Config, head: &HeadConfig, pooled: &str) -> Result<String, ExportError> {
        let (h, n) = (cfg.hidden_size, head.num_labels);
        let w = self.w.get("classifier.weight", &[n, h])?;
        let bias = self.w.get("classifier.bias", &[n])?;
        let wt = self.g.const_f32("classifier.weight_t", &[h, n], &transpose(&w, n, h))?;
        let bias = self.g.const_f32("classifier.bias", &[n], &bias)?;
        let y = self.g.node("MatMul", &[pooled, &wt], "classifier.matmul", vec![])?;
        self.stats.f32_linears += 1;
        self.g.node("Add", &[&y, &bias], LOGITS, vec![])
    }
}
