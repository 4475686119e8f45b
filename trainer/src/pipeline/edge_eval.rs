//! How the pipeline's models are run on the test split for the report: the bundles through the
//! `ckd-edge` binary (the code a device runs) or tract inside the trainer, and the machine
//! description and timing helpers of the cost table.

use std::path::Path;
use std::time::Instant;

use ckd_core::visit::Sample;
use ckd_core::NUM_LABELS;

use super::{msg_err, stage_err, Result};
use crate::export::tract_run::TractModel;
use crate::stats::median;
use crate::text::TextEncoder;

/// Bytes of the file `p` for the cost table; a file that cannot be read is an error naming it
/// (a size of 0 in the report would be a wrong answer).
pub(crate) fn file_size(p: &Path) -> Result<u64> {
    std::fs::metadata(p).map(|m| m.len()).map_err(|e| msg_err("report", format!("{}: {e}", p.display())))
}

/// Bytes of the files directly in `p` (errors as [`file_size`]).
pub(crate) fn dir_size(p: &Path) -> Result<u64> {
    let err = |e: std::io::Error| msg_err("report", format!("{}: {e}", p.display()));
    let mut total = 0;
    for entry in std::fs::read_dir(p).map_err(err)? {
        let m = entry.map_err(err)?.metadata().map_err(err)?;
        if m.is_file() {
            total += m.len();
        }
    }
    Ok(total)
}

/// A short description of this machine's CPU for the cost table.
pub(crate) fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {threads} threads")
}

/// A `ckd-edge` executable next to the running one, if there is one.
pub fn edge_binary_beside_exe() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(format!("ckd-edge{}", std::env::consts::EXE_SUFFIX));
    p.is_file().then_some(p)
}

/// Probabilities [N * 25] of a bundle on `test.jsonl` through the `ckd-edge` binary
/// (`predict`), with the median batch-1 latency in ms and the wall seconds of `eval`.
pub(crate) fn edge_eval(bin: &Path, bundle: &Path, test_jsonl: &Path, n: usize) -> Result<(Vec<f32>, f64, f64)> {
    const STAGE: &str = "report";
    let run = |args: &[&std::ffi::OsStr]| -> Result<std::process::Output> {
        let o = std::process::Command::new(bin)
            .args(args)
            .output()
            .map_err(|e| msg_err(STAGE, format!("{}: {e}", bin.display())))?;
        if !o.status.success() {
            return Err(msg_err(
                STAGE,
                format!("{} failed: {}", bin.display(), String::from_utf8_lossy(&o.stderr).trim()),
            ));
        }
        Ok(o)
    };
    let o = run(&[
        "predict".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--input".as_ref(),
        test_jsonl.as_os_str(),
    ])?;
    let mut probs = Vec::with_capacity(n * NUM_LABELS);
    for line in String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(stage_err(STAGE))?;
        let map = v["probabilities"]
            .as_object()
            .ok_or_else(|| msg_err(STAGE, format!("ckd-edge output without probabilities: {line}")))?;
        for ph in ckd_core::PHENOTYPES.iter() {
            let p = map
                .get(ph.name)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| msg_err(STAGE, format!("ckd-edge output lacks {}", ph.name)))?;
            probs.push(p as f32);
        }
    }
    if probs.len() != n * NUM_LABELS {
        return Err(msg_err(STAGE, format!("ckd-edge predicted {} samples, expected {n}", probs.len() / NUM_LABELS)));
    }
    let tmp = bundle.join("eval-test.json");
    let t = Instant::now();
    run(&[
        "eval".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--data".as_ref(),
        test_jsonl.as_os_str(),
        "--json".as_ref(),
        tmp.as_os_str(),
    ])?;
    let secs = t.elapsed().as_secs_f64();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tmp).map_err(stage_err(STAGE))?).map_err(stage_err(STAGE))?;
    let lat = v["latency"]["median_ms_per_sample"]
        .as_f64()
        .ok_or_else(|| msg_err(STAGE, "ckd-edge eval JSON without latency".into()))?;
    Ok((probs, lat, secs))
}

/// The same through tract inside the trainer (stock tract ops), for when `ckd-edge` is absent.
pub(crate) fn trainer_tract_eval(bundle: &Path, enc: &TextEncoder, test: &[Sample]) -> Result<(Vec<f32>, f64, f64)> {
    const STAGE: &str = "report";
    let m = TractModel::load_path(&bundle.join(ckd_core::bundle::MODEL_FILE)).map_err(stage_err(STAGE))?;
    let mut probs = Vec::with_capacity(test.len() * NUM_LABELS);
    let mut lat = Vec::new();
    let t_all = Instant::now();
    for s in test {
        let e = enc.encode(&s.text()).map_err(stage_err(STAGE))?;
        let ids: Vec<i64> = e.ids.iter().map(|&x| x as i64).collect();
        let mask = vec![1i64; ids.len()];
        let t = Instant::now();
        let logits = m.run(&ids, &mask, 1, ids.len()).map_err(stage_err(STAGE))?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        probs.extend(logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())));
    }
    Ok((probs, median(lat), t_all.elapsed().as_secs_f64()))
}
