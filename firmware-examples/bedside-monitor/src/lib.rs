//! The bedside board's side of the ckd wire protocol ([`ckd_core::wire`]): read request frames
//! from a byte stream (a serial device, a pseudo-terminal, stdin), answer each with one
//! response frame. Bad input of any kind (garbage, truncated or corrupt frames, wrong version,
//! oversize frames, invalid items) gets an error response, never a crash; the loop only ends at
//! end of input or on an I/O error.
//!
//! A wire visit becomes a [`Visit`] with [`VisitSummary::to_visit_with`] (diagnosis titles from
//! ckd-core's ICD-9 category table; codes sent without a title get one from the board's
//! [`Titles`], else the code); the model sees it through [`Predict::predict`], which for
//! an [`ckd_edge::Engine`] renders it exactly as in training, knowledge clauses from the
//! bundle's table included.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};

use ckd_core::visit::Visit;
use ckd_core::wire::{
    self, Deframer, ErrorCode, Reply, Response, WireError, WirePrediction, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME,
};
use ckd_core::NUM_LABELS;

pub use ckd_core::wire::VisitSummary;

/// Receive buffer: every valid request fits.
pub const RX_CAPACITY: usize = MAX_REQUEST_FRAME;

/// Short titles by normalized ICD-9 code, for codes a device sends without a title (see
/// [`VisitSummary::to_visit_with`]): the board's copies of MIMIC-III's `D_ICD_DIAGNOSES` and
/// `D_ICD_PROCEDURES`, as `ckd ingest` used them in training.
#[derive(Debug, Clone, Default)]
pub struct Titles {
    /// Diagnosis short titles.
    pub diagnoses: HashMap<String, String>,
    /// Procedure short titles.
    pub procedures: HashMap<String, String>,
}

/// A title table that does not load.
#[derive(Debug, thiserror::Error)]
pub enum TitleError {
    /// The file cannot be read or a row is not CSV.
    #[error("{file}: {msg}")]
    Csv {
        /// File.
        file: String,
        /// What the CSV reader said (with the line).
        msg: String,
    },
    /// A required column is missing.
    #[error("{file}: no {column} column in the header")]
    Column {
        /// File.
        file: String,
        /// Column name.
        column: &'static str,
    },
}

/// Reads `ICD9_CODE` -> `SHORT_TITLE` from a MIMIC-III dictionary CSV (header names in any
/// case; other columns ignored; rows with an empty code skipped). `file` names it in errors.
pub fn read_titles<R: Read>(file: &str, input: R) -> Result<HashMap<String, String>, TitleError> {
    let csv_err = |e: csv::Error| TitleError::Csv { file: file.to_string(), msg: e.to_string() };
    let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(input);
    let headers = r.headers().map_err(csv_err)?.clone();
    let col = |column: &'static str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(column))
            .ok_or(TitleError::Column { file: file.to_string(), column })
    };
    let (code_at, title_at) = (col("ICD9_CODE")?, col("SHORT_TITLE")?);
    let mut out = HashMap::new();
    for row in r.records() {
        let row = row.map_err(csv_err)?;
        let (Some(code), Some(title)) = (row.get(code_at), row.get(title_at)) else { continue };
        if let Some(code) = ckd_core::icd::normalize(code) {
            out.insert(code, title.to_string());
        }
    }
    Ok(out)
}

/// What the server needs from a model: a prediction for a visit, and for an explanation
/// request the occlusion of each concept.
pub trait Predict {
    /// Predicts the next-visit phenotypes of `visit`; the error is a message for the log.
    fn predict(&self, visit: &Visit) -> Result<ckd_edge::Prediction, String>;

    /// Predicts and occludes each concept of `visit` ([`ckd_edge::Engine::occlude`]). Models
    /// that cannot explain answer with an error (the default).
    fn occlude(&self, visit: &Visit) -> Result<ckd_edge::Occlusion, String> {
        let _ = visit;
        Err("this model gives no explanations".into())
    }
}

impl Predict for ckd_edge::Engine {
    fn predict(&self, visit: &Visit) -> Result<ckd_edge::Prediction, String> {
        ckd_edge::Engine::predict(self, visit).map_err(|e| e.to_string())
    }

    fn occlude(&self, visit: &Visit) -> Result<ckd_edge::Occlusion, String> {
        ckd_edge::Engine::occlude(self, visit).map_err(|e| e.to_string())
    }
}

/// The wire form of an explanation: the [`wire::EVIDENCE_K`] concepts of largest effect on the
/// most probable phenotype, each named by its list and index in the request (`request`, the
/// wire visit; `visit`, the visit it became, whose diagnoses and procedures are the request's
/// in order and whose drugs are the request's without repeats). A concept is the first item
/// of its list rendered as its text; knowledge clauses count in their own list (3).
pub fn evidence_to_wire(o: &ckd_edge::Occlusion, request: &VisitSummary, visit: &Visit) -> wire::WireEvidence {
    use ckd_core::visit::Field;
    let label = o.prediction.top_k.first().map_or(0, |&(l, _)| l);
    let mut concepts = heapless::Vec::new();
    for i in o.ranked(label).into_iter().take(wire::EVIDENCE_K) {
        let c = &o.concepts[i];
        let text = o.concept_text(i).unwrap_or("").trim();
        let index = match c.field {
            Field::Diagnoses => visit.diagnoses.iter().position(|d| d.title.trim() == text),
            Field::Medications => request.medications.iter().position(|m| m.trim() == text),
            Field::Procedures => visit.procedures.iter().position(|p| p.title.trim() == text),
            Field::Knowledge => Some(o.concepts[..i].iter().filter(|k| k.field == Field::Knowledge).count()),
        };
        let concept = wire::WireConcept {
            list: c.field.index() as u8,
            index: index.unwrap_or(255).min(255) as u8,
            effect: wire::quantize_effect(c.effect[usize::from(label)]),
        };
        // Capacity is EVIDENCE_K and at most EVIDENCE_K concepts are taken.
        let _ = concepts.push(concept);
    }
    wire::WireEvidence { label, concepts }
}

/// The wire form of a prediction (probabilities quantized to u16, see [`ckd_core::wire`]).
pub fn to_wire(p: &ckd_edge::Prediction) -> WirePrediction {
    let mut probs = [0u16; NUM_LABELS];
    for (q, &x) in probs.iter_mut().zip(p.probs.iter()) {
        *q = wire::quantize_prob(x);
    }
    let positive = p.positive.iter().fold(0u32, |m, l| m | 1 << l);
    let mut top_k = heapless::Vec::new();
    for &(l, _) in p.top_k.iter().take(wire::TOP_K) {
        // Capacity is TOP_K and at most TOP_K items are taken.
        let _ = top_k.push(l);
    }
    WirePrediction { probs, positive, top_k, truncated: p.truncated, tokens: p.tokens.min(u16::MAX as usize) as u16 }
}

/// What happened to one frame (for the log: ids and codes only, never patient text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Id answered.
    pub id: u32,
    /// `None` for a prediction, else the error code sent.
    pub error: Option<ErrorCode>,
    /// Why, for errors.
    pub reason: String,
}

/// Answers one frame (the bytes between delimiters, or the deframer's oversize error); codes
/// sent without a title get theirs from `titles`.
pub fn answer<P: Predict + ?Sized>(
    model: &P,
    titles: &Titles,
    frame: Result<&mut [u8], WireError>,
) -> (Response, Outcome) {
    let fail = |e: WireError| {
        let o = Outcome { id: e.id(), error: Some(code_of(&e.reply())), reason: e.to_string() };
        (Response { id: e.id(), reply: e.reply() }, o)
    };
    let req = match frame.and_then(wire::decode_request) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let visit =
        match req.visit.to_visit_with(|c| titles.diagnoses.get(c).cloned(), |c| titles.procedures.get(c).cloned()) {
            Ok(v) => v,
            Err(e) => {
                let (mut resp, mut o) = fail(e);
                resp.id = req.id;
                o.id = req.id;
                return (resp, o);
            }
        };
    let reply = if req.explain {
        model.occlude(&visit).map(|o| Reply::Explained {
            prediction: to_wire(&o.prediction),
            evidence: evidence_to_wire(&o, &req.visit, &visit),
        })
    } else {
        model.predict(&visit).map(|p| Reply::Prediction(to_wire(&p)))
    };
    match reply {
        Ok(reply) => {
            let o = Outcome { id: req.id, error: None, reason: String::new() };
            (Response { id: req.id, reply }, o)
        }
        Err(msg) => {
            let o = Outcome { id: req.id, error: Some(ErrorCode::Model), reason: msg };
            (Response { id: req.id, reply: Reply::Error { code: ErrorCode::Model, detail: 0 } }, o)
        }
    }
}

fn code_of(r: &Reply) -> ErrorCode {
    match r {
        Reply::Error { code, .. } => *code,
        Reply::Prediction(_) | Reply::Explained { .. } => ErrorCode::Payload,
    }
}

/// Error that ends [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading the device failed.
    #[error("reading {device}: {source}")]
    Read {
        /// Device name.
        device: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Writing the device failed.
    #[error("writing {device}: {source}")]
    Write {
        /// Device name.
        device: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A response did not encode (cannot happen with the wire bounds; reported, not panicked).
    #[error("encoding the answer to request {id}: {source}")]
    Encode {
        /// Request id.
        id: u32,
        /// Cause.
        source: WireError,
    },
}

/// Counts of one [`serve`] run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Predictions sent.
    pub answered: u64,
    /// Error responses sent.
    pub errors: u64,
}

/// Serves requests from `input` until end of input, answering on `output` (flushed after each
/// answer). `log` gets one line per frame: ids and error codes, never visit contents.
pub fn serve<P, R, W, L>(
    model: &P,
    titles: &Titles,
    device: &str,
    mut input: R,
    mut output: W,
    mut log: L,
) -> Result<Stats, ServeError>
where
    P: Predict + ?Sized,
    R: Read,
    W: Write,
    L: FnMut(&Outcome),
{
    let mut rx: Box<Deframer<RX_CAPACITY>> = Box::default();
    let mut buf = vec![0u8; 4096];
    let mut out = [0u8; MAX_RESPONSE_FRAME + 1];
    let mut stats = Stats::default();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(stats),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(source) => return Err(ServeError::Read { device: device.to_string(), source }),
        };
        for &byte in &buf[..n] {
            let Some(frame) = rx.push(byte) else { continue };
            let (resp, outcome) = answer(model, titles, frame);
            if outcome.error.is_some() {
                stats.errors += 1;
            } else {
                stats.answered += 1;
            }
            log(&outcome);
            let len =
                wire::encode_response(&resp, &mut out).map_err(|source| ServeError::Encode { id: resp.id, source })?;
            let w = |source| ServeError::Write { device: device.to_string(), source };
            output.write_all(&out[..len]).map_err(w)?;
            output.flush().map_err(|source| ServeError::Write { device: device.to_string(), source })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckd_core::wire::{encode_request, Request};
    use ckd_core::LabelSet;

    /// A model that puts probability 0.9 on the phenotypes present at the visit, 0.1 elsewhere.
    struct Echo;

    impl Predict for Echo {
        fn predict(&self, visit: &Visit) -> Result<ckd_edge::Prediction, String> {
            let present = visit.phenotypes();
            if visit.medications.iter().any(|m| m == "FAIL") {
                return Err("model failed".into());
            }
            let probs: [f32; NUM_LABELS] = std::array::from_fn(|l| if present.contains(l as u8) { 0.9 } else { 0.1 });
            let mut top_k = heapless::Vec::new();
            for l in present.iter().take(ckd_edge::TOP_K) {
                let _ = top_k.push((l, 0.9));
            }
            Ok(ckd_edge::Prediction { probs, positive: present, top_k, truncated: false, tokens: 10 })
        }
    }

    fn frame(id: u32, visit: VisitSummary) -> Vec<u8> {
        let mut out = vec![0u8; MAX_REQUEST_FRAME + 1];
        let n = encode_request(&Request { id, visit, explain: false }, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// `f` with one bit flipped in a byte that COBS leaves as data, so only the CRC can tell.
    pub(crate) fn corrupt(f: &[u8]) -> Vec<u8> {
        for i in f.len() / 2..f.len() - 1 {
            let mut g = f.to_vec();
            g[i] ^= 0x10;
            if matches!(wire::decode_request(&mut g.clone()), Err(WireError::Crc { .. })) {
                return g;
            }
        }
        unreachable!("no data byte in the second half of the frame")
    }

    fn decode_all(bytes: &[u8]) -> Vec<Response> {
        let mut d: Deframer<{ MAX_RESPONSE_FRAME }> = Deframer::new();
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(f) = d.push(b) {
                out.push(wire::decode_response(f.unwrap()).unwrap());
            }
        }
        out
    }

    #[test]
    fn every_kind_of_bad_frame_gets_an_error_answer_and_the_loop_goes_on() {
        let mut v = VisitSummary::default();
        v.push_diagnosis("4280", "").unwrap();
        v.push_diagnosis("5849", "").unwrap();
        let good = frame(1, v.clone());
        let mut stream = good.clone();
        let bad_crc = corrupt(&frame(2, v.clone()));
        stream.extend(&bad_crc);
        stream.extend(&good[..good.len() / 2]); // truncated: runs into the next frame
        stream.push(0);
        stream.extend([0x07, 0x01, 0x02, 0x00]); // garbage: a COBS block longer than the frame
        stream.extend(vec![0x42; RX_CAPACITY + 1]); // oversize
        stream.push(0);
        let mut empty_code = VisitSummary::default();
        empty_code.push_diagnosis(" ", "").unwrap();
        stream.extend(frame(3, empty_code));
        let mut fails = VisitSummary::default();
        fails.push_medication("FAIL").unwrap();
        stream.extend(frame(4, fails));
        stream.extend(&good);
        let mut out = Vec::new();
        let mut lines = Vec::new();
        let stats = serve(&Echo, &Titles::default(), "test", &stream[..], &mut out, |o| lines.push(o.clone())).unwrap();
        let got = decode_all(&out);
        let codes: Vec<(u32, Option<ErrorCode>)> = got
            .iter()
            .map(|r| {
                (
                    r.id,
                    match &r.reply {
                        Reply::Prediction(_) | Reply::Explained { .. } => None,
                        Reply::Error { code, .. } => Some(*code),
                    },
                )
            })
            .collect();
        assert_eq!(
            codes,
            [
                (1, None),
                (0, Some(ErrorCode::Crc)),
                (0, codes[2].1.filter(|c| [ErrorCode::Cobs, ErrorCode::Crc, ErrorCode::Truncated].contains(c))),
                (0, Some(ErrorCode::Cobs)),
                (0, Some(ErrorCode::Oversize)),
                (3, Some(ErrorCode::InvalidItem)),
                (4, Some(ErrorCode::Model)),
                (1, None),
            ]
        );
        assert!(codes[2].1.is_some());
        assert_eq!(stats, Stats { answered: 2, errors: 6 });
        assert_eq!(lines.len(), 8);
        let Reply::Prediction(p) = &got[0].reply else { unreachable!("checked above") };
        // 4280 -> CHF (8), 5849 -> acute renal failure (0).
        assert_eq!(p.positive, 1 | 1 << 8);
        assert_eq!(p.probs[8], wire::quantize_prob(0.9));
        assert_eq!(p.top_k.as_slice(), &[0, 8]);
        assert_eq!(LabelSet::from_labels([0u8, 8]).iter().count(), 2);
    }

    /// An explanation request on the tiny test bundle: a version-2 answer whose evidence is the
    /// engine's occlusion of the visit, each concept named by a request item that renders as it;
    /// a plain request on the same stream still gets a version-1 answer; a model that cannot
    /// explain answers with a model error.
    #[test]
    fn explanation_requests_get_the_engines_occlusion() {
        let bundle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../edge-runtime/testdata/tiny/bundle");
        let engine = ckd_edge::Engine::open(&bundle).unwrap();
        let mut v = VisitSummary::default();
        v.push_diagnosis("5856", "").unwrap();
        v.push_diagnosis("4019", "").unwrap();
        v.push_medication("Furosemide").unwrap();
        v.push_medication("Insulin").unwrap();
        v.push_medication("Furosemide").unwrap();
        v.push_procedure("3995", "Hemodialysis").unwrap();
        let mut stream = vec![0u8; MAX_REQUEST_FRAME + 1];
        let n = encode_request(&Request { id: 5, visit: v.clone(), explain: true }, &mut stream).unwrap();
        stream.truncate(n);
        stream.extend(frame(6, v.clone()));
        let mut out = Vec::new();
        serve(&engine, &Titles::default(), "test", &stream[..], &mut out, |_| {}).unwrap();
        let got = decode_all(&out);
        let visit = v.to_visit().unwrap();
        let o = engine.occlude(&visit).unwrap();
        let Reply::Explained { prediction, evidence } = &got[0].reply else { panic!("{:?}", got[0]) };
        assert_eq!(*prediction, to_wire(&o.prediction));
        assert_eq!(*evidence, evidence_to_wire(&o, &v, &visit));
        assert_eq!(evidence.label, o.prediction.top_k[0].0);
        assert_eq!(evidence.concepts.len(), wire::EVIDENCE_K);
        let ranked = o.ranked(evidence.label);
        for (c, &i) in evidence.concepts.iter().zip(&ranked) {
            let text = o.concept_text(i).unwrap();
            let item = match c.list {
                0 => visit.diagnoses[c.index as usize].title.clone(),
                1 => v.medications[c.index as usize].to_string(),
                2 => visit.procedures[c.index as usize].title.clone(),
                _ => text.to_string(),
            };
            assert_eq!(item, text, "concept {i}");
            assert_eq!(c.effect, wire::quantize_effect(o.concepts[i].effect[evidence.label as usize]));
        }
        assert!(matches!(got[1].reply, Reply::Prediction(_)));
        // The plain answer is a version-1 frame.
        let mut plain = vec![0u8; MAX_RESPONSE_FRAME + 1];
        let n = wire::encode_response(&got[1], &mut plain).unwrap();
        assert_eq!(wire::open_frame(&mut plain[..n], &[wire::KIND_RESPONSE]).unwrap().version, 1);
        let mut echo_out = Vec::new();
        let mut explain = vec![0u8; MAX_REQUEST_FRAME + 1];
        let n = encode_request(&Request { id: 7, visit: v, explain: true }, &mut explain).unwrap();
        serve(&Echo, &Titles::default(), "test", &explain[..n], &mut echo_out, |_| {}).unwrap();
        assert_eq!(decode_all(&echo_out)[0].reply, Reply::Error { code: ErrorCode::Model, detail: 0 });
    }

    /// Records the visits it is asked about.
    struct Recorder(std::cell::RefCell<Vec<Visit>>);

    impl Predict for Recorder {
        fn predict(&self, visit: &Visit) -> Result<ckd_edge::Prediction, String> {
            self.0.borrow_mut().push(visit.clone());
            Echo.predict(visit)
        }
    }

    #[test]
    fn title_tables_fill_codes_sent_without_titles() {
        let csv = "\"ROW_ID\",\"icd9_code\",\"short_title\",\"LONG_TITLE\"\n                   1,\"3995\",\"Hemodialysis\",\"Hemodialysis\"\n                   2,\"9904\",\"Packed cell transfusion\",\"x, y\"\n                   3,\"\",\"no code\",\"\"\n";
        let procedures = read_titles("D_ICD_PROCEDURES.csv", csv.as_bytes()).unwrap();
        assert_eq!(procedures.len(), 2);
        let titles = Titles { diagnoses: HashMap::new(), procedures };
        let mut v = VisitSummary::default();
        v.push_procedure("39.95", "").unwrap();
        v.push_procedure("9904", "Sent by the device").unwrap();
        v.push_procedure("0000", "").unwrap();
        let rec = Recorder(Default::default());
        serve(&rec, &titles, "test", &frame(1, v)[..], Vec::new(), |_| {}).unwrap();
        let seen = rec.0.borrow();
        let got: Vec<&str> = seen[0].procedures.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(got, ["Hemodialysis", "Sent by the device", "0000"]);

        let e = read_titles("d.csv", "ICD9_CODE,LONG_TITLE\n1,x\n".as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "d.csv: no SHORT_TITLE column in the header");
        let e = read_titles("d.csv", "ICD9_CODE,SHORT_TITLE\n1,x\n2,y,z\n".as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("d.csv: ") && e.to_string().contains("line: 3"), "{e}");
    }

    #[test]
    fn read_errors_end_the_loop_with_the_device_name() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("unplugged"))
            }
        }
        let e = serve(&Echo, &Titles::default(), "/dev/ttyUSB0", Broken, Vec::new(), |_| {}).unwrap_err().to_string();
        assert_eq!(e, "reading /dev/ttyUSB0: unplugged");
    }
}
