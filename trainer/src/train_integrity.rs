//! Integrity of a training run: checkpoint and student files sealed with their SHA-256 and
//! verified when read back, tensor files whose errors name the file, and finite losses and weights.
//!
//! A sealed directory (a checkpoint `DIR/checkpoint/step-N/`, or a saved student) holds its files
//! and [`SUMS_FILE`], written last (before the checkpoint is made current):
//! `{"version": 1, "sha256": {name: hex}}`. Reading through [`Verified`] reads each file once,
//! checks its size-independent SHA-256 against that list (a flipped bit or a truncated file is
//! refused, naming the file) and, for tensor files, that every value is finite. A directory
//! without the list is refused too: nothing unverified is trained on, evaluated or exported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::io::{sha256_hex, write_atomic};

/// The checksum list of a checkpoint directory.
pub const SUMS_FILE: &str = "checksums.json";
/// Version of [`SUMS_FILE`]'s layout.
pub const SUMS_VERSION: u32 = 1;

/// What is wrong with a checkpoint or tensor file, or with a training step. Every variant names
/// the file (or the step).
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file's SHA-256 differs from the one recorded when it was written.
    #[error(
        "{path}: sha256 {found} differs from the {expected} recorded when it was written: the file is corrupt, \
         truncated or was edited"
    )]
    Checksum {
        /// File.
        path: PathBuf,
        /// Recorded hex SHA-256.
        expected: String,
        /// Hex SHA-256 of the file now.
        found: String,
    },
    /// The directory has no usable checksum list (or it lacks a file).
    #[error("{path}: {msg} ({remedy})")]
    Sums {
        /// The list's path.
        path: PathBuf,
        /// What is wrong.
        msg: String,
        /// What the reader can do about it.
        remedy: &'static str,
    },
    /// The file is not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {msg}")]
    Tensors {
        /// File.
        path: PathBuf,
        /// What the parser said.
        msg: String,
    },
    /// A tensor holds NaN or an infinity.
    #[error("{what}: tensor {tensor} holds a non-finite value ({value})")]
    NonFiniteTensor {
        /// The file (or "weights after step N").
        what: String,
        /// Tensor name.
        tensor: String,
        /// The first non-finite value.
        value: f32,
    },
    /// A training step gave a non-finite loss or gradient norm.
    #[error(
        "step {step}: {what} is {value}, not finite: training stopped (lower the learning rate or check the inputs)"
    )]
    NonFiniteStep {
        /// 1-based step.
        step: u64,
        /// "loss" or "gradient norm".
        what: &'static str,
        /// The value.
        value: f64,
    },
}

type Result<T> = std::result::Result<T, IntegrityError>;

#[derive(Serialize, Deserialize)]
struct Sums {
    version: u32,
    sha256: BTreeMap<String, String>,
}

/// The first non-finite value of each float tensor, checked in name order.
fn check_finite<'a>(what: &str, tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Result<()> {
    let mut named: Vec<(&String, &Tensor)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    for (name, t) in named {
        if !matches!(t.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            continue;
        }
        let bad = |e: candle_core::Error| IntegrityError::Tensors { path: PathBuf::from(what), msg: e.to_string() };
        let values =
            t.flatten_all().and_then(|f| f.to_dtype(DType::F32)).and_then(|f| f.to_vec1::<f32>()).map_err(bad)?;
        if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
            return Err(IntegrityError::NonFiniteTensor { what: what.to_string(), tensor: name.clone(), value });
        }
    }
    Ok(())
}

/// Checks that every float value of `tensors` is finite; `what` names them in the error.
pub fn ensure_finite_tensors(what: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
    check_finite(what, tensors)
}

/// Checks one training step's loss and gradient norm (before the optimizer applies it).
pub fn ensure_finite_step(step: u64, loss: f32, grad_norm: f64) -> Result<()> {
    if !loss.is_finite() {
        return Err(IntegrityError::NonFiniteStep { step, what: "loss", value: f64::from(loss) });
    }
    if !grad_norm.is_finite() {
        return Err(IntegrityError::NonFiniteStep { step, what: "gradient norm", value: grad_norm });
    }
    Ok(())
}

/// The safetensors bytes of `tensors` (what [`write_tensors`] writes).
fn tensor_bytes(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    safetensors::serialize(tensors.iter(), None)
        .map_err(|e| IntegrityError::Tensors { path: path.to_path_buf(), msg: e.to_string() })
}

/// Writes `tensors` to `path` as safetensors, atomically; errors name `path`. Returns the
/// bytes' hex SHA-256.
pub fn write_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<String> {
    let bytes = tensor_bytes(path, tensors)?;
    write_atomic(path, &bytes).map_err(|source| IntegrityError::Io { path: path.to_path_buf(), source })?;
    Ok(sha256_hex(&bytes))
}

/// Parses safetensors `bytes` read from `path` (on the CPU); errors name `path`.
fn parse_tensors(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| IntegrityError::Tensors { path: path.to_path_buf(), msg: e.to_string() })
}

/// Reads a safetensors file (no checksum known); errors name `path`.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes =
        crate::io::read_regular(path).map_err(|source| IntegrityError::Io { path: path.to_path_buf(), source })?;
    parse_tensors(path, &bytes)
}

/// Writes the files of one checkpoint directory and, last, their checksum list.
pub struct Seal {
    dir: PathBuf,
    sums: BTreeMap<String, String>,
}

impl Seal {
    /// Starts sealing files written into `dir`.
    pub fn new(dir: &Path) -> Self {
        Seal { dir: dir.to_path_buf(), sums: BTreeMap::new() }
    }

    /// Writes `tensors` as `name` (refusing non-finite values: such a checkpoint could never
    /// be resumed).
    pub fn tensors(&mut self, name: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let path = self.dir.join(name);
        check_finite(&path.display().to_string(), tensors)?;
        let sum = write_tensors(&path, tensors)?;
        self.sums.insert(name.to_string(), sum);
        Ok(())
    }

    /// Writes `bytes` as `name`.
    pub fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        write_atomic(&path, bytes).map_err(|source| IntegrityError::Io { path: path.clone(), source })?;
        self.sums.insert(name.to_string(), sha256_hex(bytes));
        Ok(())
    }

    /// Writes the checksum list; the directory is complete once this returns.
    pub fn finish(self) -> Result<()> {
        let path = self.dir.join(SUMS_FILE);
        let sums = Sums { version: SUMS_VERSION, sha256: self.sums };
        let json = crate::io::pretty_json(&sums);
        write_atomic(&path, json.as_bytes()).map_err(|source| IntegrityError::Io { path, source })
    }
}

/// What a sealed directory is, for the messages of [`Verified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// A training checkpoint (`DIR/checkpoint/step-N/`).
    Checkpoint,
    /// A saved student (`ckd student train --out`).
    Student,
}

impl SealedKind {
    fn name(self) -> &'static str {
        match self {
            SealedKind::Checkpoint => "checkpoint",
            SealedKind::Student => "student directory",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            SealedKind::Checkpoint => "delete the checkpoint directory to train from the start",
            SealedKind::Student => "train the student again, or restore its directory from a copy",
        }
    }
}

/// A sealed directory opened for reading: every read is checked against its list.
pub struct Verified {
    dir: PathBuf,
    sums: BTreeMap<String, String>,
    kind: SealedKind,
}

impl Verified {
    /// Reads the checksum list of the checkpoint directory `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_kind(dir, SealedKind::Checkpoint)
    }

    /// Reads the checksum list of `dir`, a sealed directory of `kind`.
    pub fn open_kind(dir: &Path, kind: SealedKind) -> Result<Self> {
        let path = dir.join(SUMS_FILE);
        let sums_err = |msg: String| IntegrityError::Sums { path: path.clone(), msg, remedy: kind.remedy() };
        let text =
            match crate::io::read_regular(&path).and_then(|b| String::from_utf8(b).map_err(std::io::Error::other)) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(sums_err(format!("missing: this {} cannot be verified", kind.name())))
                }
                Err(source) => return Err(IntegrityError::Io { path, source }),
            };
        let sums: Sums = serde_json::from_str(&text).map_err(|e| sums_err(format!("malformed: {e}")))?;
        if sums.version != SUMS_VERSION {
            return Err(sums_err(format!("version {} (this build reads {SUMS_VERSION})", sums.version)));
        }
        Ok(Verified { dir: dir.to_path_buf(), sums: sums.sha256, kind })
    }

    /// Whether the list has a checksum for `name`.
    pub fn has(&self, name: &str) -> bool {
        self.sums.contains_key(name)
    }

    /// The bytes of `name`, checked against the list.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        let expected = self.sums.get(name).ok_or_else(|| IntegrityError::Sums {
            path: self.dir.join(SUMS_FILE),
            msg: format!("no checksum for {name}"),
            remedy: self.kind.remedy(),
        })?;
        let bytes =
            crate::io::read_regular(&path).map_err(|source| IntegrityError::Io { path: path.clone(), source })?;
        let found = sha256_hex(&bytes);
        if &found != expected {
            return Err(IntegrityError::Checksum { path, expected: expected.clone(), found });
        }
        Ok(bytes)
    }

    /// The tensors of `name`, checked against the list and for finite values.
    pub fn tensors(&self, name: &str) -> Result<HashMap<String, Tensor>> {
        let path = self.dir.join(name);
        let tensors = parse_tensors(&path, &self.bytes(name)?)?;
        check_finite(&path.display().to_string(), &tensors)?;
        Ok(tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(v: &[f32]) -> HashMap<String, Tensor> {
        HashMap::from([
            ("w".to_string(), Tensor::new(v, &Device::Cpu).unwrap()),
            ("ids".to_string(), Tensor::new(&[1u32, 2], &Device::Cpu).unwrap()),
        ])
    }

    fn sealed(dir: &Path) {
        let mut s = Seal::new(dir);
        s.tensors("model.safetensors", &tensors(&[1.0, -2.0, 3.5])).unwrap();
        s.bytes("state.json", b"{\"step\": 3}").unwrap();
        s.finish().unwrap();
    }

    #[test]
    fn sealed_files_read_back() {
        let d = tempfile::tempdir().unwrap();
        sealed(d.path());
        let v = Verified::open(d.path()).unwrap();
        let t = v.tensors("model.safetensors").unwrap();
        assert_eq!(t["w"].to_vec1::<f32>().unwrap(), [1.0, -2.0, 3.5]);
        assert_eq!(v.bytes("state.json").unwrap(), b"{\"step\": 3}");
    }

    /// A sealed file with one flipped exponent bit, a truncated sealed file, and a directory
    /// without its checksum list are each refused with the file named.
    #[test]
    fn flipped_bit_truncation_and_missing_list_are_refused() {
        let d = tempfile::tempdir().unwrap();
        sealed(d.path());
        let p = d.path().join("model.safetensors");
        let good = std::fs::read(&p).unwrap();
        // The file ends with w's last f32 (3.5, bytes 00 00 60 40): flip an exponent bit.
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x04;
        std::fs::write(&p, &flipped).unwrap();
        let e = Verified::open(d.path()).unwrap().tensors("model.safetensors").unwrap_err();
        assert!(matches!(e, IntegrityError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("model.safetensors"), "{e}");

        std::fs::write(&p, &good[..good.len() - 5]).unwrap();
        let e = Verified::open(d.path()).unwrap().tensors("model.safetensors").unwrap_err();
        assert!(e.to_string().contains("model.safetensors") && e.to_string().contains("truncated"), "{e}");
        // Without the checksums, a truncated tensor file still names itself.
        let e = read_tensors(&p).unwrap_err();
        assert!(matches!(e, IntegrityError::Tensors { .. }) && e.to_string().contains("model.safetensors"), "{e}");

        std::fs::remove_file(d.path().join(SUMS_FILE)).unwrap();
        let e = Verified::open(d.path()).err().unwrap();
        assert!(e.to_string().contains(SUMS_FILE) && e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn non_finite_values_and_steps_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = Seal::new(d.path()).tensors("m.safetensors", &tensors(&[1.0, f32::NAN])).unwrap_err();
        assert!(matches!(e, IntegrityError::NonFiniteTensor { ref tensor, .. } if tensor == "w"), "{e}");
        assert!(!d.path().join("m.safetensors").exists(), "nothing written");
        assert!(ensure_finite_tensors("weights", &tensors(&[f32::INFINITY])).is_err());
        assert!(ensure_finite_tensors("weights", &tensors(&[8.2e36])).is_ok(), "large but finite");
        ensure_finite_step(1, 0.5, 2.0).unwrap();
        let e = ensure_finite_step(7, f32::NAN, 2.0).unwrap_err();
        assert!(e.to_string().starts_with("step 7: loss is NaN"), "{e}");
        let e = ensure_finite_step(8, 0.5, f64::INFINITY).unwrap_err();
        assert!(e.to_string().contains("gradient norm is inf"), "{e}");
    }
}
