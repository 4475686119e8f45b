//! ckd-edge: the bedside runtime of ckd-ehr (CPU only, tract + tokenizers).
//!
//! Status: only the crate and its dependency set exist so far (tract-onnx and tokenizers with
//! default features off, so the crate can cross-compile to ARM). The engine (`Engine::open`,
//! `predict`) is built by the edge-runtime issue on top of the model bundle.
//!
//! Everything the runtime shares with training (labels, text rendering, metrics) comes from
//! `ckd-core`; this crate never depends on the trainer.

pub use ckd_core as core;
