//! Shared test helpers: where the real data lives.
#![allow(dead_code)]

use std::path::PathBuf;

/// A shared data path from `var`, else `default` relative to the workspace root. Returns `None`
/// (and says so) when it does not exist outside CI; inside CI (`CI` set) a missing path fails
/// the test, so CI never passes a data test vacuously.
pub fn data_path(var: &str, default: &str) -> Option<PathBuf> {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(default));
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{var} / {} does not exist, and CI must run this test", p.display());
    }
    eprintln!("NOT RUN: {} not found (set {var})", p.display());
    None
}
