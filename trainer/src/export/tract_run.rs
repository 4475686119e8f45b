//! Running an exported ONNX in stock tract (tract-onnx's own ops): outputs for parity checks,
//! wall time, and a per-node profile (time spent in each node of the optimized plan, and the
//! matmul kernel tract chose). The trainer only checks its exports here; the edge runtime
//! (`ckd-edge`) runs bundles with its faster `DynamicQuantizeLinear` (`ckd_edge::ops::dynamic_quantize`).
//!
//! The profile times every node's evaluation through `SimpleState::run_plan_with_eval`, the
//! hook tract's own `--profile` uses, so it measures the same optimized plan `run` executes.
//! `ckd-edge` has the same timing for its own plans (`Engine::profile_text`); this copy exists
//! because the trainer does not depend on `ckd-edge` and `ckd-core` has no tract.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tract_onnx::prelude::{
    tvec, Datum, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, TValue,
    Tensor as TractTensor, TypedRunnableModel, TypedSimpleState,
};

use super::ExportError;
use crate::stats::median;

fn tract_err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Tract(format!("{e:#}"))
}

/// How to load a model into tract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Optimize for inputs of this [batch, seq]; `None`: for the file's symbolic shape.
    pub shape: Option<(usize, usize)>,
    /// Number of i64 [batch, seq] inputs: input_ids, attention_mask, then others (such as
    /// token_type_ids in files made by others), which are fed zeros.
    pub n_inputs: usize,
    /// Ignore the file's `value_info` (needed for some files made by others).
    pub ignore_value_info: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { shape: None, n_inputs: 2, ignore_value_info: false }
    }
}

/// An exported model loaded and optimized by tract.
pub struct TractModel {
    plan: std::sync::Arc<TypedRunnableModel>,
    /// Number of i64 [batch, seq] inputs: ids, mask, then any others (fed zeros).
    n_inputs: usize,
}

/// Time spent in one node of the plan, per run.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// Node name (the ONNX value name it came from, with tract's suffixes).
    pub name: String,
    /// tract op name (`OptMatMul`, `DynamicQuantizeLinearU8`, ...).
    pub op: String,
    /// Milliseconds per run (median over runs).
    pub ms: f64,
    /// tract's description of the op (for matmuls: shapes and the chosen kernel).
    pub info: String,
}

/// A per-node profile of one input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Median wall time of a whole run (plain `run`, not instrumented), milliseconds.
    pub median_ms: f64,
    /// All timed runs of `run`, milliseconds, in order.
    pub runs_ms: Vec<f64>,
    /// Per node, slowest first.
    pub nodes: Vec<NodeTime>,
    /// Per op kind: (op, total ms per run, node count), slowest first.
    pub by_op: Vec<(String, f64, usize)>,
}

impl Profile {
    /// Human-readable summary: total, the `top` slowest op kinds and nodes.
    pub fn summary(&self, top: usize) -> String {
        let mut s = format!("median run {:.2} ms (runs: {:?})\n", self.median_ms, self.runs_ms);
        let instrumented: f64 = self.nodes.iter().map(|n| n.ms).sum();
        s.push_str(&format!("per-op (sum of node medians {instrumented:.2} ms):\n"));
        for (op, ms, count) in self.by_op.iter().take(top) {
            s.push_str(&format!("  {op:<32} {ms:>9.3} ms  {:>5.1}%  x{count}\n", 100.0 * ms / instrumented.max(1e-9)));
        }
        s.push_str("slowest nodes:\n");
        for n in self.nodes.iter().take(top) {
            let info = n.info.replace('\n', " | ");
            s.push_str(&format!("  {:>9.3} ms  {:<28} {}  [{}]\n", n.ms, n.op, n.name, info));
        }
        s
    }
}

impl TractModel {
    /// Loads `onnx` and optimizes it for inputs of shape [batch, seq] when given, else for
    /// the symbolic shape the file declares. Stock tract ops.
    pub fn load(onnx: &[u8], shape: Option<(usize, usize)>) -> Result<Self, ExportError> {
        Self::load_opts(onnx, &LoadOptions { shape, ..LoadOptions::default() })
    }

    /// Loads `onnx` with `opts`.
    pub fn load_opts(onnx: &[u8], opts: &LoadOptions) -> Result<Self, ExportError> {
        let fw = tract_onnx::onnx().with_ignore_value_info(opts.ignore_value_info);
        let model = fw.model_for_read(&mut &onnx[..]).map_err(tract_err)?;
        Self::optimize(model, opts)
    }

    /// Loads the ONNX file `path` (external data, such as a bundle's `model.onnx.data`, is
    /// read from beside it) for the symbolic shape it declares. Stock tract ops.
    pub fn load_path(path: &std::path::Path) -> Result<Self, ExportError> {
        let model =
            tract_onnx::onnx().model_for_path(path).map_err(|e| tract_err(format!("{}: {e:#}", path.display())))?;
        Self::optimize(model, &LoadOptions::default())
    }

    fn optimize(mut model: InferenceModel, opts: &LoadOptions) -> Result<Self, ExportError> {
        let (shape, n_inputs) = (opts.shape, opts.n_inputs);
        if let Some((b, t)) = shape {
            for i in 0..n_inputs {
                model = model
                    .with_input_fact(i, InferenceFact::dt_shape(i64::datum_type(), tvec!(b, t)))
                    .map_err(tract_err)?;
            }
        }
        let plan = model.into_optimized().map_err(tract_err)?.into_runnable().map_err(tract_err)?;
        Ok(Self { plan, n_inputs })
    }

    fn inputs(&self, ids: &[i64], mask: &[i64], batch: usize, seq: usize) -> Result<TVec2, ExportError> {
        if ids.len() != batch * seq || mask.len() != batch * seq {
            return Err(ExportError::Invalid(format!(
                "inputs of {} ids and {} mask values for [{batch}, {seq}]",
                ids.len(),
                mask.len()
            )));
        }
        let ids = TractTensor::from_shape(&[batch, seq], ids).map_err(tract_err)?;
        let mask = TractTensor::from_shape(&[batch, seq], mask).map_err(tract_err)?;
        let mut v: TVec2 = tvec!(ids.into(), mask.into());
        for _ in 2..self.n_inputs {
            v.push(TractTensor::from_shape(&[batch, seq], &vec![0i64; batch * seq]).map_err(tract_err)?.into());
        }
        Ok(v)
    }

    /// Logits [batch * L] row-major for token ids and mask [batch, seq] row-major.
    pub fn run(&self, ids: &[i64], mask: &[i64], batch: usize, seq: usize) -> Result<Vec<f32>, ExportError> {
        let out = self.plan.run(self.inputs(ids, mask, batch, seq)?).map_err(tract_err)?;
        let logits = out.first().ok_or_else(|| ExportError::Tract("no output".into()))?;
        let view = logits.to_plain_array_view::<f32>().map_err(tract_err)?;
        if view.shape().first() != Some(&batch) || view.ndim() != 2 {
            return Err(ExportError::Tract(format!("logits of shape {:?} for batch {batch}", view.shape())));
        }
        Ok(view.iter().copied().collect())
    }

    /// Times `runs` plain runs (after `warmup` untimed ones) and `runs` instrumented runs
    /// (per-node times, median per node).
    pub fn profile(
        &self,
        ids: &[i64],
        mask: &[i64],
        batch: usize,
        seq: usize,
        warmup: usize,
        runs: usize,
    ) -> Result<Profile, ExportError> {
        let inputs = self.inputs(ids, mask, batch, seq)?;
        for _ in 0..warmup {
            self.plan.run(inputs.clone()).map_err(tract_err)?;
        }
        let mut runs_ms = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let t0 = Instant::now();
            self.plan.run(inputs.clone()).map_err(tract_err)?;
            runs_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let median_ms = median(&runs_ms);

        let model = self.plan.model();
        let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); model.nodes.len()];
        let mut state = TypedSimpleState::new(&self.plan).map_err(tract_err)?;
        for _ in 0..runs.max(1) {
            let mut times: Vec<Duration> = vec![Duration::ZERO; model.nodes.len()];
            state
                .run_plan_with_eval(inputs.clone(), |ctx, st, node, input| {
                    let t0 = Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, st, node, input);
                    times[node.id] += t0.elapsed();
                    r
                })
                .map_err(tract_err)?;
            for (acc, t) in per_node.iter_mut().zip(times) {
                acc.push(t.as_secs_f64() * 1e3);
            }
        }
        let mut nodes: Vec<NodeTime> = model
            .nodes
            .iter()
            .zip(per_node.iter_mut())
            .filter(|(n, _)| !n.op_is::<tract_onnx::tract_core::ops::source::TypedSource>())
            .map(|(n, t)| NodeTime {
                name: n.name.clone(),
                op: n.op.name().to_string(),
                ms: median(t),
                info: n.op.info().map(|v| v.join("\n")).unwrap_or_default(),
            })
            .collect();
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let mut by: HashMap<String, (f64, usize)> = HashMap::new();
        for n in &nodes {
            let e = by.entry(n.op.clone()).or_default();
            e.0 += n.ms;
            e.1 += 1;
        }
        let mut by_op: Vec<(String, f64, usize)> = by.into_iter().map(|(k, (ms, c))| (k, ms, c)).collect();
        by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(Profile { median_ms, runs_ms, nodes, by_op })
    }
}

type TVec2 = tract_onnx::prelude::TVec<TValue>;
