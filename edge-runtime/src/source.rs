//! Where a bundle's files are read from: a directory, or one packed file (`.ckdb`, written by
//! `ckd pack`; layout in [`ckd_core::bundle::PackedIndex`]). Either way the manifest and the
//! checks are the same; only the reading differs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ckd_core::bundle::{BundleError, PackedIndex, MAX_PACKED_INDEX_BYTES};
use ckd_core::format::{FormatError, HEADER_LEN};
use sha2::{Digest, Sha256};
use tract_onnx::pb::tensor_proto::DataLocation;
use tract_onnx::pb::ModelProto;

use crate::error::EdgeError;

pub(crate) enum Source {
    /// A bundle directory.
    Dir(PathBuf),
    /// A single-file bundle (canonical path), its index and where its files' bytes start.
    Packed { path: PathBuf, index: PackedIndex, data_start: u64 },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EdgeError + '_ {
    move |source| EdgeError::Io { path: path.to_path_buf(), source }
}

/// What `path` is when it exists and is not a regular file (symlinks followed): `a directory`,
/// `a FIFO (named pipe)`, ... Reading a FIFO or a device could block or never end, so bundle
/// files must be regular files.
fn not_regular(path: &Path) -> Option<&'static str> {
    let t = std::fs::metadata(path).ok()?.file_type();
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

/// The error for `path`, which is `what` instead of a regular file.
fn not_regular_err(path: &Path, what: &str) -> EdgeError {
    let msg = format!("is {what}, not a regular file");
    EdgeError::Io { path: path.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg) }
}

/// Opens `path` for reading when it is a regular file (never a FIFO or a device).
fn open_regular(path: &Path) -> Result<File, EdgeError> {
    if let Some(what) = not_regular(path) {
        return Err(not_regular_err(path, what));
    }
    File::open(path).map_err(io_err(path))
}

/// Size and SHA-256 of the next `limit` bytes of `r` (all of them when `None`), read in 1 MiB
/// chunks (never the whole file in memory).
fn digest(mut r: impl Read, limit: Option<u64>) -> std::io::Result<(u64, [u8; 32])> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let want = limit.map_or(buf.len() as u64, |l| (l - size).min(buf.len() as u64)) as usize;
        if want == 0 {
            break;
        }
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize().into()))
}

impl Source {
    /// A directory, or a packed file when `bundle` is a regular file (its index checked);
    /// anything else (a FIFO, a device) is an error saying what it is.
    pub(crate) fn open(bundle: &Path) -> Result<Self, EdgeError> {
        match not_regular(bundle) {
            Some("a directory") => return Ok(Source::Dir(bundle.to_path_buf())),
            Some(what) => return Err(not_regular_err(bundle, what)),
            None if !bundle.exists() => return Ok(Source::Dir(bundle.to_path_buf())),
            None => {}
        }
        let path = bundle.canonicalize().map_err(io_err(bundle))?;
        let bundle_err = |source: BundleError| EdgeError::Bundle { bundle: bundle.to_path_buf(), source };
        let mut f = open_regular(&path)?;
        let file_len = f.metadata().map_err(io_err(&path))?.len();
        let mut envelope = vec![0u8; HEADER_LEN.min(file_len as usize)];
        f.read_exact(&mut envelope).map_err(io_err(&path))?;
        let len = PackedIndex::envelope_len(&envelope).map_err(|e| bundle_err(BundleError::PackedFormat(e)))?;
        if len > MAX_PACKED_INDEX_BYTES {
            let msg = format!("index of {len} bytes, over the maximum of {MAX_PACKED_INDEX_BYTES}");
            return Err(bundle_err(BundleError::Packed(msg)));
        }
        if len > file_len {
            let e = FormatError::Truncated { got: file_len as usize, need: len.min(usize::MAX as u64) as usize };
            return Err(bundle_err(BundleError::PackedFormat(e)));
        }
        envelope.resize(len as usize, 0);
        f.read_exact(&mut envelope[HEADER_LEN..]).map_err(io_err(&path))?;
        let index = PackedIndex::from_bytes(&envelope, file_len).map_err(bundle_err)?;
        Ok(Source::Packed { path, index, data_start: PackedIndex::data_start(len) })
    }

    /// The bundle's file `name`, whole.
    pub(crate) fn read(&self, name: &str) -> Result<Vec<u8>, EdgeError> {
        match self.open_entry(name)? {
            None => {
                let path = self.path().join(name);
                let mut bytes = Vec::new();
                open_regular(&path)?.read_to_end(&mut bytes).map_err(io_err(&path))?;
                Ok(bytes)
            }
            Some((mut f, size)) => {
                let mut bytes = vec![0u8; size as usize];
                f.read_exact(&mut bytes).map_err(io_err(self.path()))?;
                Ok(bytes)
            }
        }
    }

    /// Size and SHA-256 of the bundle's file `name`, streamed.
    pub(crate) fn digest(&self, name: &str) -> Result<(u64, [u8; 32]), EdgeError> {
        match self.open_entry(name)? {
            None => {
                let path = self.path().join(name);
                if !path.exists() {
                    return Err(self.missing(name));
                }
                digest(open_regular(&path)?, None).map_err(io_err(&path))
            }
            Some((f, size)) => digest(f, Some(size)).map_err(io_err(self.path())),
        }
    }

    fn missing(&self, name: &str) -> EdgeError {
        EdgeError::Bundle { bundle: self.path().to_path_buf(), source: BundleError::MissingFile(name.into()) }
    }

    /// The packed file positioned at `name`'s bytes, and their size (a directory: `None`).
    fn open_entry(&self, name: &str) -> Result<Option<(File, u64)>, EdgeError> {
        let Source::Packed { path, index, data_start } = self else { return Ok(None) };
        let e = index.get(name).ok_or_else(|| self.missing(name))?;
        let mut f = File::open(path).map_err(io_err(path))?;
        f.seek(SeekFrom::Start(data_start + e.offset)).map_err(io_err(path))?;
        Ok(Some((f, e.size)))
    }

    /// The bundle's path (directory or packed file).
    pub(crate) fn path(&self) -> &Path {
        match self {
            Source::Dir(dir) => dir,
            Source::Packed { path, .. } => path,
        }
    }

    /// Prepares `model` for tract's parser and returns the directory it resolves external data
    /// in. A directory: unchanged, the directory itself. A packed file: each external tensor's
    /// `location` (a file of the bundle) becomes the packed file and its offset an offset into
    /// it, so tract reads the tensor straight from the packed file; the directory is the packed
    /// file's.
    pub(crate) fn prepare(&self, model: &mut ModelProto) -> Result<String, EdgeError> {
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| EdgeError::Model(format!("bundle path {} is not UTF-8 (tract needs it)", p.display())))
        };
        let Source::Packed { path, index, data_start } = self else {
            return utf8(self.path());
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        let file_name = path.file_name().and_then(|n| n.to_str()).map(str::to_string);
        let file_name = file_name.ok_or_else(|| EdgeError::Model(format!("{} is not UTF-8", path.display())))?;
        let bad = |msg: String| EdgeError::Model(format!("model.onnx: {msg}"));
        for t in model.graph.iter_mut().flat_map(|g| g.initializer.iter_mut()) {
            if t.data_location != Some(DataLocation::External as i32) {
                continue;
            }
            let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone());
            let location =
                get("location").ok_or_else(|| bad(format!("tensor {}: external data without location", t.name)))?;
            let num = |k: &str| -> Result<Option<u64>, EdgeError> {
                get(k)
                    .map(|v| v.parse::<u64>().map_err(|_| bad(format!("tensor {}: bad {k} {v:?}", t.name))))
                    .transpose()
            };
            let (offset, length) = (num("offset")?.unwrap_or(0), num("length")?);
            let e = index
                .get(&location)
                .ok_or_else(|| bad(format!("tensor {}: {location} is not in the bundle", t.name)))?;
            let length = length.unwrap_or(e.size.saturating_sub(offset));
            if offset.checked_add(length).is_none_or(|end| end > e.size) {
                return Err(bad(format!("tensor {}: bytes {offset}..+{length} are outside {location}", t.name)));
            }
            let at = data_start + e.offset + offset;
            for entry in &mut t.external_data {
                match entry.key.as_str() {
                    "location" => entry.value = file_name.clone(),
                    "offset" => entry.value = at.to_string(),
                    "length" => entry.value = length.to_string(),
                    _ => {}
                }
            }
            for (key, value) in [("offset", at), ("length", length)] {
                if !t.external_data.iter().any(|e| e.key == key) {
                    t.external_data
                        .push(tract_onnx::pb::StringStringEntryProto { key: key.into(), value: value.to_string() });
                }
            }
        }
        utf8(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of opening `bytes` written as `name`, as text.
    fn open_error(name: &str, bytes: &[u8]) -> String {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        match Source::open(&p) {
            Ok(_) => panic!("{name} opened"),
            Err(e) => e.to_string(),
        }
    }

    /// Errors in a `.ckdb`'s header or index name the `.ckdb`, not `manifest.bin`.
    #[test]
    fn packed_header_errors_name_the_packed_file() {
        let index = PackedIndex::layout(&[(ckd_core::bundle::MANIFEST_FILE.into(), 3)]);
        let env = index.to_bytes().unwrap();
        let mut bad_checksum = env.clone();
        *bad_checksum.last_mut().unwrap() ^= 0x55;
        let mut trailing = PackedIndex::pack(&[(ckd_core::bundle::MANIFEST_FILE, b"abc")]).unwrap();
        trailing.extend_from_slice(b"extra");
        for (what, bytes) in [
            ("empty", Vec::new()),
            ("short", b"CKDPACKD".to_vec()),
            ("not packed", vec![7u8; 200]),
            ("checksum", bad_checksum),
            ("trailing", trailing),
        ] {
            let e = open_error("b.ckdb", &bytes);
            assert!(e.contains("b.ckdb") && e.contains("packed bundle index"), "{what}: {e}");
            assert!(!e.contains(ckd_core::bundle::MANIFEST_FILE), "{what}: {e}");
        }
        let e = open_error("t.ckdb", &{
            let mut t = PackedIndex::pack(&[(ckd_core::bundle::MANIFEST_FILE, b"abc")]).unwrap();
            t.push(0);
            t
        });
        assert!(e.contains("1 bytes after the last file"), "{e}");
        // A bad name in the index is the index's fault, not manifest.bin's.
        let bad_name = PackedIndex::pack(&[(ckd_core::bundle::MANIFEST_FILE, b"abc"), ("../x", b"y")]).unwrap();
        let e = open_error("n.ckdb", &bad_name);
        assert!(e.contains("n.ckdb: packed bundle index: entry \"../x\" is not a plain file name"), "{e}");
        assert!(!e.contains(ckd_core::bundle::MANIFEST_FILE), "{e}");
        // An index longer than the maximum is refused before it is read.
        let huge = ckd_core::format::encode_envelope(
            ckd_core::bundle::PACKED_MAGIC,
            ckd_core::bundle::PACKED_VERSION,
            &vec![0u8; MAX_PACKED_INDEX_BYTES as usize],
        );
        let e = open_error("h.ckdb", &huge);
        assert!(e.contains("h.ckdb") && e.contains("over the maximum of 1048576"), "{e}");
    }
}
