//! The tract plan of a bundle's model: built once from the ONNX bytes ([`load_plan`]: which
//! graph rewrites run, in which order, and which ops are registered) and run on rows of token
//! ids ([`run_rows`]; [`profile`] times each node).

use std::sync::Arc;

use tract_onnx::prelude::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::{tvec, InferenceModelExt, IntoRunnable, Tensor as TractTensor, TypedRunnableModel};

use ckd_core::NUM_LABELS;

use crate::error::{model_err, EdgeError};
use crate::fuse::unpadded;
use crate::ops::{attention, dynamic_quantize, layer_norm, qlinear, same_shape_add};
use crate::source::Source;

/// One plan node's median time in [`crate::Engine::profile_text`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// tract's operator name (after optimization: fused ops have their own names).
    pub op: String,
    /// Node name (from the ONNX node it comes from).
    pub node: String,
    /// Median milliseconds per run.
    pub ms: f64,
}

/// The executor of an engine with `threads` threads per prediction (see
/// [`crate::EngineOptions::threads`]).
pub(crate) fn executor(threads: usize) -> Result<Executor, EdgeError> {
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

/// Optimizes an ONNX model into a runnable plan for the symbolic `[batch, seq]` input shape the
/// file declares (our exporter writes `dim_param` "batch" and "seq"), so one plan serves every
/// batch size and length. External tensors are read one at a time, from the bundle directory
/// or the packed file ([`Source::prepare`]). Peak memory: the file's bytes live only until
/// decoded, the protobuf only until parsed.
///
/// The rewrites, in this order:
/// 1. `DynamicQuantizeLinear` always runs as [`dynamic_quantize`]'s vectorized op.
/// 2. With `drop_mask`, [`unpadded::drop_zero_mask_adds`]; when it removed the mask adds,
///    [`attention::fuse_attention`] after it.
/// 3. LayerNorms become [`layer_norm`] ops.
/// 4. With `int8_kernel`, where [`qlinear::Int8Kernel::from_env`] chooses a kernel (the best
///    this CPU has, unless [`qlinear::KERNEL_ENV`] says otherwise), the int8 linears become
///    [`qlinear`] ops on that kernel.
/// 5. After tract's optimization, same-shape f32 adds become [`same_shape_add`] ops.
///
/// Returns the plan and whether it removed the attention-mask adds (then the plan is exact for
/// unpadded inputs only).
pub(crate) fn load_plan(
    onnx: Vec<u8>,
    source: &Source,
    drop_mask: bool,
    int8_kernel: bool,
) -> Result<(Arc<TypedRunnableModel>, bool), EdgeError> {
    use prost::Message as _;
    let mut fw = tract_onnx::onnx();
    dynamic_quantize::register(&mut fw);
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
    let kernel = if int8_kernel { qlinear::Int8Kernel::from_env().map_err(EdgeError::Options)? } else { None };
    if let Some(kernel) = kernel {
        qlinear::register(&mut fw);
        if let Some(g) = proto.graph.as_mut() {
            qlinear::fuse_int8_linears(g);
            qlinear::set_kernel(g, kernel);
        }
    }
    let parsed = fw.parse(&proto, Some(&dir)).map_err(model_err)?;
    drop(proto);
    if !parsed.unresolved_inputs.is_empty() {
        return Err(EdgeError::Model(format!("unresolved inputs {:?}", parsed.unresolved_inputs)));
    }
    let mut optimized = parsed.model.into_optimized().map_err(model_err)?;
    same_shape_add::use_same_shape_adds(&mut optimized).map_err(model_err)?;
    let plan = optimized.into_runnable().map_err(model_err)?;
    Ok((plan, unpadded))
}

/// Runs `plan` on `rows` padded to the longest (with `pad_id`, mask 0) and returns the logits,
/// row-major [rows, NUM_LABELS].
pub(crate) fn run_rows(
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
/// threads, and the calling thread sleeps, so only the n pool threads compete for n cores (n
/// pool threads plus a working caller make two-thread predictions on a 2-core VM swing from run
/// to run; BENCHMARKS.md).
fn in_pool<R: Send>(executor: &Executor, f: impl FnOnce() -> R + Send) -> R {
    match executor {
        #[cfg(feature = "threads")]
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => pool.install(f),
        _ => f(),
    }
}

/// Each node's median time over `runs` runs of `plan` on one row of token `ids` (after one
/// warm-up run), slowest first (see [`crate::Engine::profile_text`]).
pub(crate) fn profile(
    plan: &Arc<TypedRunnableModel>,
    executor: &Executor,
    ids: &[u32],
    runs: usize,
) -> Result<Vec<NodeTime>, EdgeError> {
    use std::time::{Duration, Instant};
    use tract_onnx::prelude::TypedSimpleState;
    let t = ids.len();
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let ids = TractTensor::from_shape(&[1, t], &ids).map_err(model_err)?;
    let mask = TractTensor::from_shape(&[1, t], &vec![1i64; t]).map_err(model_err)?;
    let model = plan.model();
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); model.nodes.len()];
    let mut state = TypedSimpleState::new(plan).map_err(model_err)?;
    for run in 0..=runs.max(1) {
        let mut times = vec![Duration::ZERO; model.nodes.len()];
        multithread_tract_scope(executor.clone(), || {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ckd_core::bundle::MODEL_FILE;

    use super::*;
    use crate::Engine;

    /// The plan without the attention-mask adds and with fused attention against the file's own
    /// graph, row by row: the same logits within 1e-6 (the fused products sum in another order).
    /// (Against a padded batch of the file's graph they differ slightly in int8: the per-tensor
    /// activation ranges then span the padding and the other rows, which is why the engine's
    /// batches are exactly its single predictions.)
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
            eprintln!("no fast int8 kernel here: the engine keeps tract's int8 path");
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
}
