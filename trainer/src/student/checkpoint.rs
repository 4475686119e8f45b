//! Checkpoints of a run under `DIR/checkpoint/` ([`Checkpoint`]: save and resume exactly), and
//! the copy of a [`VarMap`]'s variables to and from named tensors ([`named_vars`], [`set_vars`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use candle_nn::VarMap;
use serde::Deserialize;

use super::error::{io_err, Result, StudentError};
use super::training::LoopState;
use crate::io::write_atomic;
use crate::optim::AdamW;

/// The checkpoint directory of a run (no state: its functions take the run directory).
pub(super) struct Checkpoint;

impl Checkpoint {
    /// `DIR/checkpoint`.
    fn root(dir: &Path) -> PathBuf {
        dir.join("checkpoint")
    }

    /// Writes weights, optimizer moments and `st` to `DIR/checkpoint/step-N/` (sealed), makes it
    /// current by atomically replacing `current.json`, then removes the other `step-*` directories.
    pub(super) fn save(dir: &Path, varmap: &VarMap, opt: &AdamW, st: &LoopState) -> Result<()> {
        let root = Self::root(dir);
        let name = format!("step-{}", st.step);
        let d = root.join(&name);
        std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        // Each file with its SHA-256, the list written last (verified on resume).
        let mut seal = crate::train_integrity::Seal::new(&d);
        seal.tensors("model.safetensors", &named_vars(varmap)?)?;
        seal.tensors("optim.safetensors", &opt.state())?;
        let json = serde_json::to_vec_pretty(st).map_err(|e| StudentError::Invalid(e.to_string()))?;
        seal.bytes("state.json", &json)?;
        seal.finish()?;
        let cur = root.join("current.json");
        write_atomic(&cur, format!("{{\"dir\": \"{name}\"}}\n").as_bytes()).map_err(io_err(&cur))?;
        // Older checkpoints are no longer current: remove them.
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let n = e.file_name();
                if n.to_string_lossy().starts_with("step-") && n != name.as_str() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    /// Restores the variables and the optimizer from the current checkpoint, every file verified,
    /// and returns its loop state; `None` when there is no `current.json`.
    pub(super) fn load(dir: &Path, varmap: &VarMap, opt: &mut AdamW) -> Result<Option<LoopState>> {
        let root = Self::root(dir);
        let cur = root.join("current.json");
        let Ok(text) = std::fs::read_to_string(&cur) else { return Ok(None) };
        #[derive(Deserialize)]
        struct Cur {
            dir: String,
        }
        let c: Cur =
            serde_json::from_str(&text).map_err(|e| StudentError::Json { path: cur.clone(), msg: e.to_string() })?;
        let d = root.join(c.dir);
        let sp = d.join("state.json");
        // Every file checked against the checksums written with it (and tensors for finite values).
        let files = crate::train_integrity::Verified::open(&d)?;
        let st: LoopState = serde_json::from_slice(&files.bytes("state.json")?)
            .map_err(|e| StudentError::Json { path: sp.clone(), msg: e.to_string() })?;
        let w = files.tensors("model.safetensors")?;
        set_vars(varmap, &w)?;
        let o = files.tensors("optim.safetensors")?;
        opt.load_state(&o, st.step)?;
        Ok(Some(st))
    }
}

/// Every variable of `varmap` by name.
pub fn named_vars(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| StudentError::Invalid("VarMap lock poisoned".into()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
}

/// Sets every variable of `varmap` from `tensors` (all must be present with the same shape).
pub fn set_vars(varmap: &VarMap, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| StudentError::Invalid("VarMap lock poisoned".into()))?;
    for (k, v) in data.iter() {
        let t = tensors.get(k).ok_or_else(|| StudentError::Invalid(format!("checkpoint has no tensor {k}")))?;
        if t.dims() != v.dims() {
            return Err(StudentError::Invalid(format!(
                "checkpoint tensor {k}: shape {:?} vs {:?}",
                t.dims(),
                v.dims()
            )));
        }
        v.set(t)?;
    }
    Ok(())
}
