//! Student compute at the MiniLM-L6 shape (H 384, 6 layers, 12 heads, I 1536, vocab 30,522),
//! batch 8, sequence 256, random weights, CPU: one eval forward, and one training step
//! (train-mode forward with dropout, paper loss 0.9 hard + 0.1 soft, backward, gradient
//! clipping, AdamW update). BENCHMARKS.md records samples/s and the step/forward ratio.

use candle_core::{Device, Tensor};
use ckd_trainer::distill::{total_loss, DistillConfig};
use ckd_trainer::models::bert::{BertForMultiLabel, Config, HeadConfig};
use ckd_trainer::models::common::DropoutRng;
use ckd_trainer::optim::{clip_grad_norm, AdamW, AdamWConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const B: usize = 8;
const T: usize = 256;

fn inputs(vocab: u32) -> (Tensor, Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let ids: Vec<u32> = (0..B * T).map(|i| (i as u32 * 7919 + 101) % vocab).collect();
    let ids = Tensor::from_vec(ids, (B, T), &dev).expect("ids");
    let mask = Tensor::ones((B, T), candle_core::DType::U32, &dev).expect("mask");
    let y: Vec<f32> = (0..B * 25).map(|i| (i % 3 == 0) as u8 as f32).collect();
    let y = Tensor::from_vec(y, (B, 25), &dev).expect("targets");
    let p = Tensor::full(0.3f32, (B, 25), &dev).expect("teacher");
    (ids, mask, y, p)
}

fn student(c: &mut Criterion) {
    let cfg = Config::minilm_l6();
    let (model, varmap) = BertForMultiLabel::init(&cfg, &HeadConfig::default(), &Device::Cpu, 0).expect("model");
    let (ids, mask, y, p) = inputs(cfg.vocab_size as u32);
    let mut g = c.benchmark_group("student_minilm_l6_b8_t256");
    g.sample_size(10);
    g.throughput(Throughput::Elements(B as u64));
    g.bench_function("forward", |b| b.iter(|| model.forward(&ids, &mask, None).expect("forward").logits));
    let mut opt = AdamW::new(&varmap, AdamWConfig::default()).expect("optimizer");
    let vars = opt.vars();
    let dcfg = DistillConfig::default();
    let mut step = 0u64;
    g.bench_function("train_step", |b| {
        b.iter(|| {
            step += 1;
            let mut rng = DropoutRng::new(step);
            let out = model.forward_t(&ids, &mask, None, Some(&mut rng), false).expect("forward_t");
            let loss = total_loss(&dcfg, &out.logits, &y, None, Some(&p), None).expect("loss");
            let mut grads = loss.total.backward().expect("backward");
            clip_grad_norm(&mut grads, &vars, 1.0).expect("clip");
            opt.step(&grads, 1e-5).expect("step");
        })
    });
    g.finish();
}

criterion_group!(benches, student);
criterion_main!(benches);
