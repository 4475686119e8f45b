//! ckd-edge: the bedside runtime of ckd-ehr. CPU only: tract for the model, HF `tokenizers`
//! (pure-Rust regex) for the text, no GPU dependencies, so it cross-compiles to ARM.
//!
//! [`Engine::open`] verifies a bundle (manifest envelope, label space, every file's SHA-256)
//! and builds the optimized tract plan once; [`Engine::predict`], [`Engine::predict_text`] and
//! [`Engine::predict_batch`] then only tokenize, run the plan and threshold; [`Engine::occlude`]
//! explains a prediction by leaving out each concept of the visit in turn (`explain`). `Engine` is
//! `Send + Sync`: share one across threads.
//!
//! Text rendering (visit -> CKD-EHR text, knowledge clauses) and the truncation rule come from
//! `ckd-core`, exactly as in training.
//!
//! Layout: this file is the API ([`Engine`] and its types); `error` holds [`EdgeError`];
//! `source` reads a bundle's files (a directory or a packed `.ckdb`); `plan` builds the tract
//! plan (the order of the graph rewrites) and runs it; [`ops`] holds the tract ops ckd-edge
//! adds, each with the matcher that rewrites a graph to use it; `kernels` their arithmetic on
//! slices, the variant for this CPU picked at run time; [`fuse`] the ONNX graph rewrites
//! shared by the ops and the removal of the attention-mask adds; [`memory`] the allocator
//! settings; [`bench`] the latency measurement behind `ckd-edge bench`.

use std::path::Path;
use std::sync::Arc;

use ckd_core::bundle::{Manifest, Precision, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use ckd_core::visit::{render, Rendered, Visit};
use ckd_core::{LabelSet, NUM_LABELS};
use tract_onnx::prelude::multithread::Executor;
use tract_onnx::prelude::TypedRunnableModel;

pub use ckd_core;

pub mod bench;
mod error;
mod explain;
pub mod fuse;
mod kernels;
pub mod memory;
pub mod ops;
mod plan;
mod source;
#[cfg(test)]
mod testing;

pub use error::EdgeError;
pub use explain::{ConceptEffect, Occlusion};
pub use plan::NodeTime;
use source::Source;

use ops::qlinear;

/// Number of top phenotypes returned in [`Prediction::top_k`].
pub const TOP_K: usize = 5;

/// Longest input text a prediction accepts, in bytes (1 MiB; a CKD-EHR visit text is a few
/// KiB): a longer one is [`EdgeError::InputTooLong`]. Within it, only as much of the text is
/// tokenized as the bundle's maximum length needs.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

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
    /// Run int8 linears with ckd-edge's fused kernel ([`qlinear`]) where the CPU has one
    /// (x86_64 with AVX-512 VNNI or AVX2; the default; [`qlinear::KERNEL_ENV`] can force one,
    /// or tract's path). `false` keeps tract's own int8 path, which gives the same values (for
    /// comparisons).
    pub int8_kernel: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { threads: 1, int8_kernel: true }
    }
}

/// Whether this build can run an engine on more than one thread (the `threads` feature).
pub const THREADS_SUPPORTED: bool = cfg!(feature = "threads");

/// A loaded, verified bundle with its optimized plan.
pub struct Engine {
    plan: Arc<TypedRunnableModel>,
    /// The plan has no attention-mask adds ([`fuse::unpadded`]): it is exact only for unpadded
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
        let executor = plan::executor(opts.threads)?;
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
        let (plan, unpadded) =
            std::panic::catch_unwind(|| plan::load_plan(model_bytes, &source, true, opts.int8_kernel)).map_err(
                |_| EdgeError::Model("model.onnx is malformed (tract panicked while analysing it)".into()),
            )??;
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

    /// The kernel each fused op of the plan runs on this CPU, as (op, kernel) pairs: the int8
    /// linears' [`qlinear::Int8Kernel::name`] (`tract` when tract's own int8 path runs them, `none`
    /// when the model has none), then the float ops' instruction set.
    pub fn kernels(&self) -> Vec<(&'static str, &'static str)> {
        let fused = self.plan.model().nodes.iter().find_map(|n| n.op_as::<qlinear::QLinear>());
        let int8 = match fused {
            Some(op) => op.packed.kernel().map_or("portable", |k| k.name()),
            None if self.manifest.precision == Precision::Int8 => "tract",
            None => "none",
        };
        let float = kernels::float_variant();
        vec![
            ("int8 linear", int8),
            ("DynamicQuantizeLinear", float),
            ("LayerNorm", float),
            ("attention softmax", float),
            ("GELU", float),
        ]
    }

    /// Renders a visit exactly as in training (titles resolved from codes by
    /// [`Visit::resolve_titles`], knowledge clauses from the bundle's table) and predicts. An
    /// item with neither code nor title is an error naming it; a visit with no item at all is
    /// [`EdgeError::EmptyVisit`] (its answer would be the model's prior, not a prediction).
    pub fn predict(&self, visit: &Visit) -> Result<Prediction, EdgeError> {
        self.predict_text(&self.render(visit)?.text)
    }

    /// The text and concept spans [`Engine::predict`] gives the model for `visit`.
    pub fn render(&self, visit: &Visit) -> Result<Rendered, EdgeError> {
        if visit.diagnoses.is_empty() && visit.medications.is_empty() && visit.procedures.is_empty() {
            return Err(EdgeError::EmptyVisit);
        }
        let (visit, _) = visit.resolve_titles()?;
        let clauses = self.manifest.knowledge.as_ref().map(|k| k.clauses(visit.phenotypes())).unwrap_or_default();
        Ok(render(&visit, &clauses))
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
    ///
    /// Tokenizes a prefix of the text that ends before an ASCII whitespace, starting at 8 bytes
    /// per token of the bundle's maximum length and growing 4-fold until it gives more tokens
    /// than the maximum length (or is the whole text). Tokenizers split words at whitespace,
    /// so such a prefix's tokens are the first tokens of the whole text, and the kept tokens
    /// and the truncation flag are those of the whole text.
    fn encode(&self, index: usize, text: &str) -> Result<(Vec<u32>, bool), EdgeError> {
        if text.len() > MAX_INPUT_BYTES {
            return Err(EdgeError::InputTooLong { index, bytes: text.len(), max: MAX_INPUT_BYTES });
        }
        if text.trim().is_empty() {
            return Err(EdgeError::EmptyInput { index });
        }
        let need = (self.manifest.tokenizer.max_len as usize).max(2);
        let mut budget = need.saturating_mul(8);
        loop {
            let whole = budget >= text.len();
            let cut = if whole {
                Some(text.len())
            } else {
                text.as_bytes()[..budget].iter().rposition(u8::is_ascii_whitespace)
            };
            if let Some(cut) = cut {
                let enc = self
                    .tokenizer
                    .encode(&text[..cut], true)
                    .map_err(|e| EdgeError::Encode { index, msg: e.to_string() })?;
                if whole || enc.get_ids().len() > need {
                    let mut ids = enc.get_ids().to_vec();
                    let mut offsets = enc.get_offsets().to_vec();
                    let truncated = self.manifest.tokenizer.truncate(&mut ids, &mut offsets);
                    return Ok((ids, truncated));
                }
            }
            budget = budget.saturating_mul(4);
        }
    }

    /// Predicts a batch. The same results as one call per text: when the bundle's mask branch
    /// is recognized ([`fuse::unpadded`], every bundle `ckd export` writes) the rows run one at a
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
        let (ids, _) = self.tokenize(text)?;
        plan::profile(&self.plan, &self.executor, &ids, runs)
    }

    /// Runs the plan on `rows` (see [`plan::run_rows`]).
    fn run(&self, rows: &[&[u32]]) -> Result<Vec<f32>, EdgeError> {
        plan::run_rows(&self.plan, &self.executor, rows, self.manifest.tokenizer.pad_id)
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

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }

    #[test]
    fn missing_bundle_names_the_file() {
        let e = Engine::open(Path::new("/nonexistent/bundle")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("/nonexistent/bundle/manifest.bin"), "{e}");
    }
}
