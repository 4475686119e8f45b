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
/// `name.csv.gz`: the first of these that exists (symlinks followed), `None` when none does. A
/// candidate that exists but is not a regular file (a device, a FIFO, a directory) is an error
/// with its path, saying what it is.
pub fn find_table(dir: &Path, name: &str) -> Result<Option<PathBuf>, (PathBuf, io::Error)> {
    let lower = name.to_ascii_lowercase();
    for f in [format!("{name}.csv"), format!("{name}.csv.gz"), format!("{lower}.csv"), format!("{lower}.csv.gz")] {
        let p = dir.join(f);
        if fs::metadata(&p).is_ok() {
            return match check_regular(&p) {
                Ok(()) => Ok(Some(p)),
                Err(e) => Err((p, e)),
            };
        }
    }
    Ok(None)
}

/// What `path` is when it exists and is not a regular file (symlinks followed): `a directory`,
/// `a FIFO (named pipe)`, `a character device`, ...; `None` for a regular file or when it
/// cannot be examined (opening it then gives the real error).
pub fn not_regular(path: &Path) -> Option<&'static str> {
    let t = fs::metadata(path).ok()?.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        for (is, what) in [
            (t.is_fifo(), "a FIFO (named pipe)"),
            (t.is_char_device(), "a character device"),
            (t.is_block_device(), "a block device"),
            (t.is_socket(), "a socket"),
        ] {
            if is {
                return Some(what);
            }
        }
    }
    Some("not a regular file")
}

/// `Ok` unless `path` exists and is not a regular file; then an `InvalidInput` error saying what
/// it is ("is a character device, not a regular file"). Reading a FIFO or a device can block or
/// never end, so data and model files must be regular files.
pub fn check_regular(path: &Path) -> io::Result<()> {
    match not_regular(path) {
        None => Ok(()),
        Some(what) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {what}, not a regular file"))),
    }
}

/// [`File::open`] of a regular file only (see [`check_regular`]).
pub fn open_regular(path: &Path) -> io::Result<File> {
    check_regular(path)?;
    File::open(path)
}

/// [`fs::read`] of a regular file only (see [`check_regular`]).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    check_regular(path)?;
    fs::read(path)
}

/// SHA-256 (lower-case hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    ckd_core::format::hex(&Sha256::digest(bytes))
}

/// SHA-256 (lower-case hex) of a regular file, streamed in 1 MiB reads.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(ckd_core::format::hex(&h.finalize()))
}

/// [`fs::read_to_string`] of a regular file only (see [`check_regular`]).
pub fn read_to_string_regular(path: &Path) -> io::Result<String> {
    check_regular(path)?;
    fs::read_to_string(path)
}

/// Opens a file for buffered streaming, decompressing it when its name ends in `.gz`; a path
/// that is not a regular file is refused ([`check_regular`]).
pub fn open_maybe_gz(path: &Path) -> io::Result<Box<dyn BufRead>> {
    check_regular(path)?;
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
        assert!(find_table(d.path(), "ADMISSIONS").unwrap().is_none());
        let p = d.path().join("admissions.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        gz.write_all(b"a,b\n1,2\n").unwrap();
        gz.finish().unwrap();
        assert_eq!(find_table(d.path(), "ADMISSIONS").unwrap(), Some(p.clone()));
        let mut s = String::new();
        open_maybe_gz(&p).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "a,b\n1,2\n");
    }
}
