//! The demo teacher: a small Qwen2-architecture model trained from random weights on the
//! cohort, so that `ckd demo` needs no download. It is NOT Qwen2.5: it has never seen text other
//! than the cohort's prompts and answers, and every report built on it says so.
//!
//! Tokenizer: byte-level BPE (the Qwen2 scheme) trained on the training prompts and answers, with
//! the ChatML special tokens, so the prompts are the very ones a real Qwen2.5 teacher gets.

use ckd_core::visit::Sample;
use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder,
};

use super::prompt::{chat_answer, chat_prompt};
use super::{instruction_of, Result, TeacherError};
use crate::models::qwen2::{Config, ENDOFTEXT, IM_END, IM_START};

/// Size of the demo teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// BPE vocabulary size (special tokens included).
    pub vocab_size: usize,
    /// Hidden size H.
    pub hidden_size: usize,
    /// MLP size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads (KV heads = heads / 2: grouped-query attention as in Qwen2).
    pub heads: usize,
    /// Seed of the random initial weights.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { vocab_size: 2000, hidden_size: 128, intermediate_size: 256, layers: 2, heads: 4, seed: 11 }
    }
}

impl DemoConfig {
    /// The Qwen2 config for a tokenizer of `vocab` tokens and prompts of up to `max_len` tokens.
    pub fn qwen2(&self, vocab: usize, max_len: usize) -> Config {
        Config {
            vocab_size: vocab,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: (self.heads / 2).max(1),
            max_position_embeddings: max_len.max(16),
            rope_theta: 10000.0,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            ..Config::default()
        }
    }
}

/// The full training sequence text of a sample (chat prompt and answer), for tokenizer training.
fn sequence_text(s: &Sample) -> String {
    let output = match &s.raw {
        Some(r) => r.output.clone(),
        None => ckd_core::jsonl::render_output(s.labels),
    };
    format!("{}{}", chat_prompt(instruction_of(s, ckd_core::jsonl::INSTRUCTION), &s.text()).text, chat_answer(&output))
}

/// Trains the byte-level BPE tokenizer on the samples' prompts and answers. Deterministic for the
/// same samples.
pub fn train_tokenizer(samples: &[Sample], vocab_size: usize) -> Result<Tokenizer> {
    let tk = |what: &str| {
        let what = what.to_string();
        move |e: tokenizers::Error| TeacherError::Tokenizer(format!("{what}: {e}"))
    };
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens([ENDOFTEXT, IM_START, IM_END].iter().map(|t| AddedToken::from(*t, true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tb =
        TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true).into()))
            .with_decoder(Some(ByteLevel::default().into()))
            .build()
            .map_err(tk("building the tokenizer"))?;
    let texts: Vec<String> = samples.iter().map(sequence_text).collect();
    tb.train(&mut trainer, texts.iter().map(String::as_str)).map_err(tk("training BPE"))?;
    let json = tb.to_string(false).map_err(tk("serializing the tokenizer"))?;
    json.parse::<Tokenizer>().map_err(tk("reloading the tokenizer"))
}
