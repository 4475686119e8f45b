//! Measures our candle Qwen2 teacher on one device: labelling throughput (eval forward with the
//! last-token attentions of the last layers) and one LoRA SFT step (forward, answer-token loss,
//! backward, gradient clipping, AdamW), with peak device memory per phase.
//!
//! Weights are random (no checkpoint is needed to time the model): every tensor of
//! [`Config::expected_shapes`] is drawn directly on the device (`--init device`, N(0, 0.02),
//! norms 1 + N(0, 0.1), the distribution of [`init_random`]) and cast to `--dtype`.
//! `--init chacha` uses [`init_random`] itself, which draws every value on one CPU thread
//! (minutes for 7B): only for small configs.
//!
//! Usage: `teacher_gpu --device cuda:0 --config 7b --dtype bf16` (see `--help`). Prints a table
//! and writes a JSON report to `--json`, or to `$OUT/teacher_gpu.json` when `OUT` is set.
//! Built with `--features cuda` it samples device memory (cuMemGetInfo: used = total - free,
//! the whole device) every 10 ms on a side thread; without CUDA the memory fields are null.
//!
//! Every phase runs on its own: an error (e.g. out of memory) is recorded in the report and the
//! next phase still runs; the exit code is 1 when any phase failed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ckd_core::bootstrap::median;
use ckd_trainer::models::common::DropoutRng;
use ckd_trainer::models::lora::LoraConfig;
use ckd_trainer::models::qwen2::{init_random, Config, Qwen2ForCausalLM};
use ckd_trainer::optim::{clip_grad_norm, AdamW, AdamWConfig};
use ckd_trainer::teacher::sft::answer_token_loss;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Time the Qwen2 teacher (labelling forward and one LoRA SFT step) on one device.")]
struct Args {
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// Model size: `7b` (Qwen2.5-7B), `0.5b` (Qwen2.5-0.5B) or `tiny` (test config).
    #[arg(long, default_value = "7b")]
    config: String,
    /// Base weight dtype: `bf16` or `f32`.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// LoRA adapter dtype (and so of its gradients and AdamW moments). f32 is what PEFT does
    /// over a bf16 base (`autocast_adapter_dtype`); `optim::clip_grad_norm` also needs f32 grads.
    #[arg(long, default_value = "f32")]
    lora_dtype: String,
    /// Weight init: `device` (randn on the device) or `chacha` (`init_random`, CPU, slow).
    #[arg(long, default_value = "device")]
    init: String,
    /// Phases to run, comma-separated: `label`, `train`.
    #[arg(long, default_value = "label,train")]
    phases: String,
    /// Labelling batch shapes `BxT`, comma-separated.
    #[arg(long, default_value = "8x512,16x256")]
    label_shapes: String,
    /// Last layers whose last-token attention rows are kept (averaged over heads and layers).
    #[arg(long, default_value_t = 4)]
    attn_layers: usize,
    /// Timed labelling runs per shape (after one warm-up).
    #[arg(long, default_value_t = 5)]
    label_runs: usize,
    /// Training batch shapes `BxT`, comma-separated: the first is measured, the others are
    /// fallbacks tried in order when a shape fails (e.g. out of memory).
    #[arg(long, default_value = "4x512,2x512,1x512")]
    train_shapes: String,
    /// Answer tokens per row (the last positions of each row), where the loss is taken.
    #[arg(long, default_value_t = 32)]
    answer_tokens: usize,
    /// LoRA rank (alpha = 2 r, all seven projections).
    #[arg(long, default_value_t = 16)]
    lora_r: usize,
    /// Timed training steps without LoRA dropout (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    train_runs: usize,
    /// Timed training steps with LoRA dropout `--dropout` (masks are drawn on the host by
    /// `DropoutRng`); 0 skips them.
    #[arg(long, default_value_t = 1)]
    dropout_runs: usize,
    /// LoRA dropout of the dropout variant.
    #[arg(long, default_value_t = 0.05)]
    dropout: f64,
    /// Global gradient-norm clip (0: measure only).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// JSON report path (default: `$OUT/teacher_gpu.json` when `OUT` is set).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed of inputs, LoRA init and dropout.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        "f32" => Ok(DType::F32),
        other => bail!("unknown dtype {other:?} (bf16, f16, f32)"),
    }
}

fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ordinal) = s.strip_prefix("cuda:") else { bail!("unknown device {s:?} (cpu, cuda:N)") };
    let ordinal: usize = ordinal.parse().with_context(|| format!("device ordinal in {s:?}"))?;
    Device::new_cuda(ordinal).with_context(|| format!("opening {s}"))
}

fn parse_config(s: &str) -> Result<Config> {
    match s {
        "7b" => Ok(Config::qwen2_5_7b()),
        "0.5b" => Ok(Config::qwen2_5_0_5b()),
        // The test config with room for the benchmark's sequence lengths.
        "tiny" => Ok(Config { max_position_embeddings: 32768, ..Config::tiny() }),
        other => bail!("unknown config {other:?} (7b, 0.5b, tiny)"),
    }
}

fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let (b, t) = s.split_once('x').with_context(|| format!("shape {s:?} is not BxT"))?;
    Ok((b.trim().parse().context("batch size")?, t.trim().parse().context("sequence length")?))
}

const GIB: f64 = (1u64 << 30) as f64;

/// Device-memory sampler: a side thread reads cuMemGetInfo every 10 ms and keeps the maximum
/// of `total - free` (whole device, so the CUDA context and the allocator's pool are included).
#[cfg(feature = "cuda")]
mod mem {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    use candle_core::Device;

    pub struct Sampler {
        ctx: Arc<CudaContext>,
        peak: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
        pub total: u64,
    }

    impl Sampler {
        pub fn start(device: &Device) -> Option<Self> {
            let Device::Cuda(dev) = device else { return None };
            let ctx = dev.cuda_stream().context().clone();
            let (_, total) = ctx.mem_get_info().ok()?;
            let peak = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (c, p, s) = (ctx.clone(), peak.clone(), stop.clone());
            let handle = std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Ok((free, total)) = c.mem_get_info() {
                        p.fetch_max((total - free) as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            Some(Self { ctx, peak, stop, handle: Some(handle), total: total as u64 })
        }

        /// Device memory in use now (bytes).
        pub fn used(&self) -> Option<u64> {
            self.ctx.mem_get_info().ok().map(|(free, total)| (total - free) as u64)
        }

        /// Restarts the peak from the memory in use now.
        pub fn reset(&self) {
            self.peak.store(self.used().unwrap_or(0), Ordering::Relaxed);
        }

        /// Peak since the last reset (bytes), including the current use.
        pub fn peak(&self) -> u64 {
            let now = self.used().unwrap_or(0);
            self.peak.fetch_max(now, Ordering::Relaxed).max(now)
        }
    }

    impl Drop for Sampler {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// Stand-in without CUDA: no memory readings.
#[cfg(not(feature = "cuda"))]
mod mem {
    use candle_core::Device;

    pub struct Sampler {
        pub total: u64,
    }

    impl Sampler {
        pub fn start(_device: &Device) -> Option<Self> {
            None
        }
        pub fn used(&self) -> Option<u64> {
            None
        }
        pub fn reset(&self) {}
        pub fn peak(&self) -> u64 {
            0
        }
    }
}

fn gib(bytes: Option<u64>) -> Value {
    bytes.map_or(Value::Null, |b| json!((b as f64 / GIB * 1000.0).round() / 1000.0))
}

/// Random weights under HF names, drawn on `device` and cast to `dtype`.
fn random_weights(cfg: &Config, dtype: DType, device: &Device, init: &str) -> Result<HashMap<String, Tensor>> {
    match init {
        "device" => {
            let mut out = HashMap::new();
            for (name, shape) in cfg.expected_shapes() {
                let (mean, std) = if name.ends_with("norm.weight") { (1.0f32, 0.1f32) } else { (0.0, 0.02) };
                let t = Tensor::randn(mean, std, shape, device)?.to_dtype(dtype)?;
                out.insert(name, t);
            }
            Ok(out)
        }
        "chacha" => {
            let f32s = init_random(cfg, 7, device)?;
            f32s.into_iter().map(|(k, v)| Ok((k, v.to_dtype(dtype)?))).collect()
        }
        other => bail!("unknown init {other:?} (device, chacha)"),
    }
}

/// Deterministic token ids in [0, vocab) (SplitMix64), [b, t] u32 on `device`.
fn token_ids(b: usize, t: usize, vocab: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let mut s = seed;
    let ids: Vec<u32> = (0..b * t)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % vocab as u64) as u32
        })
        .collect();
    Ok(Tensor::from_vec(ids, (b, t), device)?)
}

/// One labelling batch as the labeller runs it: eval forward with attentions, the mean
/// last-token attention row of the last `attn_layers` layers ([B, T], f32) and the last hidden
/// state [B, H] copied to the host. Returns the host values' count (keeps the work observable).
fn label_batch(model: &Qwen2ForCausalLM, ids: &Tensor, mask: &Tensor, attn_layers: usize) -> Result<usize> {
    let out = model.forward_t(ids, Some(mask), None, true)?;
    let atts = out.last_token_attentions.context("attentions were requested")?;
    let keep = attn_layers.clamp(1, atts.len());
    let last = &atts[atts.len() - keep..];
    // [B, N, T] per layer -> mean over heads and layers -> [B, T].
    let stacked = Tensor::stack(last, 0)?.mean(0)?.mean(1)?;
    let att = stacked.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    let hid = out.last_hidden.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    Ok(att.len() + hid.len())
}

fn phase_label(args: &Args, model: &Qwen2ForCausalLM, device: &Device, sampler: Option<&mem::Sampler>) -> Vec<Value> {
    let mut rows = Vec::new();
    for shape in args.label_shapes.split(',').filter(|s| !s.trim().is_empty()) {
        let res = (|| -> Result<Value> {
            let (b, t) = parse_shape(shape)?;
            if let Some(s) = sampler {
                s.reset();
            }
            let ids = token_ids(b, t, model.config().vocab_size, args.seed, device)?;
            let mask = Tensor::ones((b, t), DType::U32, device)?;
            let t0 = Instant::now();
            label_batch(model, &ids, &mask, args.attn_layers)?;
            device.synchronize()?;
            let warm = t0.elapsed().as_secs_f64();
            let mut times = Vec::new();
            for _ in 0..args.label_runs.max(1) {
                let t0 = Instant::now();
                label_batch(model, &ids, &mask, args.attn_layers)?;
                device.synchronize()?;
                times.push(t0.elapsed().as_secs_f64());
            }
            let med = median(&times);
            let tok_s = (b * t) as f64 / med;
            let peak = sampler.map(|s| s.peak());
            println!(
                "label  B={b:<3} T={t:<5} warm-up {warm:>8.3} s  median {med:>8.3} s  {tok_s:>10.0} prompt tok/s  {:>7.0} rows/s  peak {}",
                b as f64 / med,
                peak.map_or("n/a".into(), |p| format!("{:.2} GiB", p as f64 / GIB)),
            );
            Ok(json!({
                "batch": b, "seq": t, "tokens": b * t, "warmup_s": warm, "times_s": times,
                "median_s": med, "prompt_tokens_per_s": tok_s, "rows_per_s": b as f64 / med,
                "peak_gib": gib(peak),
            }))
        })();
        rows.push(res.unwrap_or_else(|e| {
            eprintln!("label {shape}: FAILED: {e:#}");
            json!({"shape": shape, "error": format!("{e:#}")})
        }));
    }
    rows
}

/// Per-part seconds of one training step.
struct StepTimes {
    forward: f64,
    backward: f64,
    optim: f64,
    total: f64,
    loss: f32,
    grad_norm: f64,
}

struct TrainSetup {
    ids: Tensor,
    mask: Tensor,
    positions: Vec<(usize, usize)>,
    targets: Tensor,
    answer_mask: Tensor,
    b: usize,
    a: usize,
}

fn train_step(
    model: &Qwen2ForCausalLM,
    opt: &mut AdamW,
    s: &TrainSetup,
    rng: &mut DropoutRng,
    clip: f64,
    device: &Device,
) -> Result<StepTimes> {
    let t0 = Instant::now();
    let out = model.forward_t(&s.ids, Some(&s.mask), Some(rng), false)?;
    let v = model.config().vocab_size;
    let logits = model.logits_at(&out.hidden, &s.positions)?.reshape((s.b, s.a, v))?;
    let loss = answer_token_loss(&logits, &s.targets, &s.answer_mask)?;
    device.synchronize()?;
    let t1 = Instant::now();
    let mut grads = loss.backward()?;
    drop(out);
    drop(logits);
    device.synchronize()?;
    let t2 = Instant::now();
    let vars = opt.vars();
    let grad_norm = clip_grad_norm(&mut grads, &vars, clip)?;
    opt.step(&grads, 1e-4)?;
    drop(grads);
    device.synchronize()?;
    let t3 = Instant::now();
    let loss = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    Ok(StepTimes {
        forward: (t1 - t0).as_secs_f64(),
        backward: (t2 - t1).as_secs_f64(),
        optim: (t3 - t2).as_secs_f64(),
        total: (t3 - t0).as_secs_f64(),
        loss,
        grad_norm,
    })
}

fn step_json(st: &StepTimes) -> Value {
    json!({"forward_s": st.forward, "backward_s": st.backward, "optim_s": st.optim, "total_s": st.total,
           "loss": st.loss, "grad_norm": st.grad_norm})
}

/// Builds a LoRA model over `base` with a fresh VarMap and runs `warmup` + `runs` steps.
#[allow(clippy::too_many_arguments)]
fn train_variant(
    args: &Args,
    base: &Qwen2ForCausalLM,
    setup: &TrainSetup,
    lora_dtype: DType,
    dropout: f64,
    warmup: usize,
    runs: usize,
    device: &Device,
    sampler: Option<&mem::Sampler>,
) -> Result<Value> {
    if let Some(s) = sampler {
        s.reset();
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, lora_dtype, device);
    let lora = LoraConfig { r: args.lora_r, alpha: 2.0 * args.lora_r as f64, dropout, ..LoraConfig::default() };
    let model = base.clone().with_lora(vb, &lora, args.seed)?;
    let mut opt = AdamW::new(&varmap, AdamWConfig::default())?;
    let trainable: usize = opt.vars().iter().map(|v| v.elem_count()).sum();
    let mut rng = DropoutRng::new(args.seed);
    let mut warm = Vec::new();
    for _ in 0..warmup {
        warm.push(train_step(&model, &mut opt, setup, &mut rng, args.clip, device)?);
    }
    let mut steps = Vec::new();
    for _ in 0..runs {
        steps.push(train_step(&model, &mut opt, setup, &mut rng, args.clip, device)?);
    }
    let med = |f: fn(&StepTimes) -> f64| median(&steps.iter().map(f).collect::<Vec<_>>());
    let (mf, mb, mo, mt) = (med(|s| s.forward), med(|s| s.backward), med(|s| s.optim), med(|s| s.total));
    let peak = sampler.map(|s| s.peak());
    let tokens = setup.b * setup.ids.dim(1)?;
    println!(
        "train  dropout={dropout:<4} median step {mt:>8.3} s (fwd {mf:.3}, bwd {mb:.3}, clip+AdamW {mo:.3})  {:>8.0} tok/s  loss {:.4}  peak {}",
        tokens as f64 / mt,
        steps.last().map_or(f32::NAN, |s| s.loss),
        peak.map_or("n/a".into(), |p| format!("{:.2} GiB", p as f64 / GIB)),
    );
    Ok(json!({
        "lora_dropout": dropout, "lora_r": args.lora_r, "lora_dtype": format!("{lora_dtype:?}"),
        "trainable_params": trainable, "warmup": warm.iter().map(step_json).collect::<Vec<_>>(),
        "steps": steps.iter().map(step_json).collect::<Vec<_>>(),
        "median_step_s": mt, "median_forward_s": mf, "median_backward_s": mb, "median_optim_s": mo,
        "tokens_per_step": tokens, "tokens_per_s": tokens as f64 / mt, "peak_gib": gib(peak),
    }))
}

/// Times training at one batch shape `BxT`: the no-dropout variant, then the dropout variant.
/// Returns the report and whether the no-dropout variant ran.
fn train_shape(
    args: &Args,
    base: &Qwen2ForCausalLM,
    shape: &str,
    device: &Device,
    sampler: Option<&mem::Sampler>,
) -> Result<(Value, bool)> {
    let (b, t) = parse_shape(shape)?;
    if t < 2 {
        bail!("training needs T >= 2, got {shape}");
    }
    let a = args.answer_tokens.clamp(1, t - 1);
    let v = base.config().vocab_size;
    let ids = token_ids(b, t, v, args.seed ^ 0x5eed, device)?;
    let mask = Tensor::ones((b, t), DType::U32, device)?;
    // Position p predicts token p + 1: the last `a` tokens are predicted from positions t-a-1..t-2.
    let positions: Vec<(usize, usize)> = (0..b).flat_map(|r| (t - a - 1..t - 1).map(move |p| (r, p))).collect();
    let targets = ids.narrow(1, t - a, a)?.contiguous()?;
    let answer_mask = Tensor::ones((b, a), DType::F32, device)?;
    let setup = TrainSetup { ids, mask, positions, targets, answer_mask, b, a };
    let lora_dtype = parse_dtype(&args.lora_dtype)?;
    let mut variants = Vec::new();
    let mut base_ok = false;
    for (dropout, warmup, runs) in [(0.0, 1, args.train_runs.max(1)), (args.dropout, 0, args.dropout_runs)] {
        if runs == 0 {
            continue;
        }
        match train_variant(args, base, &setup, lora_dtype, dropout, warmup, runs, device, sampler) {
            Ok(vj) => {
                base_ok |= dropout == 0.0;
                variants.push(vj);
            }
            Err(e) => {
                eprintln!("train {shape} dropout={dropout}: FAILED: {e:#}");
                variants.push(json!({"lora_dropout": dropout, "error": format!("{e:#}")}));
                if dropout == 0.0 {
                    break;
                }
            }
        }
    }
    Ok((json!({"batch": b, "seq": t, "answer_tokens": a, "variants": variants}), base_ok))
}

/// Tries the training shapes in order and stops at the first whose no-dropout variant runs
/// (later shapes are fallbacks, e.g. after running out of memory).
fn phase_train(args: &Args, base: &Qwen2ForCausalLM, device: &Device, sampler: Option<&mem::Sampler>) -> Value {
    let mut attempts = Vec::new();
    let mut ok = false;
    for shape in args.train_shapes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match train_shape(args, base, shape, device, sampler) {
            Ok((report, base_ok)) => {
                attempts.push(report);
                if base_ok {
                    ok = true;
                    break;
                }
            }
            Err(e) => {
                eprintln!("train {shape}: FAILED: {e:#}");
                attempts.push(json!({"shape": shape, "error": format!("{e:#}")}));
            }
        }
    }
    let mut out = json!({"attempts": attempts});
    if !ok {
        out["error"] = json!("no training shape ran");
    }
    out
}

fn run(args: &Args) -> Result<bool> {
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if let Some(bad) = phases.iter().find(|p| !["label", "train"].contains(p)) {
        bail!("unknown phase {bad:?} (label, train)");
    }
    let cfg = parse_config(&args.config)?;
    let dtype = parse_dtype(&args.dtype)?;
    parse_dtype(&args.lora_dtype)?;
    if !["device", "chacha"].contains(&args.init.as_str()) {
        bail!("unknown init {:?} (device, chacha)", args.init);
    }
    let device = parse_device(&args.device)?;
    let sampler = mem::Sampler::start(&device);
    let sampler = sampler.as_ref();
    let mem_at_start = sampler.and_then(|s| s.used());
    if device.is_cuda() {
        // Seeds the device's curand generator (weights); CPU randn is not seedable.
        device.set_seed(args.seed)?;
    }

    let t0 = Instant::now();
    let tensors = random_weights(&cfg, dtype, &device, &args.init)?;
    let params: usize = tensors.values().map(|t| t.elem_count()).sum();
    let base = Qwen2ForCausalLM::from_tensors(tensors, &cfg, dtype, &device)?;
    device.synchronize()?;
    let load_s = t0.elapsed().as_secs_f64();
    let mem_weights = sampler.and_then(|s| s.used());
    println!(
        "teacher_gpu: config {} ({} layers, H {}, V {}), {:.1} M params, {dtype:?} on {}; init {} took {load_s:.1} s; device memory {} GiB in use of {} GiB",
        args.config,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        params as f64 / 1e6,
        args.device,
        args.init,
        mem_weights.map_or("n/a".into(), |m| format!("{:.2}", m as f64 / GIB)),
        sampler.map_or("n/a".into(), |s| format!("{:.1}", s.total as f64 / GIB)),
    );

    let mut report = json!({
        "device": args.device, "config": args.config, "dtype": args.dtype, "init": args.init,
        "params": params, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "vocab": cfg.vocab_size,
        "init_s": load_s, "mem_total_gib": gib(sampler.map(|s| s.total)), "mem_at_start_gib": gib(mem_at_start),
        "mem_after_weights_gib": gib(mem_weights), "cuda_feature": cfg!(feature = "cuda"),
    });
    let path = args.json.clone().or_else(|| std::env::var_os("OUT").map(|o| PathBuf::from(o).join("teacher_gpu.json")));
    // The report is rewritten after every phase, so a run stopped by a timeout keeps what it measured.
    let write = |report: &Value| -> Result<()> {
        if let Some(path) = &path {
            let text = serde_json::to_string_pretty(report)?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    };
    let mut ok = true;
    report["ok"] = json!(false);
    write(&report)?;
    for phase in phases {
        match phase {
            "label" => {
                let rows = phase_label(args, &base, &device, sampler);
                ok &= rows.iter().all(|r| r.get("error").is_none());
                report["label"] = json!({"attn_layers": args.attn_layers, "runs": args.label_runs, "shapes": rows});
            }
            "train" => {
                let tr = phase_train(args, &base, &device, sampler);
                ok &= tr.get("error").is_none();
                report["train"] = tr;
            }
            other => bail!("unknown phase {other:?} (label, train)"),
        }
        write(&report)?;
    }
    report["ok"] = json!(ok);
    write(&report)?;
    if let Some(path) = &path {
        println!("report: {}", path.display());
    }
    Ok(ok)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("teacher_gpu: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
