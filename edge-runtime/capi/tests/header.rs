//! The committed C header `include/ckd_edge.h` is what cbindgen generates from `src/lib.rs`
//! with `cbindgen.toml`. Regenerate it with
//! `CKD_UPDATE_HEADER=1 cargo test -p ckd-edge-c --test header`.

use std::path::Path;

#[test]
fn committed_header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = dir.join("include/ckd_edge.h");
    if std::env::var_os("CKD_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("writing the header");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate with CKD_UPDATE_HEADER=1 cargo test -p ckd-edge-c --test header\n--- generated ---\n{}",
        path.display(),
        String::from_utf8_lossy(&generated)
    );
}
