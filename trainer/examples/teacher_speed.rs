//! Prefill speed and agreement of the ways a GGUF teacher can hold its weights, on real prompts.
//!
//! `cargo run --release -p ckd-trainer --example teacher_speed -- GGUF SAMPLES.BIN N ROUNDS WAYS [OUT]`
//!
//! WAYS is a comma list of `tiles` (quantized, laid out for candle's VNNI tiles), `native`
//! (quantized, the file's own types) and `f32` (dequantized). Each way runs the first N training
//! prompts ROUNDS times, one prompt per forward pass (as feature extraction does), and prints prompt
//! tokens/s (median over rounds), load time and peak RSS so far (VmHWM: run the lightest way
//! first) on stderr, and one JSON line per way on stdout. The threads are candle's
//! (`RAYON_NUM_THREADS`). With OUT, the last-token states of every way are written as
//! `OUT.<way>.f32` ([N, H] little-endian) and the prompts' token ids as `OUT.ids.json` (what
//! `scripts/bench_teacher_cpu.py` feeds llama.cpp).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use ckd_core::visit::Split;
use ckd_trainer::models::qlinear::{kernel_description, Packing};
use ckd_trainer::models::qwen2::{self, Qwen2ForCausalLM};
use ckd_trainer::teacher::{load_frozen, BaseWeights, DeviceSpec, PromptEncoder};

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn load(way: &str, gguf: &Path) -> anyhow::Result<(Qwen2ForCausalLM, PromptEncoder)> {
    let packing = match way {
        "f32" => {
            let (m, p, _) = load_frozen(gguf, DeviceSpec::Cpu, 768, BaseWeights::F32)?;
            return Ok((m, p));
        }
        "tiles" => Packing::Tiles,
        "native" => Packing::Native,
        _ => anyhow::bail!("way `{way}`: expected tiles, native or f32"),
    };
    let mut f = std::io::BufReader::new(std::fs::File::open(gguf)?);
    let content = gguf_file::Content::read(&mut f)?;
    let cfg = qwen2::gguf_config(&content)?;
    let tok = qwen2::gguf_tokenizer(&content)?;
    let model = qwen2::quantized_model(&content, &mut f, &cfg, packing, &Device::Cpu)?;
    Ok((model, PromptEncoder::new(tok, 768)?))
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() >= 6, "usage: teacher_speed GGUF SAMPLES.BIN N ROUNDS WAYS [OUT]");
    let gguf = PathBuf::from(&a[1]);
    let n: usize = a[3].parse()?;
    let rounds: usize = a[4].parse()?;
    let file = ckd_trainer::ingest::read_samples(&PathBuf::from(&a[2]))?;
    let samples: Vec<_> = file.samples.iter().filter(|s| s.split == Split::Train).take(n).cloned().collect();
    eprintln!("threads {}, {} prompts", candle_core::utils::get_num_threads(), samples.len());
    for way in a[5].split(',') {
        let t0 = Instant::now();
        let (model, prompts) = load(way, &gguf)?;
        let load_s = t0.elapsed().as_secs_f64();
        let ids: Vec<Vec<u32>> = samples.iter().map(|s| Ok(prompts.encode(s)?.ids)).collect::<anyhow::Result<_>>()?;
        let tokens: usize = ids.iter().map(Vec::len).sum();
        let mut rates = Vec::new();
        let mut last = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            last.clear();
            for row in &ids {
                let x = Tensor::from_slice(row, (1, row.len()), &Device::Cpu)?;
                let out = model.forward(&x, None)?;
                last.extend(out.last_hidden.flatten_all()?.to_vec1::<f32>()?);
            }
            rates.push(tokens as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let kernel = match way {
            "tiles" => kernel_description(Packing::Tiles),
            "native" => kernel_description(Packing::Native),
            _ => "candle f32 matmul (gemm)".into(),
        };
        let (rate, rss) = (rates[rates.len() / 2], peak_rss_mb());
        eprintln!(
            "{way}: {rate:.1} prompt tokens/s (median of {rounds}; {tokens} tokens), load {load_s:.1} s, peak RSS {rss:.0} MB, {kernel}"
        );
        let line = serde_json::json!({
            "side": "ckd", "way": way, "threads": candle_core::utils::get_num_threads(), "tokens_per_s": rate,
            "tokens": tokens, "prompts": ids.len(), "load_s": load_s, "peak_rss_mb": rss, "kernel": kernel,
        });
        println!("{line}");
        if let Some(out) = a.get(6) {
            let bytes: Vec<u8> = last.iter().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(format!("{out}.{way}.f32"), bytes)?;
            std::fs::write(format!("{out}.ids.json"), serde_json::to_vec(&ids)?)?;
        }
    }
    Ok(())
}
