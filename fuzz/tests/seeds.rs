//! Writes the committed corpus (run by hand when the formats change):
//! `cargo test -p ckd-fuzz --test seeds -- --ignored`
//!
//! wire: valid request and response frames, a stream of several frames, and one of each
//! malformed kind; manifest and bundle: the files of a tiny bundle made as `ckd export` does.
//! Inputs that crashed a target are added by hand (e.g. `corpus/bundle-tokenizer/panic-decoder`).

#[path = "../../firmware-examples/bedside-monitor/tests/common/mod.rs"]
mod tiny;

use std::path::Path;

use ckd_core::bundle::{MANIFEST_FILE, MODEL_DATA_FILE, MODEL_FILE, TOKENIZER_FILE};
use ckd_core::wire::{self, ErrorCode, Reply, Request, Response, VisitSummary, WirePrediction};
use ckd_trainer::export::Precision;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn request(id: u32, v: &VisitSummary) -> Vec<u8> {
    let mut out = vec![0u8; wire::MAX_REQUEST_FRAME + 1];
    let n = wire::encode_request(&Request { id, visit: v.clone() }, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
#[ignore = "writes the committed corpus"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let w = root.join("wire");
    let summaries: Vec<VisitSummary> = tiny::visits().iter().map(|v| VisitSummary::from_visit(v).unwrap()).collect();
    for (i, v) in summaries.iter().enumerate() {
        write(&w, &format!("request-{i}"), &request(i as u32 + 1, v));
    }
    let stream: Vec<u8> = summaries.iter().enumerate().flat_map(|(i, v)| request(i as u32 + 10, v)).collect();
    write(&w, "stream", &stream);
    let mut probs = [0u16; 25];
    probs[3] = 50_000;
    let pred = WirePrediction {
        probs,
        positive: 1 << 3,
        top_k: [3u8, 0, 1, 2, 4].into_iter().collect(),
        truncated: true,
        tokens: 48,
    };
    for (name, reply) in [
        ("response-prediction", Reply::Prediction(pred)),
        ("response-error", Reply::Error { code: ErrorCode::InvalidItem, detail: 258 }),
    ] {
        let mut out = vec![0u8; wire::MAX_RESPONSE_FRAME + 1];
        let n = wire::encode_response(&Response { id: 5, reply }, &mut out).unwrap();
        write(&w, name, &out[..n]);
    }
    let good = request(1, &summaries[0]);
    let mut bad_crc = good.clone();
    bad_crc[4] ^= 1;
    write(&w, "bad-crc", &bad_crc);
    write(&w, "truncated", &good[..good.len() / 2]);
    write(&w, "garbage", &[0x07, 0x01, 0x02, 0x00, 0xff, 0xff, 0x00]);

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    tiny::tiny_bundle(dir.path(), &bundle, Precision::Int8);
    let read = |n: &str| std::fs::read(bundle.join(n)).unwrap();
    let (manifest, model, tokenizer) = (read(MANIFEST_FILE), read(MODEL_FILE), read(TOKENIZER_FILE));
    let base = root.join("bundle-base");
    write(&base, MANIFEST_FILE, &manifest);
    write(&base, MODEL_FILE, &model);
    write(&base, TOKENIZER_FILE, &tokenizer);
    if let Ok(data) = std::fs::read(bundle.join(MODEL_DATA_FILE)) {
        write(&base, MODEL_DATA_FILE, &data);
    }
    // A single-file bundle of the same files, whole and truncated.
    let mut files: Vec<(&str, &[u8])> =
        vec![(MANIFEST_FILE, &manifest), (MODEL_FILE, &model), (TOKENIZER_FILE, &tokenizer)];
    let data = std::fs::read(bundle.join(MODEL_DATA_FILE)).ok();
    if let Some(d) = &data {
        files.insert(2, (MODEL_DATA_FILE, d));
    }
    let packed = ckd_core::bundle::PackedIndex::pack(&files).unwrap();
    write(&root.join("bundle-packed"), "valid", &packed);
    write(&root.join("bundle-packed"), "truncated", &packed[..packed.len() / 2]);
    let m = root.join("manifest");
    write(&m, "valid", &manifest);
    write(&m, "truncated", &manifest[..manifest.len() / 2]);
    let mut flipped = manifest.clone();
    flipped[12] ^= 0x20;
    write(&m, "header-flipped", &flipped);
    let b = root.join("bundle");
    for (i, name, bytes) in [(0u8, "manifest", &manifest), (1, "model", &model)] {
        let mut input = vec![i];
        input.extend_from_slice(bytes);
        write(&b, &format!("{i}-{name}-valid"), &input);
    }
    let mut truncated_model = vec![1u8];
    truncated_model.extend_from_slice(&model[..model.len() / 3]);
    write(&b, "1-model-truncated", &truncated_model);
    let t = root.join("bundle-tokenizer");
    write(&t, "valid", &tokenizer);
    write(&t, "truncated", &tokenizer[..tokenizer.len() / 2]);
}
