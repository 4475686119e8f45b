//! Loading HF BERT checkpoints: the layout their tensor names reveal (`bert.` prefix, pooler,
//! classifier), the mapping of checkpoint names to model names, and what a load did.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use candle_core::{DType, Device, Tensor, Var};

use super::{
    BertError, BertForMultiLabel, Config, HeadConfig, Incompatibility, LoadedBert, ShapeMismatch, WORD_EMBEDDINGS,
};

/// Model names of the head's tensors (not present in base checkpoints).
const CLASSIFIER_PREFIX: &str = "classifier.";
const POOLER_PREFIX: &str = "pooler.";
/// Non-parameter buffers that HF checkpoints may carry.
const KNOWN_BUFFERS: [&str; 2] = ["embeddings.position_ids", "embeddings.token_type_ids"];

/// Where a checkpoint keeps the encoder's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointPrefix {
    /// `embeddings.*`, `encoder.*`, `pooler.*` at the top level (HF `BertModel`).
    #[default]
    None,
    /// `bert.embeddings.*`, ...; heads (`classifier.*`, `cls.*`) at the top level
    /// (HF `BertFor*` task models).
    Bert,
}

impl CheckpointPrefix {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Bert => "bert.",
        }
    }
}

/// What the tensor names of a checkpoint say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointLayout {
    pub prefix: CheckpointPrefix,
    /// `{prefix}pooler.dense.weight` is present.
    pub has_pooler: bool,
    /// `classifier.weight` is present.
    pub has_classifier: bool,
}

/// Decides the layout from tensor names alone: the prefix is `bert.` exactly when
/// `bert.embeddings.word_embeddings.weight` is present and `embeddings.word_embeddings.weight`
/// is not; the reverse means no prefix; both or neither are errors.
pub fn inspect_checkpoint<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<CheckpointLayout, BertError> {
    let names: BTreeSet<&str> = names.into_iter().collect();
    let prefixed = format!("bert.{WORD_EMBEDDINGS}");
    let prefix = match (names.contains(WORD_EMBEDDINGS), names.contains(prefixed.as_str())) {
        (true, false) => CheckpointPrefix::None,
        (false, true) => CheckpointPrefix::Bert,
        (true, true) => return Err(BertError::AmbiguousPrefix),
        (false, false) => return Err(BertError::NotBert),
    };
    let pooler = format!("{}pooler.dense.weight", prefix.as_str());
    Ok(CheckpointLayout {
        prefix,
        has_pooler: names.contains(pooler.as_str()),
        has_classifier: names.contains("classifier.weight"),
    })
}

/// Why a checkpoint tensor was not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// A non-parameter buffer (`embeddings.position_ids`, `embeddings.token_type_ids`).
    Buffer,
    /// A pre-training head (`cls.*`).
    PretrainingHead,
    /// `pooler.dense.*` while the head reads [CLS] directly (`HeadConfig::use_pooler = false`).
    UnusedPooler,
}

/// What [`BertForMultiLabel::from_checkpoint`] did, for logs and checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub layout: CheckpointLayout,
    /// Model names set from the checkpoint (sorted).
    pub loaded: Vec<String>,
    /// Model names absent from the checkpoint that keep their seeded fresh init (head only).
    pub fresh_init: Vec<String>,
    /// Checkpoint names not loaded, and why.
    pub ignored: Vec<(String, IgnoreReason)>,
    /// (checkpoint name, model name) for legacy `gamma`/`beta` LayerNorm names.
    pub renamed: Vec<(String, String)>,
    /// Checkpoint names converted to f32, with their stored dtype.
    pub converted: Vec<(String, DType)>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} tensors (prefix {:?}); fresh init: [{}]; ignored: [{}]",
            self.loaded.len(),
            self.layout.prefix.as_str(),
            self.fresh_init.join(", "),
            self.ignored.iter().map(|(n, r)| format!("{n} ({r:?})")).collect::<Vec<_>>().join(", ")
        )?;
        if !self.renamed.is_empty() {
            write!(f, "; renamed {} legacy LayerNorm tensors", self.renamed.len())?;
        }
        if !self.converted.is_empty() {
            write!(f, "; converted {} tensors to f32", self.converted.len())?;
        }
        Ok(())
    }
}

enum Mapped {
    Param { target: String, renamed: bool },
    Ignored(IgnoreReason),
    Unexpected,
}

/// Maps a checkpoint name to a model name. With prefix `bert.`, encoder/pooler/buffer names
/// must carry it and head names (`classifier.*`, `cls.*`) must not; without prefix, no name may
/// start with `bert.`. Whether a `Param` target exists in the model is checked by the caller.
fn map_checkpoint_name(name: &str, prefix: CheckpointPrefix, head: &HeadConfig) -> Mapped {
    let is_top_level_head = |n: &str| n.starts_with(CLASSIFIER_PREFIX) || n.starts_with("cls.");
    let inner = match prefix {
        CheckpointPrefix::Bert => match name.strip_prefix("bert.") {
            Some(rest) if !is_top_level_head(rest) => rest,
            Some(_) => return Mapped::Unexpected,
            None if is_top_level_head(name) => name,
            None => return Mapped::Unexpected,
        },
        CheckpointPrefix::None => {
            if name.starts_with("bert.") {
                return Mapped::Unexpected;
            }
            name
        }
    };
    if KNOWN_BUFFERS.contains(&inner) {
        return Mapped::Ignored(IgnoreReason::Buffer);
    }
    if inner.starts_with("cls.") {
        return Mapped::Ignored(IgnoreReason::PretrainingHead);
    }
    let (target, renamed) = if let Some(stem) = inner.strip_suffix("LayerNorm.gamma") {
        (format!("{stem}LayerNorm.weight"), true)
    } else if let Some(stem) = inner.strip_suffix("LayerNorm.beta") {
        (format!("{stem}LayerNorm.bias"), true)
    } else {
        (inner.to_string(), false)
    };
    if !head.use_pooler && (target == "pooler.dense.weight" || target == "pooler.dense.bias") {
        return Mapped::Ignored(IgnoreReason::UnusedPooler);
    }
    Mapped::Param { target, renamed }
}

impl BertForMultiLabel {
    /// Builds a trainable model from checkpoint tensors (HF names, with or without `bert.`).
    ///
    /// The layout is decided by [`inspect_checkpoint`]. Every encoder tensor must be present
    /// with the model's shape; extra tensors are errors except known non-parameters (buffers
    /// `embeddings.position_ids`/`token_type_ids`, pre-training heads `cls.*`, and
    /// `pooler.dense.*` when the head does not use the pooler), which the report lists as
    /// ignored. Head modules (`classifier`, and `pooler` when used) load when all their tensors
    /// are present and keep their seeded fresh init when all are absent (listed in
    /// `report.fresh_init`); a partial head module is an error. Legacy `LayerNorm.gamma/beta`
    /// names are renamed to `weight/bias` and listed. Float tensors of other dtypes are
    /// converted to f32 (listed). All problems are reported together in
    /// [`BertError::Incompatible`].
    pub fn from_checkpoint(
        tensors: &HashMap<String, Tensor>,
        cfg: &Config,
        head: &HeadConfig,
        device: &Device,
        seed: u64,
    ) -> Result<LoadedBert, BertError> {
        let layout = inspect_checkpoint(tensors.keys().map(String::as_str))?;
        let (model, varmap) = Self::init(cfg, head, device, seed)?;
        let expected: BTreeMap<String, Var> = {
            let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };

        let mut report = LoadReport { layout, ..LoadReport::default() };
        let mut problems = Incompatibility::default();
        let mut provided: BTreeMap<String, (&str, &Tensor)> = BTreeMap::new();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let tensor = &tensors[name];
            match map_checkpoint_name(name, layout.prefix, head) {
                Mapped::Ignored(reason) => report.ignored.push((name.clone(), reason)),
                Mapped::Param { target, renamed } => {
                    if !expected.contains_key(&target) || provided.contains_key(&target) {
                        problems.unexpected.push(name.clone());
                        continue;
                    }
                    if renamed {
                        report.renamed.push((name.clone(), target.clone()));
                    }
                    provided.insert(target, (name.as_str(), tensor));
                }
                Mapped::Unexpected => problems.unexpected.push(name.clone()),
            }
        }

        let is_head = |n: &str| n.starts_with(CLASSIFIER_PREFIX) || n.starts_with(POOLER_PREFIX);
        for group in [CLASSIFIER_PREFIX, POOLER_PREFIX] {
            let members: Vec<&String> = expected.keys().filter(|n| n.starts_with(group)).collect();
            let present = members.iter().filter(|n| provided.contains_key(n.as_str())).count();
            if present == 0 {
                report.fresh_init.extend(members.into_iter().cloned());
            } else {
                problems.missing.extend(members.into_iter().filter(|n| !provided.contains_key(n.as_str())).cloned());
            }
        }
        problems.missing.extend(expected.keys().filter(|n| !is_head(n) && !provided.contains_key(n.as_str())).cloned());
        problems.missing.sort();

        let mut values: Vec<(&Var, Tensor, String)> = Vec::new();
        for (target, (src, tensor)) in &provided {
            let var = &expected[target];
            if !tensor.dtype().is_float() {
                problems.bad_dtype.push((src.to_string(), tensor.dtype()));
                continue;
            }
            if tensor.dims() != var.dims() {
                problems.shape_mismatch.push(ShapeMismatch {
                    name: target.clone(),
                    expected: var.dims().to_vec(),
                    found: tensor.dims().to_vec(),
                });
                continue;
            }
            if tensor.dtype() != DType::F32 {
                report.converted.push((src.to_string(), tensor.dtype()));
            }
            values.push((var, tensor.to_dtype(DType::F32)?.to_device(device)?, target.clone()));
        }
        if !problems.is_empty() {
            return Err(BertError::Incompatible(problems));
        }
        for (var, value, target) in values {
            var.set(&value)?;
            report.loaded.push(target);
        }
        Ok(LoadedBert { model, varmap, report })
    }
}
