//! Fuzz targets and a mutation driver that run on the stable toolchain.
//!
//! Engine: no libFuzzer / cargo-fuzz (they need nightly sanitizer flags, and only the stable
//! toolchain is available). Instead [`fuzz`] replays a committed corpus, then mutates it with a
//! seeded ChaCha RNG (bit flips, byte sets, interesting values, inserts, deletes, duplications,
//! splices, truncation) and calls the target under `catch_unwind`. Feedback is coarse: an input
//! whose outcome class (the target's [`Outcome`] label) was not seen before joins the live
//! corpus. A panic is a failure: the input is written to `crash_dir` and reported.
//!
//! Targets ([`Target`]): `wire` (request/response frame decoding, the deframer, the visit
//! conversion and a re-encode round trip), `manifest` (`Manifest::from_bytes`, envelope and
//! payload), `bundle` and `bundle-tokenizer` (`ckd_edge::Engine::open` on a bundle directory
//! with one file replaced by the input; for `model.onnx` and `tokenizer.json` the manifest is
//! re-hashed so the parsers themselves are reached), `bundle-packed` (`Engine::open` on a
//! single-file bundle: the packed index and the ranges it names), `mimic-csv` (the MIMIC-III
//! table readers of `ckd ingest --mimic`, through [`ckd_trainer::ingest::ingest_mimic_bytes`]:
//! the input is the six tables separated by [`TABLE_SEPARATOR`]), `jsonl` (the CKD-EHR JSONL
//! reader of `ckd ingest --jsonl`, [`ckd_trainer::ingest::ingest_jsonl_bytes`], and
//! `ckd_core::jsonl`). Both ingest targets run strict and `--lenient` and check the accounting
//! and round trips, not only the absence of panics: bad input must be a typed error.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ckd_core::bundle::{
    FileEntry, Manifest, MANIFEST_FILE, MANIFEST_MAGIC, MANIFEST_VERSION, MODEL_DATA_FILE, MODEL_FILE, TOKENIZER_FILE,
};
use ckd_core::format;
use ckd_core::jsonl;
use ckd_core::wire::{self, Deframer, Request, Response, MAX_REQUEST_FRAME};
use ckd_trainer::ingest::{self, IngestConfig, IngestError, MimicTables};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The label of what a target did with one input (its outcome class).
pub type Outcome = String;

/// A fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Wire frames.
    Wire,
    /// `manifest.bin` decoding.
    Manifest,
    /// A bundle directory opened by the edge runtime, `manifest.bin` or `model.onnx` replaced.
    Bundle,
    /// A bundle directory opened by the edge runtime, `tokenizer.json` replaced (manifest
    /// re-hashed). tokenizers 0.23.2 panics on some malformed `decoder` objects
    /// (`decoders/mod.rs:90`, an `expect` on a serde error); `Engine::open` turns that panic into
    /// `EdgeError::Tokenizer`, and `corpus/bundle-tokenizer/panic-decoder` keeps the input.
    BundleTokenizer,
    /// A single-file bundle (`ckd pack`) opened by the edge runtime, the whole file replaced:
    /// the packed index and every range it names.
    BundlePacked,
    /// The MIMIC-III CSV readers (see [`mimic_csv_target`]).
    MimicCsv,
    /// The CKD-EHR JSONL readers (see [`jsonl_target`]).
    Jsonl,
}

impl Target {
    /// All targets.
    pub const ALL: [Target; 7] = [
        Target::Wire,
        Target::Manifest,
        Target::Bundle,
        Target::BundleTokenizer,
        Target::BundlePacked,
        Target::MimicCsv,
        Target::Jsonl,
    ];
    /// The targets CI runs (every target without a known open crash).
    pub const CI: [Target; 7] = Target::ALL;

    /// Name (also the corpus subdirectory).
    pub fn name(self) -> &'static str {
        match self {
            Target::Wire => "wire",
            Target::Manifest => "manifest",
            Target::Bundle => "bundle",
            Target::BundleTokenizer => "bundle-tokenizer",
            Target::BundlePacked => "bundle-packed",
            Target::MimicCsv => "mimic-csv",
            Target::Jsonl => "jsonl",
        }
    }

    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Self> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }
}

fn class<T, E: std::fmt::Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        // The variant name only (up to the first space, brace or parenthesis).
        Err(e) => {
            let d = format!("{e:?}");
            let end = d.find([' ', '(', '{']).unwrap_or(d.len());
            format!("err:{}", &d[..end])
        }
    }
}

/// Wire target: the input is a byte stream of frames (or one frame).
pub fn wire_target(data: &[u8]) -> Outcome {
    let mut labels = Vec::new();
    // As one frame.
    let mut buf = data.to_vec();
    let r = wire::decode_request(&mut buf);
    labels.push(class(&r));
    if let Ok(req) = &r {
        let v = req.visit.to_visit();
        labels.push(class(&v));
        // Re-encoding a decoded request gives a frame that decodes to the same request.
        let mut out = vec![0u8; MAX_REQUEST_FRAME + 1];
        let n = wire::encode_request(req, &mut out).expect("a decoded request re-encodes within the bound");
        assert_eq!(&wire::decode_request(&mut out[..n]).expect("re-encoded request decodes"), req);
        if let Ok(v) = v {
            let back = wire::VisitSummary::from_visit(&v);
            labels.push(class(&back));
        }
    }
    let mut buf = data.to_vec();
    let r: Result<Response, _> = wire::decode_response(&mut buf);
    labels.push(class(&r));
    // As a stream through a small deframer.
    let mut d: Deframer<512> = Deframer::new();
    for &b in data {
        if let Some(f) = d.push(b) {
            let r: Result<Request, _> = f.and_then(wire::decode_request);
            labels.push(class(&r));
        }
    }
    labels.sort();
    labels.dedup();
    labels.join(",")
}

/// Manifest target: the input is a `manifest.bin`. It is decoded as it is (the envelope's
/// checks), and its payload (the bytes after the envelope header) is decoded again inside a
/// freshly made envelope, so that mutations of the payload get past the envelope's SHA-256 and
/// reach the postcard decoding and the manifest checks.
pub fn manifest_target(data: &[u8]) -> Outcome {
    let payload = data.get(format::HEADER_LEN..).unwrap_or(data);
    let wrapped = format::encode_envelope(MANIFEST_MAGIC, MANIFEST_VERSION, payload);
    let mut labels = Vec::new();
    for bytes in [data, wrapped.as_slice()] {
        let r = Manifest::from_bytes(bytes);
        if let Ok(m) = &r {
            // A valid manifest re-encodes, and that encoding is a fixed point (bytes are
            // compared: a knowledge table may hold NaN, which is not equal to itself).
            let b = m.to_bytes().expect("a decoded manifest re-encodes");
            let again = Manifest::from_bytes(&b).expect("re-encoded manifest decodes");
            assert_eq!(again.to_bytes().expect("re-encodes"), b);
        }
        labels.push(class(&r));
    }
    labels.join(",")
}

/// A valid bundle to mutate (the files of `corpus/bundle-base`).
#[derive(Debug, Clone)]
pub struct BaseBundle {
    /// `manifest.bin`.
    pub manifest: Vec<u8>,
    /// `model.onnx`.
    pub model: Vec<u8>,
    /// `tokenizer.json`.
    pub tokenizer: Vec<u8>,
    /// `model.onnx.data` (the tensors), when the bundle has one (the committed base predates
    /// it and keeps them inside `model.onnx`, so the model target mutates the tensors too).
    pub data: Option<Vec<u8>>,
}

impl BaseBundle {
    /// Reads the files of a bundle directory.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let r = |n: &str| {
            let p = dir.join(n);
            std::fs::read(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let data = std::fs::read(dir.join(MODEL_DATA_FILE)).ok();
        Ok(BaseBundle { manifest: r(MANIFEST_FILE)?, model: r(MODEL_FILE)?, tokenizer: r(TOKENIZER_FILE)?, data })
    }
}

/// Which file of the bundle an input replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleFile {
    /// `manifest.bin`, as it is.
    Manifest,
    /// `model.onnx`, with the manifest re-hashed.
    Model,
    /// `tokenizer.json`, with the manifest re-hashed.
    Tokenizer,
}

/// Bundle target ([`Target::Bundle`]): the first byte picks the file the rest replaces (even:
/// `manifest.bin`, odd: `model.onnx`).
pub fn bundle_target(data: &[u8], base: &BaseBundle, dir: &Path) -> Outcome {
    match data.split_first() {
        Some((w, rest)) if w % 2 == 1 => bundle_file_target(BundleFile::Model, rest, base, dir),
        Some((_, rest)) => bundle_file_target(BundleFile::Manifest, rest, base, dir),
        None => bundle_file_target(BundleFile::Manifest, data, base, dir),
    }
}

/// Opens a bundle whose `file` is `data` (the other files from `base`; for the model and the
/// tokenizer the manifest's entry is re-hashed so the parsers are reached) and, when it opens,
/// predicts once. `dir` is a scratch directory, rewritten on every call.
pub fn bundle_file_target(file: BundleFile, data: &[u8], base: &BaseBundle, dir: &Path) -> Outcome {
    let rehash = |name: &str, bytes: &[u8]| -> Vec<u8> {
        let mut m = Manifest::from_bytes(&base.manifest).expect("the base manifest is valid");
        for f in m.files.iter_mut().filter(|f| f.name == name) {
            *f = FileEntry::of(name, bytes);
        }
        m.to_bytes().expect("manifest encodes")
    };
    let (manifest, model, tokenizer) = match file {
        BundleFile::Manifest => (data.to_vec(), base.model.as_slice(), base.tokenizer.as_slice()),
        BundleFile::Model => (rehash(MODEL_FILE, data), data, base.tokenizer.as_slice()),
        BundleFile::Tokenizer => (rehash(TOKENIZER_FILE, data), base.model.as_slice(), data),
    };
    for (name, bytes) in [(MANIFEST_FILE, manifest.as_slice()), (MODEL_FILE, model), (TOKENIZER_FILE, tokenizer)] {
        std::fs::write(dir.join(name), bytes).expect("scratch directory is writable");
    }
    if let Some(data) = &base.data {
        std::fs::write(dir.join(MODEL_DATA_FILE), data).expect("scratch directory is writable");
    }
    let r = ckd_edge::Engine::open(dir);
    let mut label = format!("{file:?}:{}", class(&r));
    if let Ok(engine) = &r {
        let p = engine.predict_text("The patient-acquired disease is Heart failure.");
        label.push_str(&format!(",predict:{}", class(&p)));
    }
    label
}

/// Single-file bundle target ([`Target::BundlePacked`]): `data` is written as a packed bundle
/// file in `dir` and opened; when it opens, predicts once.
pub fn bundle_packed_target(data: &[u8], dir: &Path) -> Outcome {
    let path = dir.join("bundle.ckdb");
    std::fs::write(&path, data).expect("scratch directory is writable");
    let r = ckd_edge::Engine::open(&path);
    let mut label = format!("packed:{}", class(&r));
    if let Ok(engine) = &r {
        let p = engine.predict_text("The patient-acquired disease is Heart failure.");
        label.push_str(&format!(",predict:{}", class(&p)));
    }
    label
}

/// Separates the tables of a [`mimic_csv_target`] input (ASCII record separator, which no
/// MIMIC-III table contains).
pub const TABLE_SEPARATOR: u8 = 0x1e;

/// Splits a [`mimic_csv_target`] input into its tables, in the order of
/// [`MimicTables::NAMES`]: part `k` (between separators) is table `k`; missing parts are empty
/// tables, parts after the sixth are ignored.
pub fn split_tables(data: &[u8]) -> MimicTables<'_> {
    let mut parts = data.split(|&b| b == TABLE_SEPARATOR);
    let mut next = || parts.next().unwrap_or_default();
    MimicTables {
        admissions: next(),
        diagnoses_icd: next(),
        procedures_icd: next(),
        prescriptions: next(),
        d_icd_diagnoses: next(),
        d_icd_procedures: next(),
    }
}

/// Joins tables into one [`mimic_csv_target`] input (the inverse of [`split_tables`]).
pub fn join_tables(tables: &MimicTables<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, name) in MimicTables::NAMES.iter().enumerate() {
        if k > 0 {
            out.push(TABLE_SEPARATOR);
        }
        out.extend_from_slice(tables.get(name).unwrap_or_default());
    }
    out
}

/// Every row read is used or skipped for a named reason, and the lines named per reason are
/// at most [`ingest::LINES_NAMED`], increasing, and no more than the rows skipped.
fn check_accounting(summary: &ingest::IngestSummary) {
    for (name, st) in &summary.tables {
        assert_eq!(st.rows_read, st.rows_used + st.skipped.values().sum::<u64>(), "{name}: rows unaccounted for");
        for (why, n) in &st.skipped {
            let lines = st.first_lines.get(why).map_or(&[][..], |v| v.as_slice());
            assert_eq!(lines.len() as u64, (*n).min(ingest::LINES_NAMED as u64), "{name}: lines named for {why}");
            assert!(lines.windows(2).all(|w| w[0] < w[1]), "{name}: lines named for {why}: {lines:?}");
        }
    }
    let samples: u64 = summary.samples.values().sum();
    assert!(samples <= summary.admissions, "more samples than admissions");
}

/// A samples file encodes and decodes to itself (what `ckd ingest` writes as `samples.bin`).
fn check_sample_file(f: &ckd_core::format::SampleFile) {
    let bytes = f.to_bytes().expect("an ingested sample file encodes");
    let back = ckd_core::format::SampleFile::from_bytes(&bytes).expect("an encoded sample file decodes");
    // Compared as bytes: a knowledge table may hold NaN.
    assert_eq!(back.to_bytes().expect("re-encodes"), bytes);
}

/// The label of an ingest result: the error variant, with the table and column of a row error.
fn ingest_class(r: &Result<ingest::Ingested, IngestError>) -> String {
    match r {
        Ok(i) => format!("ok:{}", i.file.samples.len().min(3)),
        Err(IngestError::Row { file, column, .. }) => format!("row:{}:{column}", file.display()),
        Err(IngestError::MissingColumn { file, column }) => format!("column:{}:{column}", file.display()),
        Err(IngestError::Unusable { file, .. }) => format!("unusable:{}", file.display()),
        Err(IngestError::Jsonl { source, .. }) => {
            let d = format!("{source:?}");
            format!("jsonl:{}", &d[..d.find([' ', '(', '{']).unwrap_or(d.len())])
        }
        Err(e) => format!("other:{e}"),
    }
}

/// MIMIC-III CSV target ([`Target::MimicCsv`]): the input is split into the six tables
/// ([`split_tables`]) and read by `ckd ingest`'s readers, strict and lenient, knowledge clauses
/// on. Checks: errors are row, column or unusable-table errors naming one of the six tables (a
/// row error's line is within the table); a run that succeeds accounts for every row, encodes as `samples.bin`
/// and round-trips; a strict success is a lenient success with the same samples.
pub fn mimic_csv_target(data: &[u8]) -> Outcome {
    let tables = split_tables(data);
    let run = |lenient: bool| {
        let cfg = IngestConfig { lenient, ..Default::default() };
        ingest::ingest_mimic_bytes(&tables, &cfg, &mut |_, _| {})
    };
    let (strict, lenient) = (run(false), run(true));
    for r in [&strict, &lenient] {
        match r {
            Ok(ing) => {
                check_accounting(&ing.summary);
                check_sample_file(&ing.file);
            }
            Err(IngestError::Row { file, line, .. }) => {
                let name = file.to_str().and_then(|f| f.strip_suffix(".csv")).unwrap_or_default();
                let bytes = tables.get(name).unwrap_or_else(|| panic!("row error names {}", file.display()));
                let lines = bytes.split_inclusive(|&b| b == b'\n').count() as u64;
                assert!((1..=lines).contains(line), "{}: line {line} of {lines}", file.display());
            }
            Err(IngestError::MissingColumn { file, .. } | IngestError::Unusable { file, .. }) => {
                let name = file.to_str().and_then(|f| f.strip_suffix(".csv")).unwrap_or_default();
                assert!(MimicTables::NAMES.contains(&name), "table error names {}", file.display());
            }
            Err(e) => panic!("unexpected error for in-memory tables: {e}"),
        }
    }
    if let Ok(s) = &strict {
        let l = lenient.as_ref().expect("strict succeeded, so lenient does");
        assert_eq!(s.file.samples, l.file.samples, "strict and lenient read different samples");
        assert!(s.summary.tables.values().all(|t| !t.skipped.contains_key("malformed row")));
    }
    format!("strict:{},lenient:{}", ingest_class(&strict), ingest_class(&lenient))
}

/// JSONL target ([`Target::Jsonl`]): the input is a JSONL file, read by `ckd ingest --jsonl`'s
/// reader (strict and lenient) and, when it is UTF-8 without a byte-order mark, by
/// `ckd_core::jsonl::parse`. Checks: the readers agree; errors are typed (a row error for a
/// non-UTF-8 line, else a JSONL error with its line); a successful read accounts for every
/// line, writes back every non-blank line verbatim, encodes as `samples.bin`, and each record
/// survives the canonical writer (`jsonl::to_line`).
pub fn jsonl_target(data: &[u8]) -> Outcome {
    let path = Path::new("fuzz.jsonl");
    let run = |lenient: bool| ingest::ingest_jsonl_bytes(path, data, &IngestConfig { lenient, ..Default::default() });
    let (strict, lenient) = (run(false), run(true));
    // Lenient skips every bad line; with no record left it names the file.
    assert!(
        lenient.is_ok() || matches!(&lenient, Err(IngestError::Unusable { file, .. }) if file == path),
        "lenient skips every bad line: {}",
        ingest_class(&lenient)
    );
    let body = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let lines = body.split_inclusive(|&b| b == b'\n').count();
    for r in [&strict, &lenient] {
        match r {
            Ok(ing) => {
                check_accounting(&ing.summary);
                assert_eq!(ing.summary.tables["fuzz.jsonl"].rows_read, lines as u64, "every line is read");
                check_sample_file(&ing.file);
            }
            Err(IngestError::Row { line, .. }) => assert!((1..=lines as u64).contains(line), "line {line} of {lines}"),
            Err(IngestError::Unusable { file, .. }) => assert_eq!(file, path),
            Err(IngestError::Jsonl { source, .. }) => {
                let line = match source {
                    jsonl::JsonlError::Json { line, .. }
                    | jsonl::JsonlError::OutputPrefix { line }
                    | jsonl::JsonlError::UnknownName { line, .. } => *line,
                };
                assert!((1..=lines).contains(&line), "line {line} of {lines}");
            }
            Err(e) => panic!("unexpected error for in-memory JSONL: {e}"),
        }
    }
    if let Ok(s) = &strict {
        let l = lenient.as_ref().expect("strict succeeded, so lenient does");
        assert_eq!(s.file.samples, l.file.samples, "strict and lenient read different samples");
        // Blank lines are the only bytes a round trip loses.
        let kept: Vec<u8> = body
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| !std::str::from_utf8(l).expect("strict read every line as UTF-8").trim().is_empty())
            .flatten()
            .copied()
            .collect();
        assert_eq!(ingest::to_jsonl(&s.file.samples).as_bytes(), kept.as_slice(), "lines not written back verbatim");
        for sample in s.file.samples.iter().take(4) {
            let raw = sample.raw.as_ref().expect("JSONL samples keep their record");
            let line = jsonl::to_line(&raw.instruction, &raw.input, &raw.output);
            let back = jsonl::parse_line(&line, 1).expect("a canonical line parses").expect("not blank");
            assert_eq!(
                (back.instruction, back.input, back.output),
                (raw.instruction.clone(), raw.input.clone(), raw.output.clone())
            );
            assert_eq!(back.labels, sample.labels);
        }
    }
    let mut label = format!("strict:{},lenient:{}", ingest_class(&strict), ingest_class(&lenient));
    // The core reader (what ckd-edge and the teacher use) on the same text.
    if let Ok(text) = std::str::from_utf8(data) {
        if !data.starts_with(b"\xef\xbb\xbf") {
            let core = jsonl::parse(text);
            match (&core, &strict) {
                (Ok(recs), Ok(s)) => {
                    assert_eq!(recs.len(), s.file.samples.len(), "core and ingest read different records");
                    assert!(recs.iter().zip(&s.file.samples).all(|(r, s)| r.labels == s.labels));
                }
                (Err(c), Err(IngestError::Jsonl { source, .. })) => assert_eq!(c, source, "core and ingest differ"),
                // No record at all: the core reader gives none, ingest refuses the file.
                (Ok(recs), Err(IngestError::Unusable { .. })) => assert!(recs.is_empty(), "core read records"),
                (c, s) => panic!("core {:?} vs ingest {}", c.as_ref().map(|r| r.len()), ingest_class(s)),
            }
            label.push_str(&format!(",core:{}", class(&core)));
        }
    }
    label
}

/// How a run went.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs run (corpus replay included).
    pub execs: u64,
    /// Corpus files replayed.
    pub replayed: usize,
    /// Distinct outcome classes seen.
    pub classes: usize,
    /// Crashing inputs written (path, panic message).
    pub crashes: Vec<(PathBuf, String)>,
}

/// Reads every file of `dir` (sorted by name); a missing directory is an error.
pub fn read_corpus(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))).collect()
}

/// Budget of a run: stops at whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most mutated inputs.
    pub iterations: u64,
    /// Wall-clock limit of the mutation phase.
    pub time: Duration,
}

/// Replays `corpus`, then mutates it within `budget`; panicking inputs go to `crash_dir`.
pub fn fuzz<F: FnMut(&[u8]) -> Outcome>(
    name: &str,
    corpus: &[Vec<u8>],
    mut target: F,
    budget: Budget,
    seed: u64,
    max_len: usize,
    crash_dir: &Path,
) -> Report {
    let mut report = Report::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut live: Vec<Vec<u8>> = corpus.to_vec();
    if live.is_empty() {
        live.push(Vec::new());
    }
    let mut run = |input: &[u8], report: &mut Report, seen: &mut std::collections::BTreeSet<String>| {
        report.execs += 1;
        match catch_unwind(AssertUnwindSafe(|| target(input))) {
            Ok(outcome) => seen.insert(outcome),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let _ = std::fs::create_dir_all(crash_dir);
                let hash = sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), input));
                let path = crash_dir.join(format!("{name}-{}", ckd_core::format::hex(&hash[..8])));
                let _ = std::fs::write(&path, input);
                report.crashes.push((path, msg));
                false
            }
        }
    };
    for input in corpus {
        run(input, &mut report, &mut seen);
        report.replayed += 1;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = Instant::now();
    for _ in 0..budget.iterations {
        if start.elapsed() >= budget.time || report.crashes.len() >= 5 {
            break;
        }
        let mut input = live[rng.random_range(0..live.len())].clone();
        let other = live[rng.random_range(0..live.len())].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut input, &other, &mut rng, max_len);
        }
        if run(&input, &mut report, &mut seen) {
            live.push(input);
        }
    }
    report.classes = seen.len();
    report
}

const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x40, 0x20];

/// One random mutation of `input` (`other` is a splice source), keeping it under `max_len`.
pub fn mutate<R: RngCore>(input: &mut Vec<u8>, other: &[u8], rng: &mut R, max_len: usize) {
    let len = input.len();
    match rng.random_range(0..9u8) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = rng.random();
        }
        2 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        3 => {
            let i = rng.random_range(0..=len);
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            input.splice(i..i, bytes);
        }
        4 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            input.drain(i..i + n);
        }
        5 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            let chunk = input[i..i + n].to_vec();
            let at = rng.random_range(0..=len);
            input.splice(at..at, chunk);
        }
        6 if !other.is_empty() => {
            let cut = rng.random_range(0..=len);
            let from = rng.random_range(0..other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        7 if len > 0 => input.truncate(rng.random_range(0..len)),
        _ if len >= 4 => {
            // Overwrite a little-endian u32 (lengths, ids, CRCs) with an edge value.
            let i = rng.random_range(0..=len - 4);
            let v: u32 = [0, 1, u32::MAX, 0x8000_0000, 0x7fff_ffff, rng.random()][rng.random_range(0..6)];
            input[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => input.push(rng.random()),
    }
    input.truncate(max_len);
}
