//! Teacher compute on the CPU and prompt tokenization:
//! - `tokenize`: the demo teacher's byte-level BPE (trained on 200 synthetic samples) encoding
//!   the ChatML prompts of 64 samples with their input spans ([`PromptEncoder::encode`]);
//! - `label_forward`: one labelling forward of the demo teacher's shape (H 128, 2 layers, 4 / 2
//!   heads, I 256, vocab 2,000), batch 8, 256 prompt tokens, random weights, with the last-token
//!   attention rows of every layer (what `ckd teacher label` runs per batch).
//!
//! The real Qwen2.5-0.5B GGUF on CPU is measured with `ckd teacher label` (BENCHMARKS.md).

use candle_core::{DType, Device, Tensor};
use ckd_core::visit::Split;
use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::models::qwen2::{init_random, Qwen2ForCausalLM};
use ckd_trainer::synth::{generate, write_cohort, SynthConfig};
use ckd_trainer::teacher::demo::{train_tokenizer, DemoConfig};
use ckd_trainer::teacher::PromptEncoder;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const B: usize = 8;
const T: usize = 256;

fn teacher(c: &mut Criterion) {
    let d = tempfile::tempdir().expect("tempdir");
    write_cohort(&generate(&SynthConfig { patients: 1200, seed: 9, ..Default::default() }), d.path()).expect("cohort");
    let ing = ingest_mimic(d.path(), &IngestConfig::default(), &mut |_, _| {}).expect("ingest");
    let train: Vec<_> = ing.file.samples.iter().filter(|s| s.split == Split::Train).take(200).cloned().collect();
    let demo = DemoConfig::default();
    let tok = train_tokenizer(&train, demo.vocab_size).expect("tokenizer");
    let prompts = PromptEncoder::new(tok.clone(), 1024).expect("prompts");
    let batch: Vec<_> = train.iter().take(64).cloned().collect();

    let mut g = c.benchmark_group("teacher_cpu");
    g.sample_size(10);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("tokenize_64_prompts", |b| {
        b.iter(|| batch.iter().map(|s| prompts.encode(s).expect("encode").ids.len()).sum::<usize>())
    });

    let cfg = demo.qwen2(tok.get_vocab_size(true), 1024);
    let dev = Device::Cpu;
    let model = Qwen2ForCausalLM::from_tensors(init_random(&cfg, 1, &dev).expect("init"), &cfg, DType::F32, &dev)
        .expect("model");
    let ids: Vec<u32> = (0..B * T).map(|i| (i as u32 * 7919 + 13) % cfg.vocab_size as u32).collect();
    let ids = Tensor::from_vec(ids, (B, T), &dev).expect("ids");
    let mask = Tensor::ones((B, T), DType::U32, &dev).expect("mask");
    g.throughput(Throughput::Elements((B * T) as u64));
    g.bench_function("label_forward_demo_b8_t256", |b| {
        b.iter(|| model.forward_t(&ids, Some(&mask), None, true).expect("forward").last_hidden)
    });
    g.finish();
}

criterion_group!(benches, teacher);
criterion_main!(benches);
