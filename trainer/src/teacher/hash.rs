//! The hashes written into teacher manifests: SHA-256 of files and bytes (hex) and the
//! label-space hash.

use std::path::Path;

use ckd_core::LabelSpace;

use super::{io_err, Result};

pub use crate::io::sha256_hex;

/// SHA-256 (hex) of a file ([`crate::io::file_sha256`]), the error naming the file.
pub fn file_sha256(path: &Path) -> Result<String> {
    crate::io::file_sha256(path).map_err(io_err(path))
}

/// The label-space hash as the manifests write it.
pub fn label_space_hex() -> String {
    format!("{:016x}", LabelSpace.hash())
}
