//! Writes the committed corpus (run by hand when the formats change):
//! `cargo run -p ckd-fuzz --example write_corpus` (both writers), or one of them by name
//! (`-- wire-bundle`, `-- ingest`).
//!
//! wire-bundle: the wire, manifest and bundle targets' corpora. wire: valid request and response frames, a stream of several frames, and one of each
//! malformed kind; manifest and bundle: the files of a tiny bundle made as `ckd export` does.
//! mimic-csv and jsonl: a few KB each, cut from the real MIMIC-III demo tables
//! (`/work/shared/data/mimic-iii-demo`, or `CKD_MIMIC_DEMO`) and the JSONL fixtures of
//! `trainer/tests/data` and `edge-runtime/testdata`, plus hostile edits (stray quotes,
//! impossible dates, byte-order marks, non-UTF-8 bytes, CRLF and blank lines).
//! Inputs that crashed a target are added by hand (e.g. `corpus/bundle-tokenizer/panic-decoder`).

#[path = "../../firmware-examples/bedside-monitor/tests/common/mod.rs"]
mod tiny;

use std::path::Path;

use anyhow::{Context, Result};

use ckd_core::bundle::{MANIFEST_FILE, MODEL_DATA_FILE, MODEL_FILE, TOKENIZER_FILE};
use ckd_core::wire::{self, ErrorCode, Reply, Request, Response, VisitSummary, WirePrediction};
use ckd_trainer::export::Precision;
use ckd_trainer::ingest::MimicTables;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn request(id: u32, v: &VisitSummary) -> Vec<u8> {
    let mut out = vec![0u8; wire::MAX_REQUEST_FRAME + 1];
    let n = wire::encode_request(&Request { id, visit: v.clone(), explain: false }, &mut out).unwrap();
    out.truncate(n);
    out
}

/// The writers, by subcommand name.
type Writer = fn() -> Result<()>;
const WRITERS: [(&str, Writer); 2] = [("wire-bundle", write_seed_corpus), ("ingest", write_ingest_corpus)];

fn main() -> std::process::ExitCode {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let mut chosen = Vec::new();
    for n in &names {
        match WRITERS.iter().find(|(w, _)| w == n) {
            Some(&(_, writer)) => chosen.push(writer),
            None => {
                let all: Vec<&str> = WRITERS.iter().map(|(w, _)| *w).collect();
                eprintln!("usage: write_corpus [{}]... (none: all)", all.join("|"));
                return std::process::ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = WRITERS.iter().map(|&(_, w)| w).collect();
    }
    for writer in chosen {
        if let Err(e) = writer() {
            eprintln!("write_corpus: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}

/// The wire, manifest and bundle targets' corpora.
fn write_seed_corpus() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let w = root.join("wire");
    let summaries: Vec<VisitSummary> = tiny::visits().iter().map(|v| VisitSummary::from_visit(v).unwrap()).collect();
    for (i, v) in summaries.iter().enumerate() {
        write(&w, &format!("request-{i}"), &request(i as u32 + 1, v))?;
    }
    let stream: Vec<u8> = summaries.iter().enumerate().flat_map(|(i, v)| request(i as u32 + 10, v)).collect();
    write(&w, "stream", &stream)?;
    let mut probs = [0u16; 25];
    probs[3] = 50_000;
    let pred = WirePrediction {
        probs,
        positive: 1 << 3,
        top_k: [3u8, 0, 1, 2, 4].into_iter().collect(),
        truncated: true,
        tokens: 48,
    };
    let mut explain = vec![0u8; wire::MAX_REQUEST_FRAME + 1];
    let n = wire::encode_request(&Request { id: 7, visit: summaries[0].clone(), explain: true }, &mut explain).unwrap();
    write(&w, "request-explain", &explain[..n])?;
    let concept = |list, index, effect| wire::WireConcept { list, index, effect };
    let evidence = wire::WireEvidence {
        label: 3,
        concepts: [concept(0, 1, 9000), concept(1, 0, -120), concept(3, 0, 15)].into_iter().collect(),
    };
    for (name, reply) in [
        ("response-prediction", Reply::Prediction(pred.clone())),
        ("response-error", Reply::Error { code: ErrorCode::InvalidItem, detail: 258 }),
        ("response-explained", Reply::Explained { prediction: pred, evidence }),
    ] {
        let mut out = vec![0u8; wire::MAX_RESPONSE_FRAME + 1];
        let n = wire::encode_response(&Response { id: 5, reply }, &mut out).unwrap();
        write(&w, name, &out[..n])?;
    }
    let good = request(1, &summaries[0]);
    let mut bad_crc = good.clone();
    bad_crc[4] ^= 1;
    write(&w, "bad-crc", &bad_crc)?;
    write(&w, "truncated", &good[..good.len() / 2])?;
    write(&w, "garbage", &[0x07, 0x01, 0x02, 0x00, 0xff, 0xff, 0x00])?;

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let bundle = dir.path().join("bundle");
    tiny::tiny_bundle(dir.path(), &bundle, Precision::Int8);
    let read = |n: &str| std::fs::read(bundle.join(n)).with_context(|| format!("reading the tiny bundle's {n}"));
    let (manifest, model, tokenizer) = (read(MANIFEST_FILE)?, read(MODEL_FILE)?, read(TOKENIZER_FILE)?);
    let base = root.join("bundle-base");
    write(&base, MANIFEST_FILE, &manifest)?;
    write(&base, MODEL_FILE, &model)?;
    write(&base, TOKENIZER_FILE, &tokenizer)?;
    if let Ok(data) = std::fs::read(bundle.join(MODEL_DATA_FILE)) {
        write(&base, MODEL_DATA_FILE, &data)?;
    }
    // A single-file bundle of the same files, whole and truncated.
    let mut files: Vec<(&str, &[u8])> =
        vec![(MANIFEST_FILE, &manifest), (MODEL_FILE, &model), (TOKENIZER_FILE, &tokenizer)];
    let data = std::fs::read(bundle.join(MODEL_DATA_FILE)).ok();
    if let Some(d) = &data {
        files.insert(2, (MODEL_DATA_FILE, d));
    }
    let packed = ckd_core::bundle::PackedIndex::pack(&files).unwrap();
    write(&root.join("bundle-packed"), "valid", &packed)?;
    write(&root.join("bundle-packed"), "truncated", &packed[..packed.len() / 2])?;
    let m = root.join("manifest");
    write(&m, "valid", &manifest)?;
    write(&m, "truncated", &manifest[..manifest.len() / 2])?;
    let mut flipped = manifest.clone();
    flipped[12] ^= 0x20;
    write(&m, "header-flipped", &flipped)?;
    let b = root.join("bundle");
    for (i, name, bytes) in [(0u8, "manifest", &manifest), (1, "model", &model)] {
        let mut input = vec![i];
        input.extend_from_slice(bytes);
        write(&b, &format!("{i}-{name}-valid"), &input)?;
    }
    let mut truncated_model = vec![1u8];
    truncated_model.extend_from_slice(&model[..model.len() / 3]);
    write(&b, "1-model-truncated", &truncated_model)?;
    let t = root.join("bundle-tokenizer");
    write(&t, "valid", &tokenizer)?;
    write(&t, "truncated", &tokenizer[..tokenizer.len() / 2])?;
    Ok(())
}

/// The demo's tables as lines (terminators kept), in `MimicTables::NAMES` order.
fn demo_lines(dir: &Path) -> Result<Vec<Vec<String>>> {
    MimicTables::NAMES
        .iter()
        .map(|n| {
            let path = dir.join(format!("{n}.csv"));
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok(text.split_inclusive('\n').map(str::to_string).collect())
        })
        .collect()
}

/// Field `k` of a CSV line, for the leading columns, which are never quoted in MIMIC-III
/// (ids, SEQ_NUM, codes).
fn field(line: &str, k: usize) -> &str {
    line.split(',').nth(k).unwrap_or_default().trim_end_matches(['\r', '\n'])
}

/// The rows of the admissions `hadms` in every table (at most `cap` diagnoses, procedures and
/// prescriptions per admission, the first in file order), and the dictionary rows of the codes
/// they use: a small input in the real layout (all columns, CRLF, quoting as in the files).
fn cut(demo: &[Vec<String>], hadms: &[&str], cap: usize) -> Vec<String> {
    let keep = |t: usize, hadm_col: usize| -> Vec<String> {
        let mut per: std::collections::HashMap<String, usize> = Default::default();
        let mut out = vec![demo[t][0].clone()];
        for l in &demo[t][1..] {
            let h = field(l, hadm_col);
            if hadms.contains(&h) {
                let n = per.entry(h.to_string()).or_default();
                if t == 0 || *n < cap {
                    out.push(l.clone());
                }
                *n += 1;
            }
        }
        out
    };
    let (adm, dx, px, rx) = (keep(0, 2), keep(1, 2), keep(2, 2), keep(3, 2));
    let codes = |rows: &[String]| -> Vec<String> { rows[1..].iter().map(|l| field(l, 4).to_string()).collect() };
    let dict = |t: usize, codes: &[String]| -> Vec<String> {
        let mut out = vec![demo[t][0].clone()];
        out.extend(demo[t][1..].iter().filter(|l| codes.iter().any(|c| c == field(l, 1))).cloned());
        out
    };
    let (dxd, pxd) = (dict(4, &codes(&dx)), dict(5, &codes(&px)));
    [adm, dx, px, rx, dxd, pxd].into_iter().map(|t| t.concat()).collect()
}

fn joined(tables: &[String]) -> Vec<u8> {
    let t: Vec<&[u8]> = tables.iter().map(|t| t.as_bytes()).collect();
    ckd_fuzz::join_tables(&MimicTables {
        admissions: t[0],
        diagnoses_icd: t[1],
        procedures_icd: t[2],
        prescriptions: t[3],
        d_icd_diagnoses: t[4],
        d_icd_procedures: t[5],
    })
}

/// Replaces the first `from` in line `line` (0-based, header = 0) of table `t`.
fn edit(tables: &mut [String], t: usize, line: usize, from: &str, to: &str) {
    let mut lines: Vec<String> = tables[t].split_inclusive('\n').map(str::to_string).collect();
    assert!(lines[line].contains(from), "{from:?} not in {:?}", lines[line]);
    lines[line] = lines[line].replacen(from, to, 1);
    tables[t] = lines.concat();
}

/// The mimic-csv and jsonl targets' corpora.
fn write_ingest_corpus() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo_dir = std::env::var_os("CKD_MIMIC_DEMO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data/mimic-iii-demo"));
    let demo = demo_lines(&demo_dir)?;

    // mimic-csv: two patients with 2 and 3 admissions (5 admissions, 3 samples).
    let m = root.join("mimic-csv");
    let two = cut(&demo, &["187023", "105150", "125157", "131048", "198330"], 4);
    write(&m, "demo-two-patients", &joined(&two))?;
    // PhysioNet's own layout: lower-case headers, LF line ends.
    let mut lower = cut(&demo, &["142582", "122098"], 3);
    for t in lower.iter_mut() {
        let (head, rest) = t.split_at(t.find('\n').context("a demo table without a header line")? + 1);
        *t = format!("{}{}", head.to_ascii_lowercase(), rest).replace("\r\n", "\n");
    }
    write(&m, "demo-lowercase-lf", &joined(&lower))?;
    // The demo's quirks: a drug with a comma (quoted), V and E codes, an admission without
    // procedures; and the full MIMIC-III's: an empty SEQ_NUM and code, a repeated drug, a
    // duplicate admission, rows of an unknown admission.
    let mut quirks = cut(&demo, &["126949", "138132", "118192"], 4);
    let comma = demo[3]
        .iter()
        .find(|l| l.contains("\"Albumin, Human\""))
        .context("the demo's PRESCRIPTIONS lacks its drug with a comma (\"Albumin, Human\")")?;
    quirks[3].push_str(comma);
    for l in demo[1].iter().filter(|l| field(l, 2) == "138132" && field(l, 4).starts_with(['V', 'E'])) {
        quirks[1].push_str(l);
    }
    let (dx_row, rx_row) = (
        quirks[1].split_inclusive('\n').nth(1).context("no DIAGNOSES_ICD row in the cut")?.to_string(),
        quirks[3].split_inclusive('\n').nth(1).context("no PRESCRIPTIONS row in the cut")?.to_string(),
    );
    let adm_row = quirks[0].split_inclusive('\n').nth(1).context("no ADMISSIONS row in the cut")?.to_string();
    quirks[0].push_str(&adm_row);
    quirks[1].push_str(&format!("1,{},{},,\r\n", field(&dx_row, 1), field(&dx_row, 2)));
    quirks[1].push_str(&dx_row.replacen(field(&dx_row, 2), "999999", 1));
    quirks[3].push_str(&rx_row);
    write(&m, "demo-quirks", &joined(&quirks))?;
    // Hostile edits (as in `trainer/tests/ingest_hostile.rs`), one per seed, on the two-patient cut.
    let mut quote = two.clone();
    let drug_line = 2;
    let drug = quote[3]
        .split_inclusive('\n')
        .nth(drug_line)
        .and_then(|l| l.split(',').nth(7))
        .context("no DRUG field in the cut's PRESCRIPTIONS")?
        .to_string();
    edit(&mut quote, 3, drug_line, &format!(",{drug},"), &format!(",\"{drug},"));
    write(&m, "hostile-stray-quote", &joined(&quote))?;
    let mut dates = two.clone();
    edit(&mut dates, 0, 1, "2138-06-05", "2138-02-30");
    edit(&mut dates, 0, 3, "2112-05-11 14:15:00", "garbage");
    write(&m, "hostile-dates", &joined(&dates))?;
    let mut bytes = two.clone();
    bytes[0].insert(0, '\u{feff}');
    let mut raw = joined(&bytes);
    // A byte that is not UTF-8 in a DRUG field, and a row cut short.
    let at = raw.windows(6).position(|w| w == b",MAIN,").context("no MAIN drug row in the cut")?;
    raw[at + 7] = 0xff;
    let end = raw.windows(2).rposition(|w| w == b"\r\n").context("no CRLF line end in the cut")?;
    let last = raw[..end].iter().rposition(|&b| b == b'\n').context("the cut has one line")? + 1;
    raw.truncate(last + 8);
    write(&m, "hostile-bytes", &raw)?;

    // jsonl: the authors' records, records `ckd ingest` renders from the demo, the tiny
    // bundle's rows (older instruction), and hostile edge cases.
    let j = root.join("jsonl");
    let lines = |p: &Path, n: usize| -> Result<String> {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(text.split_inclusive('\n').take(n).collect())
    };
    let authors = lines(&repo.join("trainer/tests/data/ckd_ehr_authors/name_val_excerpt.json"), 2)?;
    write(&j, "authors-excerpt", authors.as_bytes())?;
    let ing = ckd_trainer::ingest::ingest_mimic(&demo_dir, &Default::default(), &mut |_, _| {})
        .with_context(|| format!("ingesting {}", demo_dir.display()))?;
    let mut samples: Vec<_> = ing.file.samples.iter().collect();
    samples.sort_by_key(|s| s.text().len());
    write(&j, "demo-ingested", ckd_trainer::ingest::to_jsonl(samples.into_iter().take(2)).as_bytes())?;
    write(&j, "tiny-rows", lines(&repo.join("edge-runtime/testdata/tiny/rows.jsonl"), 2)?.as_bytes())?;
    let first = authors.split_inclusive('\n').next().context("the authors' excerpt is empty")?.trim_end();
    let edges = format!(
        "\u{feff}{first}\r\n\r\n  \t\n{}",
        ckd_core::jsonl::to_line(
            "Instruction \u{e9}\u{1f600} \"q\"\\",
            "Diseases: None.\n\tx",
            "Disease that the patient may acquire: None"
        )
        .trim_end()
    );
    write(&j, "bom-crlf-blank-escapes", edges.as_bytes())?;
    let mut hostile = Vec::new();
    hostile.extend_from_slice(first.replacen("Determine", "Determin\u{e9}", 1).as_bytes());
    hostile.push(b'\n');
    let non_utf8 = first.replacen("Determine", "Determin\u{e9}", 1).into_bytes();
    let at = non_utf8.windows(2).position(|w| w == "\u{e9}".as_bytes()).unwrap();
    hostile.extend_from_slice(&non_utf8[..at + 1]);
    hostile.extend_from_slice(&non_utf8[at + 2..]);
    hostile.push(b'\n');
    hostile.extend_from_slice(
        b"{\"instruction\": \"i\", \"input\": \"t\", \"output\": \"Disease that the patient may acquire: Gout\"}\n",
    );
    hostile.extend_from_slice(b"{\"instruction\": \"i\", \"input\": \"t\", \"output\": \"Diseases: Shock\"}\n");
    hostile.extend_from_slice(
        b"{\"instruction\": \"i\", \"input\": 7, \"output\": \"Disease that the patient may acquire: Shock\"}\n",
    );
    hostile.extend_from_slice(&first.as_bytes()[..first.len() / 2]);
    write(&j, "hostile", &hostile)?;
    Ok(())
}
