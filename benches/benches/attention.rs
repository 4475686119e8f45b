//! The fused attention kernel of `ckd_edge::ops::attention` alone, at all-MiniLM-L6's sizes (12 heads
//! of 32), one layer of 128 and 512 tokens, one thread, for several query block sizes.
//!
//! `cargo bench -p ckd-benches --bench attention`. (Separate from `edge`, whose setup exports
//! MiniLM-size bundles before any filter applies.)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// The fused attention kernel alone at MiniLM-L6's sizes (12 heads of 32), one layer.
fn attention_kernel(c: &mut Criterion) {
    use ckd_edge::ops::attention::{attend_in_blocks, Dims};
    let mut g = c.benchmark_group("fused_attention_12x32");
    for seq in [128usize, 512] {
        let d = Dims { batch: 1, q_rows: seq, kv_rows: seq, heads: 12, head_dim: 32 };
        let n = seq * 384;
        let x = |k: usize| -> Vec<f32> { (0..n).map(|i| (((i * 7919 + k) % 1000) as f32 - 500.0) * 0.004).collect() };
        let (q, k, v) = (x(1), x(2), x(3));
        let mut out = vec![0f32; n];
        for block in [32usize, 64, 128, 256, 512] {
            g.bench_with_input(BenchmarkId::new(format!("block{block}"), seq), &seq, |b, _| {
                b.iter(|| {
                    attend_in_blocks(&d, 0.176_776_7, black_box(&q), &k, &v, &mut out, block).expect("attend");
                    black_box(out[n / 2])
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, attention_kernel);
criterion_main!(benches);
