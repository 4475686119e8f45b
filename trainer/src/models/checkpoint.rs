//! Checkpoint files shared by the model files: safetensors reading (one file, or shards with an
//! index), the I/O errors that name the file, and [`Incompatibility`], the full list of what keeps
//! a checkpoint's tensors from fitting a model (each model decides what it expects).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// Errors of finding and reading checkpoint files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// (boxed: candle's error is large, and every model error carries this one)
    #[error("reading safetensors {path}: {source}")]
    Read { path: PathBuf, source: Box<candle_core::Error> },
    #[error("safetensors index {path}: {message}")]
    ShardIndex { path: PathBuf, message: String },
    #[error("tensor `{name}` is listed in the index for shard {shard} but that shard does not contain it")]
    ShardMissingTensor { name: String, shard: PathBuf },
}

/// Everything that keeps a checkpoint from loading, listed in full (names sorted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incompatibility {
    /// Model tensor names the checkpoint lacks.
    pub missing: Vec<String>,
    /// Checkpoint tensor names the model has no place for.
    pub unexpected: Vec<String>,
    /// Tensors present on both sides with different shapes.
    pub shape_mismatch: Vec<ShapeMismatch>,
    /// Checkpoint tensors that are not floating point, with their dtype.
    pub bad_dtype: Vec<(String, DType)>,
}

/// One tensor whose checkpoint shape differs from the model's.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeMismatch {
    /// Model name.
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

impl Incompatibility {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatch.is_empty()
            && self.bad_dtype.is_empty()
    }

    /// Compares `tensors` with `expected` (name -> shape) when names map one to one: every
    /// expected name must be present, float and of its shape; every other name is unexpected.
    pub fn between(expected: &BTreeMap<String, Vec<usize>>, tensors: &HashMap<String, Tensor>) -> Self {
        let mut problems = Self::default();
        for (name, shape) in expected {
            match tensors.get(name) {
                None => problems.missing.push(name.clone()),
                Some(t) if !t.dtype().is_float() => problems.bad_dtype.push((name.clone(), t.dtype())),
                Some(t) if t.dims() != shape.as_slice() => problems.shape_mismatch.push(ShapeMismatch {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: t.dims().to_vec(),
                }),
                Some(_) => {}
            }
        }
        problems.unexpected = tensors.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
        problems.unexpected.sort();
        problems
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing tensors [{}]", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected tensors [{}]", self.unexpected.join(", ")));
        }
        for m in &self.shape_mismatch {
            parts.push(format!("shape mismatch on {}: model {:?}, checkpoint {:?}", m.name, m.expected, m.found));
        }
        for (name, dtype) in &self.bad_dtype {
            parts.push(format!("{name} has non-float dtype {dtype:?}"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The files of a safetensors checkpoint and, when sharded, its index's weight map.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFiles {
    /// Shard (or single) files, sorted.
    pub files: Vec<PathBuf>,
    /// name -> shard path, from `weight_map` of the index; `None` without an index.
    pub weight_map: Option<BTreeMap<String, PathBuf>>,
}

/// The files of a checkpoint at `path`: a `.safetensors` file; a `*.index.json` (its
/// `weight_map`'s files, relative to its folder); or a folder with `model.safetensors.index.json`
/// or `model.safetensors`.
pub fn safetensors_files(path: &Path) -> Result<CheckpointFiles, CheckpointError> {
    let index = if path.is_dir() {
        let idx = path.join("model.safetensors.index.json");
        if idx.is_file() {
            idx
        } else {
            return Ok(CheckpointFiles { files: vec![path.join("model.safetensors")], weight_map: None });
        }
    } else if path.to_string_lossy().ends_with(".json") {
        path.to_path_buf()
    } else {
        return Ok(CheckpointFiles { files: vec![path.to_path_buf()], weight_map: None });
    };
    let text = crate::io::read_to_string_regular(&index)
        .map_err(|source| CheckpointError::Io { path: index.clone(), source })?;
    let bad = |message: String| CheckpointError::ShardIndex { path: index.clone(), message };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let dir = index.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut weight_map = BTreeMap::new();
    let mut files = BTreeSet::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map[{name}] is not a string")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!("weight_map[{name}] = {file} is not a file name")));
        }
        files.insert(dir.join(file));
        weight_map.insert(name.clone(), dir.join(file));
    }
    Ok(CheckpointFiles { files: files.into_iter().collect(), weight_map: Some(weight_map) })
}

/// Reads every tensor of a checkpoint (see [`safetensors_files`]) onto `device`. With an index,
/// every tensor it lists must be in the shard it names ([`CheckpointError::ShardMissingTensor`]).
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let CheckpointFiles { files, weight_map } = safetensors_files(path)?;
    let mut out = HashMap::new();
    let mut by_file: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    for file in &files {
        crate::io::check_regular(file).map_err(|source| CheckpointError::Io { path: file.clone(), source })?;
        let tensors = candle_core::safetensors::load(file, device)
            .map_err(|source| CheckpointError::Read { path: file.clone(), source: Box::new(source) })?;
        by_file.insert(file.clone(), tensors.keys().cloned().collect());
        for (name, t) in tensors {
            if out.insert(name.clone(), t).is_some() {
                return Err(CheckpointError::ShardIndex {
                    path: file.clone(),
                    message: format!("tensor `{name}` is present in more than one shard"),
                });
            }
        }
    }
    if let Some(map) = weight_map {
        for (name, shard) in map {
            if !by_file.get(&shard).is_some_and(|names| names.contains(&name)) {
                return Err(CheckpointError::ShardMissingTensor { name, shard });
            }
        }
    }
    Ok(out)
}
