//! File I/O at the edges: atomic writes and table lookup (`.csv` or `.csv.gz`, upper- or
//! lower-case names).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed and synced, then
/// renamed over `path`. Readers see the old file or the new one, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// A file streamed to a temporary name beside `path` (`NAME.PID.tmp`, parent folders created)
/// and renamed over `path` by [`AtomicFile::commit`] after a flush and `sync_all`. Dropped
/// without a commit (an error on the way), the temporary is removed and `path` is untouched.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> io::Result<Self> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let name =
            path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        let file = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        Ok(Self { path: path.to_path_buf(), tmp, file: Some(file) })
    }

    /// Flushes, syncs and renames the temporary over the target, then syncs the folder where
    /// the platform allows it (so the rename is durable).
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("an AtomicFile holds its file until commit");
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("an AtomicFile holds its file until commit").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("an AtomicFile holds its file until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Pretty JSON with a final newline. Serializing this project's plain-data types cannot fail;
/// if a foreign type's `Serialize` does, the error is written in place of the value.
pub fn pretty_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
}

/// Finds table `name` (e.g. `ADMISSIONS`) in `dir` as `NAME.csv`, `NAME.csv.gz`, `name.csv` or
/// `name.csv.gz`. Returns `None` when none exists.
pub fn find_table(dir: &Path, name: &str) -> Option<PathBuf> {
    let lower = name.to_ascii_lowercase();
    [format!("{name}.csv"), format!("{name}.csv.gz"), format!("{lower}.csv"), format!("{lower}.csv.gz")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Opens a file for buffered streaming, decompressing it when its name ends in `.gz`.
pub fn open_maybe_gz(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let f = File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(BufReader::new(f)))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/out.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn finds_gz_and_lowercase() {
        let d = tempfile::tempdir().unwrap();
        assert!(find_table(d.path(), "ADMISSIONS").is_none());
        let p = d.path().join("admissions.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        gz.write_all(b"a,b\n1,2\n").unwrap();
        gz.finish().unwrap();
        assert_eq!(find_table(d.path(), "ADMISSIONS"), Some(p.clone()));
        let mut s = String::new();
        open_maybe_gz(&p).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "a,b\n1,2\n");
    }
}
