//! Qwen2 `config.json` (HF `Qwen2Config`): fields, defaults, validation and the tensor shapes a
//! config expects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Qwen2Error;
use crate::models::common::check_sizes;

/// Activation of the MLP gate. Only HF `"silu"` is supported; any other value in `config.json` is
/// a deserialization error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    #[serde(rename = "silu")]
    Silu,
}

/// A token id field that HF writes either as one id or as a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// Mirror of HF `Qwen2Config` (`config.json`). Fields HF files omit take HF's defaults; fields we
/// do not use (`torch_dtype`, `initializer_range`, `max_window_layers`, `sliding_window`, ...) are
/// ignored on read. Features we do not implement are rejected by [`Config::validate`]:
/// `rope_scaling` must be null and `use_sliding_window` false.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub hidden_act: HiddenAct,
    /// Dropout on attention probabilities in training (0 in every released Qwen2).
    pub attention_dropout: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub use_sliding_window: bool,
    pub rope_scaling: Option<serde_json::Value>,
}

impl Default for Config {
    /// HF `Qwen2Config()` defaults.
    fn default() -> Self {
        Self {
            vocab_size: 151936,
            hidden_size: 4096,
            intermediate_size: 22016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            max_position_embeddings: 32768,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            hidden_act: HiddenAct::Silu,
            attention_dropout: 0.0,
            bos_token_id: None,
            eos_token_id: None,
            use_sliding_window: false,
            rope_scaling: None,
        }
    }
}

impl Config {
    /// A tiny config for tests: V 256, H 64, 2 layers, N 4 heads, K 2 KV heads (D 16), I 128,
    /// 128 positions, untied LM head.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 256,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 128,
            rope_theta: 10000.0,
            ..Self::default()
        }
    }

    /// Qwen2.5-7B(-Instruct): H 3584, 28 layers, 28 heads, 4 KV heads, I 18944, V 152064, untied.
    pub fn qwen2_5_7b() -> Self {
        Self {
            vocab_size: 152064,
            hidden_size: 3584,
            intermediate_size: 18944,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            max_position_embeddings: 32768,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            bos_token_id: Some(151643),
            eos_token_id: Some(TokenIds::One(151645)),
            ..Self::default()
        }
    }

    /// Qwen2.5(-Coder)-0.5B(-Instruct): H 896, 24 layers, 14 heads, 2 KV heads, I 4864, V 151936, tied.
    pub fn qwen2_5_0_5b() -> Self {
        Self {
            vocab_size: 151936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            max_position_embeddings: 32768,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            bos_token_id: Some(151643),
            eos_token_id: Some(TokenIds::One(151645)),
            ..Self::default()
        }
    }

    /// Parses an HF `config.json` and validates it.
    pub fn from_json(json: &str) -> Result<Self, Qwen2Error> {
        let cfg: Self = serde_json::from_str(json)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Head size D = H / N.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<(), Qwen2Error> {
        let bad = |m: String| Err(Qwen2Error::InvalidConfig(m));
        check_sizes(
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("num_attention_heads", self.num_attention_heads),
                ("num_key_value_heads", self.num_key_value_heads),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            self.hidden_size,
            self.num_attention_heads,
        )
        .map_err(Qwen2Error::InvalidConfig)?;
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head size {} must be even for RoPE", self.head_dim()));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return bad(format!("rope_theta = {} must be > 0", self.rope_theta));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return bad(format!("rms_norm_eps = {} must be > 0", self.rms_norm_eps));
        }
        if !(0.0..1.0).contains(&self.attention_dropout) {
            return bad(format!("attention_dropout = {} is not in [0, 1)", self.attention_dropout));
        }
        if self.use_sliding_window {
            return bad("use_sliding_window = true is not supported".into());
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return bad("rope_scaling is not supported (must be null)".into());
        }
        Ok(())
    }

    /// Every tensor of an HF checkpoint of this config, with its shape: weights are [out, in],
    /// biases \[out\], norms \[H\], embeddings [V, H]. `lm_head.weight` only when the head is untied.
    pub fn expected_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.num_key_value_heads * self.head_dim();
        let mut m = BTreeMap::new();
        m.insert("model.embed_tokens.weight".to_string(), vec![v, h]);
        m.insert("model.norm.weight".to_string(), vec![h]);
        if !self.tie_word_embeddings {
            m.insert("lm_head.weight".to_string(), vec![v, h]);
        }
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let entries: [(&str, Vec<usize>); 12] = [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![h, h]),
                ("self_attn.q_proj.bias", vec![h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.k_proj.bias", vec![kv]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.bias", vec![kv]),
                ("self_attn.o_proj.weight", vec![h, h]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ];
            for (name, shape) in entries {
                m.insert(format!("{p}.{name}"), shape);
            }
        }
        m
    }
}
