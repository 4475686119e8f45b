//! The teacher: a Qwen2 LLM (a real Qwen2.5 GGUF / HF checkpoint, or the demo's small
//! Qwen2-architecture model trained on the cohort), fine-tuned on the CKD-EHR answers, then
//! frozen with a phenotype head on the last prompt token's final hidden state. It produces the
//! soft labels and the attention evidence the student learns from.
//!
//! Stages (each a function of its inputs; files are read and written by the thin drivers here):
//! - [`sft`]: supervised fine-tuning on the answer tokens (`Disease that the patient may
//!   acquire: ...`): LoRA adapters on a pretrained base, or every weight of the demo model.
//! - [`head`]: features (final hidden state of the last prompt token, LLM frozen) computed once
//!   and cached, then `Linear(H -> 25)` trained with BCE on them.
//! - [`label`]: soft labels (sigmoid(head / T)) and multi-granularity attention evidence, per
//!   sample, sharded (`--shard i/N`) and resumable; [`label::merge`] joins shards.
//! - [`explain`]: which concepts carried the evidence of a sample.
//!
//! A trained teacher is a directory ([`TeacherDir`]): `teacher.json` (manifest), `config.json`
//! (Qwen2 config), `tokenizer.json`, `head.safetensors`, and `adapter/` (PEFT adapter) or
//! `model.safetensors` (demo weights), plus `curves.jsonl`.
//!
//! The parts every stage shares, re-exported here: [`TeacherError`] (`error.rs`), [`DeviceSpec`]
//! (`device.rs`), [`TeacherManifest`] and [`save_manifest`] (`manifest.rs`), [`TeacherDir`]
//! (`dir.rs`), the hashes (`hash.rs`), [`PromptEncoder`] and [`pad_rows`] ([`prompt`]), base
//! models ([`load_base`], [`load_frozen`]: `base.rs`) and trained teachers ([`load_teacher`]:
//! `loaded.rs`).

pub mod demo;
pub mod explain;
pub mod head;
pub mod label;
pub mod oof;
pub mod prompt;
pub mod semi;
pub mod sft;
pub mod states;
pub mod train;
pub mod zero_shot;

mod base;
mod device;
mod dir;
mod error;
mod hash;
mod loaded;
mod manifest;

pub use base::{load_base, load_base_quantized, load_frozen, Base, BaseWeights, QuantizedBase};
pub use device::{dense_kernel_description, DeviceSpec};
pub use dir::TeacherDir;
pub(crate) use error::{fmt_err, io_err};
pub use error::{Result, TeacherError};
pub use hash::{file_sha256, label_space_hex, sha256_hex};
pub use loaded::{load_teacher, LoadedTeacher};
pub use manifest::{save_manifest, BaseRef, TeacherManifest, TEACHER_FORMAT, TEACHER_VERSION};
pub use prompt::{instruction_of, pad_rows, Prompt, PromptEncoder};

#[cfg(test)]
mod tests;
