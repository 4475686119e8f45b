//! Model files: one model per file, each with its serde `Config` mirroring HF `config.json`.
//!
//! - [`bert`]: the student encoder with its multi-label head (config, checkpoint loading apart).
//! - [`qwen2`]: the teacher LLM (config, GGUF files and tokenizer apart).
//! - [`qlinear`]: frozen linears and token tables on quantized (GGUF) weights, for CPU inference.
//! - [`lora`]: LoRA adapters on frozen linears; [`peft`]: their PEFT files.
//! - [`checkpoint`]: safetensors reading (single or sharded) and the mismatch report of both models.
//! - [`common`]: dropout, softmax and the padding-mask constant; `seeded`: seeded init and hashing.

pub mod bert;
pub mod checkpoint;
pub mod common;
pub mod lora;
pub mod peft;
pub mod qlinear;
pub mod qwen2;
pub(crate) mod seeded;
