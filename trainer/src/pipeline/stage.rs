//! Stage bookkeeping: a stage's key, its `stage.json` record, and the one
//! skip / invalidate / time / mark-done pattern every stage of `ckd pipeline` and `ckd bench`
//! runs through ([`Stages::run`]).
//!
//! A stage's key is the SHA-256 of its settings and of the content hashes of its input files; it
//! is written to `dir/stage.json` when the stage completes. A stage whose `stage.json` holds the
//! same key is skipped, so an interrupted run resumes at the first unfinished stage and a changed
//! setting or input re-runs exactly the stages downstream of it.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{stage_err, Result};
use crate::io::{pretty_json, write_atomic};
use crate::teacher;

/// SHA-256 (hex) over labelled parts.
pub(crate) fn key_of(parts: &[(&str, String)]) -> String {
    let mut h = Sha256::new();
    for (k, v) in parts {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    ckd_core::format::hex(&h.finalize())
}

/// SHA-256 (hex) of a file's content, as an error of `stage`.
pub(crate) fn file_hash(stage: &'static str, p: &Path) -> Result<String> {
    teacher::file_sha256(p).map_err(stage_err(stage))
}

#[derive(Serialize, Deserialize)]
struct StageRecord {
    key: String,
    seconds: f64,
}

/// Whether `dir/stage.json` records `key`.
fn is_done(dir: &Path, key: &str) -> bool {
    std::fs::read(dir.join("stage.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<StageRecord>(&b).ok())
        .is_some_and(|r| r.key == key)
}

fn mark_done(stage: &'static str, dir: &Path, key: &str, seconds: f64) -> Result<()> {
    let p = dir.join("stage.json");
    write_atomic(&p, pretty_json(&StageRecord { key: key.into(), seconds }).as_bytes()).map_err(stage_err(stage))
}

/// Drops `dir/stage.json` before a stage re-runs, so a crash mid-stage never looks finished.
fn invalidate(stage: &'static str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(stage_err(stage))?;
    match std::fs::remove_file(dir.join("stage.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(stage_err(stage)(e)),
        _ => Ok(()),
    }
}

/// The stages of one run: which were skipped, and the progress notes.
#[derive(Debug, Default)]
pub(crate) struct Stages {
    /// Stages skipped because their `stage.json` held the current key.
    pub skipped: Vec<&'static str>,
}

impl Stages {
    /// Runs `body` unless `dir/stage.json` records `key` (then the stage is counted as skipped).
    /// `dir` is created, its record dropped before `body` runs and written after it succeeds.
    /// Returns whether `body` ran.
    pub fn run(
        &mut self,
        name: &'static str,
        dir: &Path,
        key: &str,
        body: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        if is_done(dir, key) {
            self.skipped.push(name);
            return Ok(false);
        }
        invalidate(name, dir)?;
        let t = Instant::now();
        body()?;
        mark_done(name, dir, key, t.elapsed().as_secs_f64())?;
        Ok(true)
    }
}

/// A progress note on stderr. A failing stderr must not stop (or panic) the run.
pub(crate) fn log(s: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "[ckd] {s}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_runs_once_per_key_and_again_when_the_key_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("s");
        let mut st = Stages::default();
        let mut runs = 0;
        assert!(st
            .run("s", &d, "k1", || {
                runs += 1;
                Ok(())
            })
            .unwrap());
        assert!(!st
            .run("s", &d, "k1", || {
                runs += 1;
                Ok(())
            })
            .unwrap());
        assert!(st
            .run("s", &d, "k2", || {
                runs += 1;
                Ok(())
            })
            .unwrap());
        assert_eq!(runs, 2);
        assert_eq!(st.skipped, vec!["s"]);
    }

    #[test]
    fn a_failed_stage_is_not_recorded_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("s");
        let mut st = Stages::default();
        st.run("s", &d, "k", || Ok(())).unwrap();
        let failed = st.run("s", &d, "k2", || Err(super::super::PipelineError::Config("boom".into())));
        assert!(failed.is_err());
        // The old record was dropped before the body ran: neither key counts as done.
        assert!(!is_done(&d, "k") && !is_done(&d, "k2"));
    }

    #[test]
    fn keys_separate_labels_from_values() {
        assert_ne!(key_of(&[("ab", "c".into())]), key_of(&[("a", "bc".into())]));
        assert_eq!(key_of(&[("a", "b".into())]), key_of(&[("a", "b".into())]));
    }
}
