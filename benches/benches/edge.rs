//! Edge runtime latency: `Engine::predict_text` on a MiniLM-L6-size bundle (random weights,
//! see `ckd_benches::write_minilm_bundles`), int8 and f32, inputs of exactly 128, 256 and 512
//! tokens, batch 1, one thread (tract's default executor). Includes tokenization, the plan run
//! and thresholding: what a device pays per prediction.
//!
//! Also the vectorized `DynamicQuantizeLinear` kernel of `ckd_edge::ops::dynamic_quantize` on one MiniLM
//! intermediate activation ([128, 1536] f32).
//!
//! `cargo bench -p ckd-benches --bench edge`; `CKD_MINILM_DIR` (scripts/fetch_models.sh) gives
//! the real MiniLM tokenizer. This bench runs one thread; two threads (the `threads` feature)
//! are timed beside onnxruntime by `scripts/compare_onnxruntime.sh` (`edge_latency time
//! --threads 2`).

use std::hint::black_box;

use ckd_edge::ops::dynamic_quantize::{quantize, scale_and_zero_point};
use ckd_edge::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn predict(c: &mut Criterion) {
    // `cargo test` runs benches once without `--bench`: then only a smoke run on the tiny test
    // bundle (64 tokens at most), not the MiniLM-size export.
    if !std::env::args().any(|a| a == "--bench") {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-runtime/testdata/tiny/bundle");
        let engine = Engine::open(&dir).expect("open the tiny bundle");
        let text = ckd_benches::text_of_tokens(&engine, 32).expect("filler text");
        c.bench_function("edge_predict_tiny_32", |b| {
            b.iter(|| engine.predict_text(black_box(&text)).expect("predict"))
        });
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    ckd_benches::write_minilm_bundles(dir.path(), 512).expect("MiniLM-size bundles");
    let mut g = c.benchmark_group("edge_predict_minilm");
    g.sample_size(20);
    for precision in ["int8", "f32"] {
        let engine = Engine::open(&dir.path().join(precision)).expect("open bundle");
        for seq in [128usize, 256, 512] {
            let text = ckd_benches::text_of_tokens(&engine, seq).expect("filler text");
            let p = engine.predict_text(&text).expect("predict");
            assert_eq!(p.tokens, seq);
            g.bench_with_input(BenchmarkId::new(precision, seq), &text, |b, text| {
                b.iter(|| engine.predict_text(black_box(text)).expect("predict"))
            });
        }
    }
    g.finish();
}

fn dql_kernel(c: &mut Criterion) {
    let n = 128 * 1536;
    let xs: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 300.0) * 0.01).collect();
    let mut ys = vec![0u8; n];
    c.bench_function("fast_dynamic_quantize_128x1536", |b| {
        b.iter(|| {
            let (s, z) = scale_and_zero_point(black_box(&xs));
            quantize(&xs, s, z, &mut ys);
            black_box(ys[n / 2])
        })
    });
}

criterion_group!(benches, predict, dql_kernel);
criterion_main!(benches);
