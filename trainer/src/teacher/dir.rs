//! The layout of a trained teacher directory: one path per file it holds.

use std::path::PathBuf;

/// Paths inside a teacher directory.
#[derive(Debug, Clone)]
pub struct TeacherDir(pub PathBuf);

impl TeacherDir {
    /// `teacher.json`.
    pub fn manifest(&self) -> PathBuf {
        self.0.join("teacher.json")
    }
    /// `config.json` (Qwen2 config, HF layout).
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> PathBuf {
        self.0.join("tokenizer.json")
    }
    /// `head.safetensors` (`weight` [25, H], `bias` [25]).
    pub fn head(&self) -> PathBuf {
        self.0.join("head.safetensors")
    }
    /// `adapter/` (PEFT files).
    pub fn adapter(&self) -> PathBuf {
        self.0.join("adapter")
    }
    /// `model.safetensors` (demo teacher weights).
    pub fn weights(&self) -> PathBuf {
        self.0.join("model.safetensors")
    }
    /// `features/` (cached head features).
    pub fn features(&self) -> PathBuf {
        self.0.join("features")
    }
    /// `curves.jsonl`.
    pub fn curves(&self) -> PathBuf {
        self.0.join("curves.jsonl")
    }
}
