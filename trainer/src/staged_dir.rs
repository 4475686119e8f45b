//! Output directories replaced whole: the new contents are built in a staging directory beside
//! the final path and swapped in at the end.
//!
//! Contract: while a [`StagedDir`] is being filled, the final path keeps its old contents
//! untouched; [`StagedDir::commit`] swaps the two directories with one atomic
//! `renameat2(RENAME_EXCHANGE)` (Linux), so at every instant the path holds either the complete
//! old directory or the complete new one, then deletes the old one. Where the exchange is not
//! available (other systems, file systems without it) the old directory is first renamed
//! aside, leaving the path empty for the instant between two renames. A run killed before the
//! commit leaves only the staging directory (`.NAME.staging`), which the next run replaces.
//!
//! Replacing is refused when the final path is something other than a directory that is empty,
//! holds the output's marker file (the first of the names the caller gives, e.g. `manifest.bin`
//! of a bundle, written last), or holds only files of those names (a run of an older version
//! killed before its marker) and `*.tmp` leftovers: an `--out` pointing at an unrelated
//! directory must never be wiped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A staging directory for `target` (see the module contract). Dropped without
/// [`StagedDir::commit`], it is removed.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
    /// The staging directory, opened and exclusively locked (`flock`) for the life of the run.
    _lock: fs::File,
}

/// The error of a run that finds another live run writing `target`.
fn busy(target: &Path, staging: &Path) -> io::Error {
    let msg = format!(
        "{}: another run is writing this output now (its staging directory {} is locked); wait for it to \
         finish, or write elsewhere",
        target.display(),
        staging.display()
    );
    io::Error::new(io::ErrorKind::ResourceBusy, msg)
}

/// Creates `staging` empty and returns it open with an exclusive lock held. A staging directory
/// locked by another live run is an error saying so ([`busy`]); one left by a killed run (no
/// lock) is removed and made anew. Two runs racing for one path: exactly one gets the lock on
/// the directory the path names at the end; the other gets [`busy`].
fn claim_staging(staging: &Path, target: &Path) -> io::Result<fs::File> {
    let try_lock = |f: &fs::File| match f.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(busy(target, staging)),
        Err(fs::TryLockError::Error(e)) => Err(e),
    };
    // Held (on the old directory) until the new one is locked, so a third run sees it busy.
    let _old = match fs::File::open(staging) {
        Ok(old) => {
            try_lock(&old)?;
            match fs::remove_dir_all(staging) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => Some(old),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    match fs::create_dir(staging) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(busy(target, staging)),
        r => r?,
    }
    let dir = fs::File::open(staging)?;
    try_lock(&dir)?;
    // Another run may have replaced the directory between our create and our lock.
    if !same_file(&dir.metadata()?, &fs::metadata(staging)?) {
        return Err(busy(target, staging));
    }
    Ok(dir)
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, _: &fs::Metadata) -> bool {
    true
}

fn refuse(target: &Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, format!("{} {why}; refusing to replace it", target.display()))
}

impl StagedDir {
    /// Starts a replacement of `target`, which must not exist, or be a directory that a
    /// previous output of the same kind could have left: `outputs` are its file names, the
    /// marker first (see the module contract).
    pub fn new(target: &Path, outputs: &[&str]) -> io::Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "output path has no final name"))?;
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => {
                let marker = outputs.first().copied().unwrap_or_default();
                let ours =
                    |n: &std::ffi::OsStr| n.to_str().is_some_and(|n| outputs.contains(&n) || n.ends_with(".tmp"));
                let mut entries = fs::read_dir(target)?;
                let only_ours = entries.all(|e| e.is_ok_and(|e| ours(&e.file_name())));
                if !only_ours && !target.join(marker).is_file() {
                    return Err(refuse(target, &format!("is a directory without {marker} (not an earlier output)")));
                }
            }
            Ok(_) => return Err(refuse(target, "exists and is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(parent)?;
        let mut staging_name = std::ffi::OsString::from(".");
        staging_name.push(name);
        staging_name.push(".staging");
        let staging = parent.join(staging_name);
        let lock = claim_staging(&staging, target)?;
        Ok(StagedDir { target: target.to_path_buf(), staging, committed: false, _lock: lock })
    }

    /// Where to write the new contents.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Swaps the staging directory in (see the module contract) and deletes the old contents.
    pub fn commit(mut self) -> io::Result<()> {
        if let Ok(d) = fs::File::open(&self.staging) {
            let _ = d.sync_all();
        }
        if !self.target.exists() {
            fs::rename(&self.staging, &self.target).map_err(|e| self.appeared(e))?;
        } else if exchange(&self.staging, &self.target).is_err() {
            // No atomic exchange here: move the old directory aside first.
            let mut aside = self.staging.clone().into_os_string();
            aside.push(".old");
            let aside = PathBuf::from(aside);
            let _ = fs::remove_dir_all(&aside);
            fs::rename(&self.target, &aside)?;
            fs::rename(&self.staging, &self.target)?;
            fs::rename(&aside, &self.staging)?;
        }
        self.committed = true;
        // `staging` now holds the old contents.
        let _ = fs::remove_dir_all(&self.staging);
        if let Some(parent) = self.target.parent().and_then(|p| fs::File::open(p).ok()) {
            let _ = parent.sync_all();
        }
        Ok(())
    }
}

impl StagedDir {
    /// The error of the rename into a target that did not exist a moment before: a directory
    /// there now (ENOTEMPTY, EEXIST) was written by someone else meanwhile.
    fn appeared(&self, e: io::Error) -> io::Error {
        if !matches!(e.kind(), io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists) {
            return e;
        }
        let msg = format!(
            "{}: another run wrote this output while this one was writing it; this run's output was not \
             installed",
            self.target.display()
        );
        io::Error::new(io::ErrorKind::AlreadyExists, msg)
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Atomically exchanges two directories.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no atomic directory exchange"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_a_previous_output_whole() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("bundle");
        let s = StagedDir::new(&out, &["manifest.bin"]).unwrap();
        fs::write(s.path().join("manifest.bin"), b"old").unwrap();
        fs::write(s.path().join("stale.txt"), b"old only").unwrap();
        s.commit().unwrap();
        assert_eq!(names(&out), ["manifest.bin", "stale.txt"]);

        let s = StagedDir::new(&out, &["manifest.bin"]).unwrap();
        fs::write(s.path().join("manifest.bin"), b"new").unwrap();
        // Until the commit, the old output is untouched.
        assert_eq!(fs::read(out.join("manifest.bin")).unwrap(), b"old");
        s.commit().unwrap();
        assert_eq!(names(&out), ["manifest.bin"], "nothing of the old output is left");
        assert_eq!(fs::read(out.join("manifest.bin")).unwrap(), b"new");
        assert_eq!(names(d.path()), ["bundle"], "no staging directory is left");
    }

    #[test]
    fn an_abandoned_staging_directory_is_removed_and_the_old_output_kept() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("o");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("samples.bin"), b"old").unwrap();
        {
            let s = StagedDir::new(&out, &["samples.bin"]).unwrap();
            fs::write(s.path().join("samples.bin"), b"half").unwrap();
            // Dropped: the run failed.
        }
        assert_eq!(names(d.path()), ["o"]);
        assert_eq!(fs::read(out.join("samples.bin")).unwrap(), b"old");
        // A leftover from a killed run is replaced by the next one.
        fs::create_dir(d.path().join(".o.staging")).unwrap();
        let s = StagedDir::new(&out, &["samples.bin"]).unwrap();
        assert!(names(s.path()).is_empty());
    }

    /// Two runs writing one output: the second is told another run holds it (not "Directory not
    /// empty (os error 39)" on losing the final rename); the first is undisturbed.
    #[test]
    fn a_second_run_on_the_same_output_is_refused_while_the_first_runs() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("o");
        let first = StagedDir::new(&out, &["samples.bin"]).unwrap();
        fs::write(first.path().join("samples.bin"), b"first").unwrap();
        let e = StagedDir::new(&out, &["samples.bin"]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        assert!(e.to_string().contains("another run is writing this output now"), "{e}");
        assert!(e.to_string().contains(".o.staging is locked"), "{e}");
        first.commit().unwrap();
        assert_eq!(fs::read(out.join("samples.bin")).unwrap(), b"first");
        // Once the first run is done the path is free again.
        StagedDir::new(&out, &["samples.bin"]).unwrap().commit().unwrap();
        // The final rename failing on a target that appeared meanwhile (written by something that
        // takes no lock) says so.
        let s = StagedDir::new(&d.path().join("p"), &["samples.bin"]).unwrap();
        let r = s.appeared(io::Error::from(io::ErrorKind::DirectoryNotEmpty));
        assert!(r.to_string().contains("another run wrote this output while this one was writing it"), "{r}");
    }

    #[test]
    fn unrelated_paths_are_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        fs::create_dir(&home).unwrap();
        fs::write(home.join("notes.txt"), b"mine").unwrap();
        let e = StagedDir::new(&home, &["manifest.bin", "model.onnx"]).unwrap_err();
        assert!(e.to_string().contains("without manifest.bin"), "{e}");
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(StagedDir::new(&file, &["manifest.bin"]).is_err());
        // A partial earlier output (no marker yet, only its own files) may be replaced.
        fs::remove_file(home.join("notes.txt")).unwrap();
        fs::write(home.join("model.onnx"), b"partial").unwrap();
        fs::write(home.join("model.onnx.123.tmp"), b"partial").unwrap();
        StagedDir::new(&home, &["manifest.bin", "model.onnx"]).unwrap();
        // An empty directory may be used.
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        StagedDir::new(&empty, &["manifest.bin"]).unwrap().commit().unwrap();
    }
}
