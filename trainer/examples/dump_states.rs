//! Writes a bench's cached LLM states, labels and texts as flat files for analysis outside Rust
//! (numpy: `np.fromfile(p, np.float32).reshape(N, layers, 2, H)`).
//!
//! `cargo run --release -p ckd-trainer --example dump_states -- GGUF SAMPLES.BIN STATES_DIR OUT_DIR [LAYERS]`
//! (STATES_DIR holds `train/`, `val/`, `test/` chunk files; missing chunks are computed.)

use std::path::PathBuf;

use ckd_core::visit::Split;
use ckd_trainer::teacher::{load_frozen, states};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() >= 5, "usage: dump_states GGUF SAMPLES.BIN STATES_DIR OUT_DIR [LAYERS]");
    let layers: Vec<usize> = match a.get(5) {
        Some(l) => l.split(',').map(|x| x.parse()).collect::<Result<_, _>>()?,
        None => vec![6, 12, 18, 24],
    };
    let (model, prompts, key) =
        load_frozen(&PathBuf::from(&a[1]), ckd_trainer::teacher::DeviceSpec::Cpu, 768, Default::default())?;
    let file = ckd_trainer::ingest::read_samples(&PathBuf::from(&a[2]))?;
    let out = PathBuf::from(&a[4]);
    std::fs::create_dir_all(&out)?;
    let cfg = states::StatesConfig { layers, chunk: 32 };
    for split in [Split::Train, Split::Val, Split::Test] {
        let samples: Vec<_> = file.samples.iter().filter(|s| s.split == split).cloned().collect();
        let bar = indicatif::ProgressBar::hidden();
        let (st, _) =
            states::extract(&model, &prompts, &samples, &cfg, &PathBuf::from(&a[3]).join(split.name()), &key, &bar)?;
        let bytes: Vec<u8> = st.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(out.join(format!("{}.f32", split.name())), bytes)?;
        let meta: Vec<serde_json::Value> = samples
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "subject": s.subject, "text": s.text(),
                    "labels": s.labels.iter().map(|l| l as u32).collect::<Vec<_>>(),
                })
            })
            .collect();
        let j = serde_json::json!({"layers": st.layers, "hidden": st.hidden, "rows": meta});
        std::fs::write(out.join(format!("{}.json", split.name())), serde_json::to_vec(&j)?)?;
        println!("{}: {} rows", split.name(), samples.len());
    }
    Ok(())
}
