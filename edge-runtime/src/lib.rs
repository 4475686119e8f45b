//! ckd-edge: the bedside runtime of ckd-ehr. CPU only: tract for the model, HF `tokenizers`
//! (pure-Rust regex) for the text, no GPU dependencies, so it cross-compiles to ARM.
//!
//! [`Engine::open`] verifies a bundle (manifest envelope, label space, every file's SHA-256)
//! and builds the optimized tract plan once; [`Engine::predict`], [`Engine::predict_text`] and
//! [`Engine::predict_batch`] then only tokenize, run the plan and threshold. `Engine` is
//! `Send + Sync`: share one across threads.
//!
//! Text rendering (visit -> CKD-EHR text, knowledge clauses) and the truncation rule come from
//! `ckd-core`, exactly as in training.

use std::path::Path;
use std::sync::Arc;

use ckd_core::bundle::{Manifest, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use ckd_core::visit::{render, Visit};
use ckd_core::{LabelSet, NUM_LABELS};
use tract_onnx::prelude::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::{tvec, InferenceModelExt, IntoRunnable, Tensor as TractTensor, TypedRunnableModel};

pub use ckd_core;

mod error;
pub mod fuse;
mod kernels;
pub mod memory;
pub mod ops;
mod source;
#[cfg(test)]
mod testing;
pub mod tract_ops;

use error::model_err;
pub use error::EdgeError;
// The modules' paths before the `ops` and `fuse` folders (kept for one release).
pub use fuse::unpadded;
pub use ops::{attention, layer_norm, qlinear};
use source::Source;

/// Number of top phenotypes returned in [`Prediction::top_k`].
pub const TOP_K: usize = 5;

/// One prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Probability of each phenotype at the next visit, in label order.
    pub probs: [f32; NUM_LABELS],
    /// Phenotypes at or above the bundle's per-label thresholds.
    pub positive: LabelSet,
    /// The `TOP_K` most probable phenotypes, most probable first: (label, probability).
    pub top_k: heapless::Vec<(u8, f32), TOP_K>,
    /// Whether the input was cut to the bundle's maximum length.
    pub truncated: bool,
    /// Tokens fed to the model (special tokens included).
    pub tokens: usize,
}

/// One plan node's median time in [`Engine::profile_text`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// tract's operator name (after optimization: fused ops have their own names).
    pub op: String,
    /// Node name (from the ONNX node it comes from).
    pub node: String,
    /// Median milliseconds per run.
    pub ms: f64,
}

// Compile-time guarantee that one `Engine` can be shared across threads (the C API relies on it).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
};

/// How an [`Engine`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Threads per prediction. 1 (the default) runs each prediction on the calling thread with
    /// no pool; n > 1 gives the engine a private pool of n threads that runs each prediction
    /// (the calling thread waits) and splits tract's matrix products and the fused ops over
    /// those threads (needs the `threads` feature, else [`Engine::open_with`] fails). 0 means 1.
    pub threads: usize,
    /// Run int8 linears with ckd-edge's fused kernel ([`qlinear`]) where the CPU has it
    /// (x86_64 with AVX-512 VNNI; the default). `false` keeps tract's own int8 path, which
    /// gives the same values (for comparisons).
    pub int8_kernel: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { threads: 1, int8_kernel: true }
    }
}

/// Whether this build can run an engine on more than one thread (the `threads` feature).
pub const THREADS_SUPPORTED: bool = cfg!(feature = "threads");

fn executor(threads: usize) -> Result<Executor, EdgeError> {
    if threads <= 1 {
        return Ok(Executor::SingleThread);
    }
    #[cfg(feature = "threads")]
    {
        Ok(Executor::multithread_with_name(threads, "ckd-edge"))
    }
    #[cfg(not(feature = "threads"))]
    Err(EdgeError::Options(format!(
        "{threads} threads asked, but this build of ckd-edge runs one thread (rebuild with the `threads` feature)"
    )))
}

/// A loaded, verified bundle with its optimized plan.
pub struct Engine {
    plan: Arc<TypedRunnableModel>,
    /// The plan has no attention-mask adds ([`unpadded`]): it is exact only for unpadded
    /// inputs, so batches run one row at a time.
    unpadded: bool,
    tokenizer: tokenizers::Tokenizer,
    manifest: Manifest,
    executor: Executor,
}

impl Engine {
    /// Opens a bundle (directory or packed file) with the default [`EngineOptions`] (one thread).
    pub fn open(bundle: &Path) -> Result<Self, EdgeError> {
        Self::open_with(bundle, &EngineOptions::default())
    }

    /// Opens a bundle, a directory or a single file packed by `ckd pack` (the same files, the
    /// same checks): reads and checks `manifest.bin`, checks every file it lists
    /// against its SHA-256 (`model.onnx.data`, the tensors, is hashed as a stream), loads the
    /// tokenizer (padding and truncation cleared; its special ids must match the manifest)
    /// and optimizes the model once, loading its tensors one at a time from
    /// `model.onnx.data` (bundles with the tensors inside `model.onnx` load too).
    ///
    /// Peak memory: about the model's tensors once plus the largest tensor, not the whole
    /// file's bytes and its protobuf and tract's tensors at once; freed memory is returned
    /// after loading ([`memory::trim`]). The data file is read twice (hash, then tensors): a
    /// file replaced between the two reads is not detected.
    pub fn open_with(bundle: &Path, opts: &EngineOptions) -> Result<Self, EdgeError> {
        let executor = executor(opts.threads)?;
        let source = Source::open(bundle)?;
        let bundle_err = |source| EdgeError::Bundle { bundle: bundle.to_path_buf(), source };
        let manifest = Manifest::from_bytes(&source.read(MANIFEST_FILE)?).map_err(bundle_err)?;
        let model_bytes = source.read(MODEL_FILE)?;
        let tok_bytes = source.read(TOKENIZER_FILE)?;
        manifest.verify_file(MODEL_FILE, &model_bytes).map_err(bundle_err)?;
        manifest.verify_file(TOKENIZER_FILE, &tok_bytes).map_err(bundle_err)?;
        for f in manifest.files.iter().filter(|f| f.name != MODEL_FILE && f.name != TOKENIZER_FILE) {
            let (size, sha) = source.digest(&f.name)?;
            manifest.verify_digest(&f.name, size, sha).map_err(bundle_err)?;
        }
        // The model first: its optimization is the peak of loading, and the tokenizer's
        // structures (about 9 MB for a 30k WordPiece vocabulary) are not resident yet.
        // tract 0.23.9 can panic (index out of bounds in its shape analysis) on some malformed
        // ONNX graphs, as fuzzing showed: the panic becomes an error, like any other bad model.
        let (plan, unpadded) = std::panic::catch_unwind(|| load_plan(model_bytes, &source, true, opts.int8_kernel))
            .map_err(|_| {
            EdgeError::Model("model.onnx is malformed (tract panicked while analysing it)".into())
        })??;
        // Loading freed as much as the model keeps (file copies, unpacked weights): give it back
        // before the tokenizer is built (see `memory`).
        memory::trim();
        let tok_err = |msg: String| EdgeError::Tokenizer { bundle: bundle.to_path_buf(), msg };
        // tokenizers 0.23.2 panics (an `expect` in its decoder deserializer) on some malformed
        // `tokenizer.json` files: a damaged bundle must give an error, not take the device down.
        // (Builds with `panic = "abort"` cannot catch it; they rely on the manifest's sha256.)
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(&tok_bytes)).map_err(|_| {
            tok_err("tokenizer.json is malformed (the tokenizers crate panicked while parsing it)".into())
        })?;
        let mut tokenizer = parsed.map_err(|e| tok_err(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| tok_err(e.to_string()))?;
        let t = &manifest.tokenizer;
        for (name, id) in [("[PAD]", t.pad_id), ("[CLS]", t.cls_id), ("[SEP]", t.sep_id)] {
            if tokenizer.token_to_id(name) != Some(id) {
                return Err(tok_err(format!(
                    "{name} has id {:?}, the manifest says {id}",
                    tokenizer.token_to_id(name)
                )));
            }
        }
        Ok(Engine { plan, unpadded, tokenizer, manifest, executor })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Renders a visit exactly as in training (knowledge clauses from the bundle's table) and
    /// predicts.
    pub fn predict(&self, visit: &Visit) -> Result<Prediction, EdgeError> {
        let clauses = self.manifest.knowledge.as_ref().map(|k| k.clauses(visit.phenotypes())).unwrap_or_default();
        self.predict_text(&render(visit, &clauses).text)
    }

    /// Predicts from a text in the CKD-EHR layout.
    pub fn predict_text(&self, text: &str) -> Result<Prediction, EdgeError> {
        Ok(self.predict_batch(&[text])?.remove(0))
    }

    /// Token ids fed to the model for `text` (`[CLS] ... [SEP]`, truncated by the bundle's rule)
    /// and whether it was truncated.
    pub fn tokenize(&self, text: &str) -> Result<(Vec<u32>, bool), EdgeError> {
        self.encode(0, text)
    }

    /// [`Engine::tokenize`] for input `index` of a batch: its errors name that index.
    fn encode(&self, index: usize, text: &str) -> Result<(Vec<u32>, bool), EdgeError> {
        if text.trim().is_empty() {
            return Err(EdgeError::EmptyInput { index });
        }
        let enc = self.tokenizer.encode(text, true).map_err(|e| EdgeError::Encode { index, msg: e.to_string() })?;
        let mut ids = enc.get_ids().to_vec();
        let mut offsets = enc.get_offsets().to_vec();
        let truncated = self.manifest.tokenizer.truncate(&mut ids, &mut offsets);
        Ok((ids, truncated))
    }

    /// Predicts a batch. The same results as one call per text: when the bundle's mask branch
    /// is recognized ([`unpadded`], every bundle `ckd export` writes) the rows run one at a
    /// time, unpadded; otherwise as one batch padded to its longest input (then, in int8, a
    /// row's activation ranges can span the other rows and differ slightly).
    pub fn predict_batch(&self, texts: &[&str]) -> Result<Vec<Prediction>, EdgeError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // The first bad input's error, in input order.
        let encoded =
            texts.iter().enumerate().map(|(index, text)| self.encode(index, text)).collect::<Result<Vec<_>, _>>()?;
        let logits = if self.unpadded {
            let mut all = Vec::with_capacity(encoded.len() * NUM_LABELS);
            for (ids, _) in &encoded {
                all.extend(self.run(&[ids.as_slice()])?);
            }
            all
        } else {
            let rows: Vec<&[u32]> = encoded.iter().map(|(ids, _)| ids.as_slice()).collect();
            self.run(&rows)?
        };
        let mut preds = Vec::with_capacity(encoded.len());
        for ((e, truncated), row) in encoded.iter().zip(logits.chunks_exact(NUM_LABELS)) {
            let mut probs = [0f32; NUM_LABELS];
            for (p, &z) in probs.iter_mut().zip(row) {
                *p = sigmoid(z);
            }
            preds.push(self.decide(probs, *truncated, e.len()));
        }
        Ok(preds)
    }

    /// Where the time of one prediction goes: runs `text` `runs` times (after one warm-up) and
    /// returns each plan node's median time, slowest first. For tuning on a device; the
    /// timings include tract's per-node bookkeeping, so their sum is a little above
    /// [`Engine::predict_text`]'s time.
    pub fn profile_text(&self, text: &str, runs: usize) -> Result<Vec<NodeTime>, EdgeError> {
        use std::time::{Duration, Instant};
        use tract_onnx::prelude::TypedSimpleState;
        let (ids, _) = self.tokenize(text)?;
        let t = ids.len();
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let ids = TractTensor::from_shape(&[1, t], &ids).map_err(model_err)?;
        let mask = TractTensor::from_shape(&[1, t], &vec![1i64; t]).map_err(model_err)?;
        let model = self.plan.model();
        let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); model.nodes.len()];
        let mut state = TypedSimpleState::new(&self.plan).map_err(model_err)?;
        for run in 0..=runs.max(1) {
            let mut times = vec![Duration::ZERO; model.nodes.len()];
            multithread_tract_scope(self.executor.clone(), || {
                state.run_plan_with_eval(tvec!(ids.clone().into(), mask.clone().into()), |ctx, st, node, input| {
                    let t0 = Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, st, node, input);
                    times[node.id] += t0.elapsed();
                    r
                })
            })
            .map_err(model_err)?;
            if run > 0 {
                for (acc, t) in per_node.iter_mut().zip(times) {
                    acc.push(t.as_secs_f64() * 1e3);
                }
            }
        }
        let mut nodes: Vec<NodeTime> = model
            .nodes
            .iter()
            .zip(per_node.iter_mut())
            .map(|(n, t)| {
                t.sort_by(f64::total_cmp);
                NodeTime { op: n.op.name().to_string(), node: n.name.clone(), ms: t[t.len() / 2] }
            })
            .collect();
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(nodes)
    }

    /// Runs the plan on `rows` (see [`run_rows`]).
    fn run(&self, rows: &[&[u32]]) -> Result<Vec<f32>, EdgeError> {
        run_rows(&self.plan, &self.executor, rows, self.manifest.tokenizer.pad_id)
    }

    fn decide(&self, probs: [f32; NUM_LABELS], truncated: bool, tokens: usize) -> Prediction {
        let positive = LabelSet::from_labels(
            (0..NUM_LABELS as u8).filter(|&l| probs[l as usize] >= self.manifest.thresholds[l as usize]),
        );
        let mut order: [u8; NUM_LABELS] = core::array::from_fn(|i| i as u8);
        order.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
        let mut top_k = heapless::Vec::new();
        for &l in order.iter().take(TOP_K) {
            // Capacity is TOP_K and we take TOP_K: the push cannot fail.
            let _ = top_k.push((l, probs[l as usize]));
        }
        Prediction { probs, positive, top_k, truncated, tokens }
    }
}

/// Runs `plan` on `rows` padded to the longest (with `pad_id`, mask 0) and returns the logits,
/// row-major [rows, NUM_LABELS].
fn run_rows(
    plan: &Arc<TypedRunnableModel>,
    executor: &Executor,
    rows: &[&[u32]],
    pad_id: u32,
) -> Result<Vec<f32>, EdgeError> {
    let b = rows.len();
    let t = rows.iter().map(|ids| ids.len()).max().unwrap_or(1);
    let mut ids = vec![i64::from(pad_id); b * t];
    let mut mask = vec![0i64; b * t];
    for (row, e) in rows.iter().enumerate() {
        for (j, &id) in e.iter().enumerate() {
            ids[row * t + j] = i64::from(id);
            mask[row * t + j] = 1;
        }
    }
    let ids = TractTensor::from_shape(&[b, t], &ids).map_err(model_err)?;
    let mask = TractTensor::from_shape(&[b, t], &mask).map_err(model_err)?;
    in_pool(executor, || {
        let out = multithread_tract_scope(executor.clone(), || plan.run(tvec!(ids.into(), mask.into())))
            .map_err(model_err)?;
        let logits = out[0].to_plain_array_view::<f32>().map_err(model_err)?;
        if logits.shape() != [b, NUM_LABELS] {
            return Err(EdgeError::Model(format!(
                "logits have shape {:?}, expected [{b}, {NUM_LABELS}]",
                logits.shape()
            )));
        }
        Ok(logits.iter().copied().collect())
    })
}

/// Runs `f` on a thread of the executor's pool when it has several (else on the calling
/// thread). The plan's parallel ops then split work between that thread and the other pool
/// threads, and the calling thread sleeps: with the plan on the calling thread, n pool threads
/// plus the caller competed for n cores, and on a 2-core VM two-thread predictions at 128
/// tokens swung between 6.6 and 12.5 ms from run to run.
fn in_pool<R: Send>(executor: &Executor, f: impl FnOnce() -> R + Send) -> R {
    match executor {
        #[cfg(feature = "threads")]
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => pool.install(f),
        _ => f(),
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Optimizes an ONNX model into a runnable plan for the symbolic `[batch, seq]` input shape the
/// file declares (our exporter writes `dim_param` "batch" and "seq"), so one plan serves every
/// batch size and length. `DynamicQuantizeLinear` runs as [`ops::dynamic_quantize`]'s vectorized op.
/// External tensors are read one at a time, from the bundle directory or the packed file
/// ([`Source::prepare`]). Peak memory: the file's bytes live
/// only until decoded, the protobuf only until parsed.
///
/// With `drop_mask`, [`unpadded::drop_zero_mask_adds`] runs first and, when it removed the
/// mask adds, [`attention::fuse_attention`] after it. LayerNorms become [`layer_norm`] ops.
/// With `int8_kernel`, on a CPU that has it, the int8 linears become [`qlinear`] ops. Returns the plan and whether it removed
/// the attention-mask adds (then the plan is exact for unpadded inputs only).
fn load_plan(
    onnx: Vec<u8>,
    source: &Source,
    drop_mask: bool,
    int8_kernel: bool,
) -> Result<(Arc<TypedRunnableModel>, bool), EdgeError> {
    use prost::Message as _;
    let mut fw = tract_onnx::onnx();
    ops::dynamic_quantize::register(&mut fw);
    let mut proto = tract_onnx::pb::ModelProto::decode(&onnx[..]).map_err(model_err)?;
    drop(onnx);
    let dir = source.prepare(&mut proto)?;
    let unpadded = drop_mask && proto.graph.as_mut().is_some_and(|g| unpadded::drop_zero_mask_adds(g) > 0);
    if unpadded {
        attention::register(&mut fw);
        if let Some(g) = proto.graph.as_mut() {
            attention::fuse_attention(g);
        }
    }
    layer_norm::register(&mut fw);
    if let Some(g) = proto.graph.as_mut() {
        layer_norm::fuse_layer_norms(g);
    }
    if int8_kernel && qlinear::fast_kernel_available() {
        qlinear::register(&mut fw);
        if let Some(g) = proto.graph.as_mut() {
            qlinear::fuse_int8_linears(g);
        }
    }
    let parsed = fw.parse(&proto, Some(&dir)).map_err(model_err)?;
    drop(proto);
    if !parsed.unresolved_inputs.is_empty() {
        return Err(EdgeError::Model(format!("unresolved inputs {:?}", parsed.unresolved_inputs)));
    }
    let mut optimized = parsed.model.into_optimized().map_err(model_err)?;
    ops::same_shape_add::use_same_shape_adds(&mut optimized).map_err(model_err)?;
    let plan = optimized.into_runnable().map_err(model_err)?;
    Ok((plan, unpadded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }

    /// The plan without the attention-mask adds and with fused attention against the file's own
    /// graph, row by row: the same logits within 1e-6 (the fused products sum in another order). (Against a padded batch of the file's graph they differ slightly in int8:
    /// the per-tensor activation ranges then span the padding and the other rows, which is why
    /// the engine's batches are now exactly its single predictions.)
    #[test]
    fn dropping_the_mask_adds_is_exact_for_unpadded_rows() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tiny/bundle");
        let engine = Engine::open(&dir).unwrap();
        assert!(engine.unpadded, "the tiny bundle's mask branch is recognized");
        let source = Source::open(&dir).unwrap();
        let (masked, dropped) = load_plan(source.read(MODEL_FILE).unwrap(), &source, false, true).unwrap();
        assert!(!dropped);
        let (bare, dropped) = load_plan(source.read(MODEL_FILE).unwrap(), &source, true, true).unwrap();
        assert!(dropped);
        // Every layer's attention is fused too (the file's plan has one Softmax per layer).
        let count =
            |plan: &Arc<TypedRunnableModel>, op: &str| plan.model().nodes.iter().filter(|n| n.op.name() == op).count();
        assert!(count(&masked, "Softmax") > 0);
        assert_eq!(count(&bare, "FusedAttention"), count(&masked, "Softmax"));
        assert_eq!(count(&bare, "Softmax"), 0);
        let texts = [
            "Diseases: Essential hypertension.",
            "Diseases: Acute renal failure; Septicemia. Medications: Heparin; Insulin; Furosemide.",
            "Procedures: Hemodialysis.",
        ];
        let rows: Vec<Vec<u32>> = texts.iter().map(|t| engine.tokenize(t).unwrap().0).collect();
        let pad = engine.manifest.tokenizer.pad_id;
        let (mut max_diff, mut batch_diff) = (0f32, 0f32);
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let batch = run_rows(&masked, &Executor::SingleThread, &refs, pad).unwrap();
        for (i, r) in refs.iter().enumerate() {
            let single = run_rows(&bare, &Executor::SingleThread, &[r], pad).unwrap();
            let reference = run_rows(&masked, &Executor::SingleThread, &[r], pad).unwrap();
            for (a, b) in single.iter().zip(&reference) {
                max_diff = max_diff.max((a - b).abs());
            }
            for (a, b) in single.iter().zip(&batch[i * NUM_LABELS..(i + 1) * NUM_LABELS]) {
                batch_diff = batch_diff.max((a - b).abs());
            }
        }
        eprintln!("max |logit diff|: {max_diff:e} vs the file's graph per row, {batch_diff:e} vs its padded batch");
        assert!(max_diff <= 1e-6, "max |logit diff| {max_diff}");
        // Sanity on the padded batch (int8 activation ranges differ, see above).
        assert!(batch_diff <= 0.05, "padded batch: max |logit diff| {batch_diff}");
    }

    /// The int8 linears run by [`qlinear`] give the same logits as tract's own int8 path, bit
    /// for bit, and every `MatMulInteger` of the file becomes one fused op.
    #[test]
    fn the_int8_kernel_matches_tracts_int8_path() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tiny/bundle");
        let source = Source::open(&dir).unwrap();
        let onnx = source.read(MODEL_FILE).unwrap();
        let int8_linears = {
            use prost::Message as _;
            let proto = tract_onnx::pb::ModelProto::decode(&onnx[..]).unwrap();
            proto.graph.unwrap().node.iter().filter(|n| n.op_type == "MatMulInteger").count()
        };
        assert!(int8_linears > 0, "the tiny bundle is int8");
        let (tract_path, _) = load_plan(onnx.clone(), &source, true, false).unwrap();
        let (fused, _) = load_plan(onnx, &source, true, true).unwrap();
        let count =
            |plan: &Arc<TypedRunnableModel>| plan.model().nodes.iter().filter(|n| n.op.name() == "QLinear").count();
        assert_eq!(count(&tract_path), 0);
        if !qlinear::fast_kernel_available() {
            eprintln!("no AVX-512 VNNI here: the engine keeps tract's int8 path");
            assert_eq!(count(&fused), 0);
            return;
        }
        assert_eq!(count(&fused), int8_linears);
        let engine = Engine::open(&dir).unwrap();
        let pad = engine.manifest.tokenizer.pad_id;
        for text in ["Diseases: Essential hypertension.", "Procedures: Hemodialysis. Medications: Heparin; Insulin."] {
            let ids = engine.tokenize(text).unwrap().0;
            let a = run_rows(&tract_path, &Executor::SingleThread, &[&ids], pad).unwrap();
            let b = run_rows(&fused, &Executor::SingleThread, &[&ids], pad).unwrap();
            assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn missing_bundle_names_the_file() {
        let e = Engine::open(Path::new("/nonexistent/bundle")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("/nonexistent/bundle/manifest.bin"), "{e}");
    }
}
