//! Model files: one model per file, each with its serde `Config` mirroring HF `config.json`.

pub mod bert;
pub mod lora;
pub mod qwen2;
pub(crate) mod seeded;
