//! The `bedside-monitor` binary end to end, on a tiny bundle: requests over stdin/stdout and
//! over a pseudo-terminal get the same predictions as `Engine::predict` in this process
//! (quantized), malformed frames get error answers, and the process keeps serving.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ckd_bedside_monitor::to_wire;
use ckd_core::visit::render;
use ckd_core::wire::{self, Deframer, ErrorCode, Reply, Request, Response, VisitSummary, MAX_RESPONSE_FRAME};
use ckd_edge::Engine;
use ckd_trainer::export::Precision;

const BIN: &str = env!("CARGO_BIN_EXE_bedside-monitor");

fn frame(id: u32, visit: &VisitSummary) -> Vec<u8> {
    let mut out = vec![0u8; wire::MAX_REQUEST_FRAME + 1];
    let n = wire::encode_request(&Request { id, visit: visit.clone(), explain: false }, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A frame and its expected answer: `Ok(id)` a prediction for visit `id - 1`, `Err((id, code))` an error.
type Step = (Vec<u8>, Result<u32, (u32, ErrorCode)>);

/// Frames to send, with what each answer must be.
fn script() -> Vec<Step> {
    let summaries: Vec<VisitSummary> = common::visits().iter().map(|v| VisitSummary::from_visit(v).unwrap()).collect();
    let mut s = Vec::new();
    for (i, v) in summaries.iter().enumerate() {
        s.push((frame(i as u32 + 1, v), Ok(i as u32 + 1)));
    }
    // One bit flipped in a byte that COBS leaves as data, so only the CRC can tell.
    let good = frame(1, &summaries[0]);
    let bad_crc = (good.len() / 2..good.len() - 1)
        .map(|i| {
            let mut g = good.clone();
            g[i] ^= 0x10;
            g
        })
        .find(|g| matches!(wire::decode_request(&mut g.clone()), Err(wire::WireError::Crc { .. })))
        .unwrap();
    s.push((bad_crc, Err((0, ErrorCode::Crc))));
    s.push((vec![0x07, 0x01, 0x02, 0x00], Err((0, ErrorCode::Cobs))));
    s.push((vec![0x02, 0x09, 0x00], Err((0, ErrorCode::Truncated))));
    let mut huge = vec![0x31; wire::MAX_REQUEST_FRAME + 50];
    huge.push(0);
    s.push((huge, Err((0, ErrorCode::Oversize))));
    // A response frame sent as a request, and a request of another protocol version.
    let mut resp = vec![0u8; MAX_RESPONSE_FRAME + 1];
    let n =
        wire::encode_response(&Response { id: 40, reply: Reply::Error { code: ErrorCode::Crc, detail: 0 } }, &mut resp)
            .unwrap();
    resp.truncate(n);
    s.push((resp, Err((40, ErrorCode::Kind))));
    let mut body = vec![9u8, wire::KIND_REQUEST, 41, 0, 0, 0, 0, 0, 0];
    body.extend(crc32fast_hash(&body).to_le_bytes());
    let mut v9 = vec![0u8; body.len() + 2];
    let m = cobs_encode(&body, &mut v9);
    v9.truncate(m);
    v9.push(0);
    s.push((v9, Err((41, ErrorCode::Version))));
    let mut empty_code = VisitSummary::default();
    empty_code.push_diagnosis("..", "").unwrap();
    s.push((frame(42, &empty_code), Err((42, ErrorCode::InvalidItem))));
    // Still serving after all that.
    s.push((frame(1, &summaries[0]), Ok(1)));
    s
}

// The CRC-32 and COBS of the wire module, for hand-made frames (reimplemented here so the test
// does not trust the code under test for them).
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn cobs_encode(src: &[u8], dst: &mut [u8]) -> usize {
    // Valid for inputs shorter than 254 bytes.
    let (mut code_at, mut out, mut code) = (0usize, 1usize, 1u8);
    for &b in src {
        if b == 0 {
            dst[code_at] = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            dst[out] = b;
            out += 1;
            code += 1;
        }
    }
    dst[code_at] = code;
    out
}

/// Checks the answers against the script and against the engine run in this process.
fn check(engine: &Engine, answers: &[Response], script: &[Step]) {
    assert_eq!(answers.len(), script.len(), "one answer per frame");
    let visits = common::visits();
    let table = common::knowledge();
    for (k, (a, (_, want))) in answers.iter().zip(script).enumerate() {
        match (want, &a.reply) {
            (Ok(id), Reply::Prediction(p)) => {
                assert_eq!(a.id, *id, "answer {k}");
                let v = VisitSummary::from_visit(&visits[*id as usize - 1]).unwrap().to_visit().unwrap();
                let local = engine.predict(&v).unwrap();
                assert_eq!(*p, to_wire(&local), "answer {k}: board and in-process engine differ");
                // The board rendered the knowledge clauses from the bundle's table.
                let text = render(&v, &table.clauses(v.phenotypes())).text;
                let (ids, truncated) = engine.tokenize(&text).unwrap();
                assert_eq!((p.tokens as usize, p.truncated), (ids.len(), truncated), "answer {k}");
            }
            (Err((id, code)), Reply::Error { code: got, .. }) => {
                assert_eq!((a.id, got), (*id, code), "answer {k}");
            }
            (w, r) => panic!("answer {k}: expected {w:?}, got {r:?}"),
        }
    }
    // The fixture exercises a clause and the truncation rule.
    assert!(answers.iter().any(|a| matches!(&a.reply, Reply::Prediction(p) if p.truncated)));
}

fn decode_stream(bytes: &[u8]) -> Vec<Response> {
    let mut d: Deframer<MAX_RESPONSE_FRAME> = Deframer::new();
    let mut out = Vec::new();
    for &b in bytes {
        if let Some(f) = d.push(b) {
            out.push(wire::decode_response(f.unwrap()).unwrap());
        }
    }
    out
}

#[test]
fn stdin_and_a_pseudo_terminal_answer_like_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    common::tiny_bundle(dir.path(), &bundle, Precision::Int8);
    let engine = Engine::open(&bundle).unwrap();
    assert!(engine.manifest().knowledge.is_some());
    let script = script();

    // stdin/stdout: send everything, close stdin, the process ends at end of input.
    let mut child = Command::new(BIN)
        .args(["--bundle", bundle.to_str().unwrap(), "--device", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let frames: Vec<u8> = script.iter().flat_map(|(f, _)| f.clone()).collect();
    let writer = std::thread::spawn(move || stdin.write_all(&frames));
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    writer.join().unwrap().unwrap();
    assert!(log.contains("5 answered, 7 error responses"), "{log}");
    check(&engine, &decode_stream(&out.stdout), &script);
    assert!(!log.contains("Furosemide"), "the log must not carry visit contents: {log}");

    // A pseudo-terminal, as a serial device: one frame at a time, answers read back.
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let slave_path = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    // Raw mode before the board opens it, so nothing written early is echoed or line-edited;
    // keeping this handle open keeps the terminal from hanging up between opens.
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(&slave_path).unwrap();
    let mut t = rustix::termios::tcgetattr(slave.as_fd()).unwrap();
    t.make_raw();
    rustix::termios::tcsetattr(slave.as_fd(), rustix::termios::OptionalActions::Now, &t).unwrap();
    let mut child = Command::new(BIN)
        .args(["--bundle", bundle.to_str().unwrap(), "--device", &slave_path, "--baud", "115200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut master = std::fs::File::from(master);
    let (tx, rx) = mpsc::channel();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut d: Deframer<MAX_RESPONSE_FRAME> = Deframer::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if let Some(f) = d.push(b) {
                    let _ = tx.send(
                        f.map_err(|e| e.to_string()).and_then(|f| wire::decode_response(f).map_err(|e| e.to_string())),
                    );
                }
            }
        }
    });
    let mut answers = Vec::new();
    for (k, (f, _)) in script.iter().enumerate() {
        master.write_all(f).unwrap();
        // A guard against a hung board, not a timing assertion.
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(r) => answers.push(r.unwrap()),
            Err(e) => {
                let _ = child.kill();
                let mut log = String::new();
                let _ = stderr.read_to_string(&mut log);
                panic!("frame {k}: no answer ({e}); board log: {log}");
            }
        }
    }
    check(&engine, &answers, &script);
    assert_eq!(child.try_wait().unwrap(), None, "the board still serves");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(slave);
}
