//! The files of an ingest (`samples.bin`, the JSONL splits, `knowledge.json`, `summary.json`),
//! each written atomically, and the reader of `samples.bin`.

use std::path::{Path, PathBuf};

use ckd_core::format::SampleFile;
use ckd_core::jsonl;
use ckd_core::visit::{Sample, Split};

use super::{IngestError, Ingested};
use crate::io::pretty_json;

/// JSONL text of samples: the original line for samples read from JSONL, else the canonical
/// line of the rendered sample.
pub fn to_jsonl<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    let mut out = String::new();
    for s in samples {
        match &s.raw {
            Some(r) => out.push_str(&r.line),
            None => out.push_str(&jsonl::to_line(jsonl::INSTRUCTION, &s.text(), &jsonl::render_output(s.labels))),
        }
    }
    out
}

/// Files written by [`write_outputs`].
pub const OUTPUT_FILES: [&str; 7] =
    ["samples.bin", "all.jsonl", "train.jsonl", "val.jsonl", "test.jsonl", "knowledge.json", "summary.json"];

/// Writes an ingest's outputs into `out` (each file atomically): `samples.bin` (versioned
/// binary), `all.jsonl` (every sample in input order), `train.jsonl` / `val.jsonl` /
/// `test.jsonl`, `knowledge.json` (the fitted table, `null` when off) and `summary.json`.
pub fn write_outputs(ing: &Ingested, out: &Path) -> Result<(), IngestError> {
    let io_err = |file: PathBuf| move |source: std::io::Error| IngestError::Io { file, source };
    let write = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        crate::io::write_atomic(&p, bytes).map_err(io_err(p))
    };
    let bin = ing.file.to_bytes().map_err(|source| IngestError::Format { file: out.join("samples.bin"), source })?;
    write("samples.bin", &bin)?;
    write("all.jsonl", to_jsonl(&ing.file.samples).as_bytes())?;
    for split in [Split::Train, Split::Val, Split::Test] {
        let text = to_jsonl(ing.file.samples.iter().filter(|s| s.split == split));
        write(&format!("{}.jsonl", split.name()), text.as_bytes())?;
    }
    write("knowledge.json", pretty_json(&ing.file.knowledge).as_bytes())?;
    write("summary.json", pretty_json(&ing.summary).as_bytes())?;
    Ok(())
}

/// Reads and checks a `samples.bin`.
pub fn read_samples(path: &Path) -> Result<SampleFile, IngestError> {
    let bytes = crate::io::read_regular(path).map_err(|source| IngestError::Io { file: path.to_path_buf(), source })?;
    SampleFile::from_bytes(&bytes).map_err(|source| IngestError::Format { file: path.to_path_buf(), source })
}
