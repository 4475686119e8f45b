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
//! single-file bundle: the packed index and the ranges it names).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ckd_core::bundle::{
    FileEntry, Manifest, MANIFEST_FILE, MANIFEST_MAGIC, MANIFEST_VERSION, MODEL_DATA_FILE, MODEL_FILE, TOKENIZER_FILE,
};
use ckd_core::format;
use ckd_core::wire::{self, Deframer, Request, Response, MAX_REQUEST_FRAME};
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
}

impl Target {
    /// All targets.
    pub const ALL: [Target; 5] =
        [Target::Wire, Target::Manifest, Target::Bundle, Target::BundleTokenizer, Target::BundlePacked];
    /// The targets CI runs (every target without a known open crash).
    pub const CI: [Target; 5] =
        [Target::Wire, Target::Manifest, Target::Bundle, Target::BundleTokenizer, Target::BundlePacked];

    /// Name (also the corpus subdirectory).
    pub fn name(self) -> &'static str {
        match self {
            Target::Wire => "wire",
            Target::Manifest => "manifest",
            Target::Bundle => "bundle",
            Target::BundleTokenizer => "bundle-tokenizer",
            Target::BundlePacked => "bundle-packed",
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
