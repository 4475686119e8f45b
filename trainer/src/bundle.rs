//! Writing a model bundle: `model.onnx` (the graph) + `model.onnx.data` (its tensors, ONNX
//! external data) + `tokenizer.json` + `manifest.bin` (see [`ckd_core::bundle`]). The data
//! file, the ONNX file and the tokenizer are written first, the manifest last, into a staging
//! directory beside the output that then replaces it whole ([`crate::staged_dir`]): the output
//! path holds the complete old bundle or the complete new one, never a mix.

use std::path::{Path, PathBuf};

use ckd_core::bundle::{
    FileEntry, Manifest, PackedIndex, Precision as BundlePrecision, Provenance, MANIFEST_FILE, MODEL_DATA_FILE,
    MODEL_FILE, TOKENIZER_FILE,
};
use ckd_core::knowledge::KnowledgeTable;
use serde::Serialize;

use crate::export::{self, BuildOptions, ExportError, ExportOptions, ExportReport, Precision};
use crate::io::write_atomic;
use crate::staged_dir::StagedDir;
use crate::student::{self, StudentError};

/// Error writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleWriteError {
    /// Export failed (graph, parity probe, I/O).
    #[error("export: {0}")]
    Export(#[from] ExportError),
    /// The student directory is incomplete or invalid.
    #[error("student: {0}")]
    Student(#[from] StudentError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The manifest could not be encoded or does not check.
    #[error("manifest: {0}")]
    Manifest(String),
}

/// What [`write_bundle`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    /// Bundle directory.
    pub dir: PathBuf,
    /// The ONNX export.
    pub export: ExportReport,
    /// Bytes of each file (model, model data, tokenizer, manifest).
    pub bytes: Vec<(String, u64)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleWriteError + '_ {
    move |source| BundleWriteError::Io { path: path.to_path_buf(), source }
}

/// Exports the student in `student_dir` into a bundle directory `out` (default build of
/// `precision`, tensors in `model.onnx.data`).
pub fn write_bundle(student_dir: &Path, out: &Path, precision: Precision) -> Result<BundleReport, BundleWriteError> {
    write_bundle_with(student_dir, out, BuildOptions::new(precision))
}

/// [`write_bundle`] with a chosen build (int8 embeddings, mixed precision).
pub fn write_bundle_with(
    student_dir: &Path,
    out: &Path,
    build: BuildOptions,
) -> Result<BundleReport, BundleWriteError> {
    let precision = build.precision;
    let st = student::load_student(student_dir)?;
    let stage =
        StagedDir::new(out, &[MANIFEST_FILE, MODEL_FILE, MODEL_DATA_FILE, TOKENIZER_FILE]).map_err(io_err(out))?;
    let staged = stage.path().to_path_buf();
    let model_path = staged.join(MODEL_FILE);
    let opts = ExportOptions { build, external_data: true };
    let export = export::export_student_with(student_dir, &model_path, &opts)?;
    let model = crate::io::read_regular(&model_path).map_err(io_err(&model_path))?;
    let data_path = staged.join(MODEL_DATA_FILE);
    if export.external_data.as_ref().map(|d| d.path.as_path()) != Some(data_path.as_path()) {
        return Err(BundleWriteError::Manifest(format!("the export did not write {}", data_path.display())));
    }
    let data = crate::io::read_regular(&data_path).map_err(io_err(&data_path))?;
    let tokenizer = st.encoder.to_json().map_err(StudentError::from)?.into_bytes();
    let tok_path = staged.join(TOKENIZER_FILE);
    write_atomic(&tok_path, &tokenizer).map_err(io_err(&tok_path))?;

    // Verified like the weights: the clauses and provenance go into the manifest.
    let files = student::open_student(student_dir)?;
    let knowledge: Option<KnowledgeTable> = student::read_student_json(&files, student_dir, "knowledge.json")?;
    let prov: serde_json::Value = student::read_student_json(&files, student_dir, "provenance.json")?;
    let text = |v: &serde_json::Value| if v.is_null() { String::new() } else { v.to_string() };
    let manifest = Manifest {
        labels: Manifest::current_labels(),
        thresholds: st.thresholds.clone(),
        precision: match precision {
            Precision::F32 => BundlePrecision::F32,
            Precision::Int8 => BundlePrecision::Int8,
        },
        tokenizer: st.encoder.settings(),
        knowledge,
        files: vec![
            FileEntry::of(MODEL_FILE, &model),
            FileEntry::of(MODEL_DATA_FILE, &data),
            FileEntry::of(TOKENIZER_FILE, &tokenizer),
        ],
        provenance: Provenance {
            data_hash: prov["train"]["source_hash"].as_str().unwrap_or_default().to_string(),
            training_config: text(&prov["train_config"]),
            teacher: text(&prov["teacher"]),
            created_by: format!("ckd {}", env!("CARGO_PKG_VERSION")),
        },
    };
    manifest.check().map_err(|e| BundleWriteError::Manifest(e.to_string()))?;
    let bytes = manifest.to_bytes().map_err(|e| BundleWriteError::Manifest(e.to_string()))?;
    let man_path = staged.join(MANIFEST_FILE);
    write_atomic(&man_path, &bytes).map_err(io_err(&man_path))?;
    stage.commit().map_err(io_err(out))?;
    let mut export = export;
    export.path = out.join(MODEL_FILE);
    if let Some(d) = export.external_data.as_mut() {
        d.path = out.join(MODEL_DATA_FILE);
    }
    Ok(BundleReport {
        dir: out.to_path_buf(),
        bytes: vec![
            (MODEL_FILE.into(), model.len() as u64),
            (MODEL_DATA_FILE.into(), data.len() as u64),
            (TOKENIZER_FILE.into(), tokenizer.len() as u64),
            (MANIFEST_FILE.into(), bytes.len() as u64),
        ],
        export,
    })
}

/// What [`pack_bundle`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    /// The single-file bundle.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The packed files (name, bytes), manifest first.
    pub files: Vec<(String, u64)>,
}

/// Packs the bundle directory `dir` into one file `out` (`.ckdb`, see
/// [`ckd_core::bundle::PackedIndex`]), written atomically: `manifest.bin` and every file it
/// lists, each checked against the manifest first (a damaged directory is not packed).
/// `ckd_edge::Engine::open` opens the file like the directory. An existing `out` is refused
/// (see [`pack_bundle_with`]).
pub fn pack_bundle(dir: &Path, out: &Path) -> Result<PackReport, BundleWriteError> {
    pack_bundle_with(dir, out, false)
}

/// `path` made absolute with its deepest existing ancestor canonical (symbolic links
/// resolved), so that it can be compared with a canonical directory before it exists.
fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match base.canonicalize() {
            Ok(c) => return Ok(rest.iter().rev().fold(c, |p, n| p.join(n))),
            Err(_) => match (base.parent(), base.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    base = parent;
                }
                _ => return Ok(abs),
            },
        }
    }
}

/// [`pack_bundle`], replacing an existing file `out` when `force`. Always refused: an `out`
/// inside the bundle directory it reads (it would overwrite one of the bundle's own files) and
/// an `out` that is a directory.
pub fn pack_bundle_with(dir: &Path, out: &Path, force: bool) -> Result<PackReport, BundleWriteError> {
    let refuse = |msg: String| BundleWriteError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, msg),
    };
    let src = dir.canonicalize().map_err(io_err(dir))?;
    if resolved(out).map_err(io_err(out))?.starts_with(&src) {
        return Err(refuse(format!("is inside the bundle directory {} being packed", dir.display())));
    }
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => return Err(refuse("is a directory".into())),
        Ok(_) if !force => return Err(refuse("exists (use --force to replace it)".into())),
        _ => {}
    }
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(io_err(&p))
    };
    let manifest_bytes = read(MANIFEST_FILE)?;
    let manifest = Manifest::from_bytes(&manifest_bytes)
        .map_err(|e| BundleWriteError::Manifest(format!("{}: {e}", dir.join(MANIFEST_FILE).display())))?;
    let mut files = vec![(MANIFEST_FILE.to_string(), manifest_bytes)];
    for f in &manifest.files {
        let bytes = read(&f.name)?;
        manifest
            .verify_file(&f.name, &bytes)
            .map_err(|e| BundleWriteError::Manifest(format!("{}: {e}", dir.display())))?;
        files.push((f.name.clone(), bytes));
    }
    let sizes: Vec<(String, u64)> = files.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let packed = PackedIndex::pack(&refs).map_err(|e| BundleWriteError::Manifest(e.to_string()))?;
    write_atomic(out, &packed).map_err(io_err(out))?;
    Ok(PackReport { path: out.to_path_buf(), bytes: packed.len() as u64, files: sizes })
}
