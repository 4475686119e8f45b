//! Soak test of the `bedside-monitor` binary over a pseudo-terminal, run by
//! `scripts/soak.sh`.
//!
//! Starts the board on the slave side of a pseudo-terminal (raw mode, as a serial device) and
//! sends `--requests` frames from the master side, one at a time (each answer is awaited before
//! the next frame, so an answer is always attributable). One frame in `--corrupt-every` is
//! corrupt, the four kinds in turn: random bytes, a frame cut short, a frame with one data bit
//! flipped (bad CRC), and an oversize frame. The valid frames carry visits drawn from a seeded
//! pool (an empty visit, which the board refuses with an error, and one at every wire bound
//! included).
//!
//! Checks, each a failure of the run (exit status 1):
//! - every frame gets exactly one answer, and it is the one the board's own code gives in this
//!   process ([`ckd_bedside_monitor::answer`] on the same bytes, the same bundle): predictions
//!   equal to the bit, errors with the same code and id; an answer that does not come within
//!   30 s is a lost request, an answer after the last one a duplicate;
//! - every corrupt frame is answered with an error, and so is every valid frame that carries the
//!   empty visit (and nothing else is); the board logs one error line for each;
//! - the board's resident memory (`VmRSS`) after warm-up (the first `--warmup-percent` of the
//!   requests) grows by less than `--max-growth-kib` up to the end, at any sample (every 1000
//!   requests) and at the end;
//! - the run ends within `--max-secs`.
//!
//! It prints the latency percentiles (frame written to answer decoded) and memory figures,
//! and a last line `soak-pty: key=value ...` for scripts.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ckd_bedside_monitor::{answer, Titles, RX_CAPACITY};
use ckd_core::rng::SplitMix64;
use ckd_core::wire::{
    self, Deframer, Reply, Request, Response, VisitSummary, MAX_CODE_LEN, MAX_DIAGNOSES, MAX_DRUG_LEN, MAX_MEDICATIONS,
    MAX_PROCEDURES, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_TITLE_LEN,
};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Soak test of bedside-monitor over a pseudo-terminal (see the source's docs)")]
struct Args {
    /// The bedside-monitor binary.
    #[arg(long)]
    monitor: PathBuf,
    /// Bundle the board serves (also opened in this process for the expected answers).
    #[arg(long)]
    bundle: PathBuf,
    /// Frames to send.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// One frame in this many is corrupt.
    #[arg(long, default_value_t = 10)]
    corrupt_every: u64,
    /// Share of the requests (percent) sent before the memory baseline is taken.
    #[arg(long, default_value_t = 10)]
    warmup_percent: u64,
    /// Most resident-memory growth after warm-up, KiB.
    #[arg(long, default_value_t = 2048)]
    max_growth_kib: i64,
    /// Wall-clock limit of the run, seconds.
    #[arg(long, default_value_t = 1800)]
    max_secs: u64,
    /// Seed of the visit pool and of the corruptions.
    #[arg(long, default_value_t = 17)]
    seed: u64,
}

const DIAGNOSES: [(&str, &str); 16] = [
    ("4280", ""),
    ("5849", ""),
    ("0389", ""),
    ("78552", ""),
    ("25000", ""),
    ("4019", ""),
    ("V4581", ""),
    ("E8791", ""),
    ("42731", ""),
    ("5990", ""),
    ("51881", ""),
    ("486", ""),
    ("2762", ""),
    ("41401", ""),
    ("99662", "Infect d/t vasc device"),
    ("0000", "Made-up code"),
];
const DRUGS: [&str; 16] = [
    "Furosemide",
    "Heparin",
    "Vancomycin",
    "Insulin",
    "Metoprolol Tartrate",
    "Sodium Chloride 0.9%  Flush",
    "Albumin, Human",
    "Pantoprazole",
    "Acetaminophen",
    "Potassium Chloride",
    "Docusate Sodium",
    "Magnesium Sulfate",
    "Propofol",
    "Warfarin",
    "Aspirin",
    "Pneumococcal Vac Polyvalent",
];
const PROCEDURES: [(&str, &str); 6] = [
    ("3995", "Hemodialysis"),
    ("9671", "Cont inv mec ven <96 hrs"),
    ("9604", "Insert endotracheal tube"),
    ("3893", "Venous cath NEC"),
    ("9904", "Packed cell transfusion"),
    ("3961", ""),
];

/// Visits of the pool: an empty one, one at every wire bound, the rest drawn at random.
fn pool(rng: &mut SplitMix64, n: usize) -> Vec<VisitSummary> {
    let mut out = vec![VisitSummary::default()];
    let mut full = VisitSummary::default();
    for i in 0..MAX_DIAGNOSES {
        let code = format!("E{:0w$}", i, w = MAX_CODE_LEN - 1);
        full.push_diagnosis(&code, &"T".repeat(MAX_TITLE_LEN)).unwrap();
    }
    for i in 0..MAX_MEDICATIONS {
        full.push_medication(&format!("{i:0w$}", w = MAX_DRUG_LEN)).unwrap();
    }
    for i in 0..MAX_PROCEDURES {
        full.push_procedure(&format!("{:0w$}", i, w = MAX_CODE_LEN), &"P".repeat(MAX_TITLE_LEN)).unwrap();
    }
    out.push(full);
    while out.len() < n {
        let mut v = VisitSummary::default();
        for _ in 0..rng.below(16) {
            let (c, t) = DIAGNOSES[rng.below(DIAGNOSES.len())];
            v.push_diagnosis(c, t).unwrap();
        }
        for _ in 0..rng.below(30) {
            v.push_medication(DRUGS[rng.below(DRUGS.len())]).unwrap();
        }
        for _ in 0..rng.below(6) {
            let (c, t) = PROCEDURES[rng.below(PROCEDURES.len())];
            v.push_procedure(c, t).unwrap();
        }
        out.push(v);
    }
    out
}

fn encode(id: u32, visit: &VisitSummary) -> Vec<u8> {
    let mut out = vec![0u8; MAX_REQUEST_FRAME + 1];
    let n = wire::encode_request(&Request { id, visit: visit.clone() }, &mut out).expect("pool visits encode");
    out.truncate(n);
    out
}

/// What the board answers to `bytes` (one frame with its delimiter), by the board's own code
/// in this process; `None` when the bytes are not exactly one frame.
fn expected(engine: &ckd_edge::Engine, bytes: &[u8]) -> Option<Response> {
    let mut d: Box<Deframer<RX_CAPACITY>> = Box::default();
    let mut got = None;
    for (k, &b) in bytes.iter().enumerate() {
        if let Some(frame) = d.push(b) {
            if k + 1 != bytes.len() {
                return None;
            }
            got = Some(answer(engine, &Titles::default(), frame).0);
        }
    }
    got
}

/// Corruption kinds, in turn.
const KINDS: [&str; 4] = ["random", "truncated", "bad-crc", "oversize"];

/// A corrupt frame of `kind` made from the valid frame `good` (delimiter included).
fn corrupt(kind: usize, good: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let body = &good[..good.len() - 1];
    let mut f = match kind {
        0 => (0..1 + rng.below(300)).map(|_| 1 + rng.below(255) as u8).collect(),
        1 => body[..1 + rng.below(body.len() - 1)].to_vec(),
        2 => {
            // One bit flipped in a byte that COBS leaves as data (so the frame still deframes
            // as one and only the CRC can tell), never making a 0x00.
            let start = rng.below(body.len());
            (0..body.len() * 8)
                .map(|j| ((start + j / 8) % body.len(), j % 8))
                .filter(|&(i, bit)| body[i] != 1 << bit)
                .map(|(i, bit)| {
                    let mut g = body.to_vec();
                    g[i] ^= 1 << bit;
                    g
                })
                .find(|g| matches!(wire::decode_request(&mut g.clone()), Err(wire::WireError::Crc { .. })))
                .expect("some data byte of a frame can be flipped")
        }
        _ => (0..RX_CAPACITY + 1 + rng.below(64)).map(|_| 1 + rng.below(255) as u8).collect(),
    };
    f.push(wire::DELIMITER);
    f
}

/// `VmRSS` of process `pid`, KiB.
fn rss_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> ExitCode {
    ckd_edge::memory::use_mmap_for_large_allocations();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak-pty: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    use anyhow::Context;
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_secs);
    let engine = ckd_edge::Engine::open(&args.bundle).context("opening the bundle in the driver")?;
    let mut rng = SplitMix64::new(args.seed);
    let visits = pool(&mut rng, 64);
    // The answer to each pool visit, by the board's code in this process (ids patched in later).
    let replies: Vec<Reply> =
        visits.iter().map(|v| expected(&engine, &encode(1, v)).expect("one frame").reply).collect();
    let predicted = replies.iter().filter(|r| matches!(r, Reply::Prediction(_))).count();
    println!("soak-pty: pool of {} visits ({predicted} answered with predictions)", visits.len());

    // The pseudo-terminal: raw mode before the board opens it; this handle keeps it from
    // hanging up between opens.
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).context("openpt")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let slave_path = ptsname(&master, Vec::new()).context("ptsname")?.into_string().expect("pty names are ASCII");
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(&slave_path).context("opening the slave")?;
    let mut t = rustix::termios::tcgetattr(slave.as_fd()).context("tcgetattr")?;
    t.make_raw();
    rustix::termios::tcsetattr(slave.as_fd(), rustix::termios::OptionalActions::Now, &t).context("tcsetattr")?;

    let mut child = Command::new(&args.monitor)
        .args(["--bundle".as_ref(), args.bundle.as_os_str()])
        .args(["--device", &slave_path, "--baud", "115200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.monitor.display()))?;
    let pid = child.id();
    // The board's log: readiness, then one line per error answer (drained, so it never blocks).
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    let log = std::thread::spawn(move || {
        let (mut errors, mut tail) = (0u64, Vec::new());
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(": ready on ") {
                let _ = ready_tx.send(());
            } else if line.starts_with("request ") && line.contains(": error ") {
                errors += 1;
            }
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        (errors, tail)
    });
    let mut master = std::fs::File::from(master);
    let mut reader = master.try_clone().context("second handle on the master")?;
    let (tx, rx) = mpsc::channel::<(Instant, Result<Response, String>)>();
    std::thread::spawn(move || {
        let mut d: Deframer<MAX_RESPONSE_FRAME> = Deframer::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if let Some(f) = d.push(b) {
                    let r =
                        f.map_err(|e| e.to_string()).and_then(|f| wire::decode_response(f).map_err(|e| e.to_string()));
                    if tx.send((Instant::now(), r)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(300)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        let (_, tail) = log.join().unwrap_or_default();
        anyhow::bail!("the board did not get ready; its log:\n{}", tail.join("\n"));
    }
    let rss_start = rss_kib(pid).unwrap_or(0);

    let n = args.requests;
    let warm = n * args.warmup_percent / 100;
    let mut lat_valid = Vec::with_capacity(n as usize);
    let mut lat_corrupt = Vec::with_capacity((n / args.corrupt_every.max(1)) as usize + 1);
    let mut kind_counts = [0u64; 4];
    let (mut errors_answered, mut predictions) = (0u64, 0u64);
    // Valid frames answered with an error: the empty visit, which the engine refuses.
    let mut refused_valid = 0u64;
    let mut failures: Vec<String> = Vec::new();
    let (mut rss_warm, mut rss_peak_after) = (0i64, 0i64);
    let mut sent = 0u64;
    for i in 0..n {
        if Instant::now() > deadline {
            failures.push(format!("time limit of {} s reached after {i} of {n} requests", args.max_secs));
            break;
        }
        let id = (i + 1) as u32;
        let k = rng.below(visits.len());
        let good = encode(id, &visits[k]);
        let is_corrupt = args.corrupt_every > 0 && (i + 1) % args.corrupt_every == 0;
        let (frame, want, kind) = if is_corrupt {
            let kind = ((i + 1) / args.corrupt_every % 4) as usize;
            let f = corrupt(kind, &good, &mut rng);
            let want = expected(&engine, &f).expect("a corrupt frame is one frame");
            assert!(matches!(want.reply, Reply::Error { .. }), "corrupt frame {i} ({}) decodes", KINDS[kind]);
            (f, want, Some(kind))
        } else {
            (good, Response { id, reply: replies[k].clone() }, None)
        };
        let t0 = Instant::now();
        master.write_all(&frame).context("writing to the pseudo-terminal")?;
        sent += 1;
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((t1, Ok(got))) if got == want => {
                let ns = (t1 - t0).as_nanos() as u64;
                match kind {
                    Some(kind) => {
                        lat_corrupt.push(ns);
                        kind_counts[kind] += 1;
                    }
                    None => {
                        lat_valid.push(ns);
                        refused_valid += u64::from(matches!(got.reply, Reply::Error { .. }));
                    }
                }
                if matches!(got.reply, Reply::Error { .. }) {
                    errors_answered += 1;
                } else {
                    predictions += 1;
                }
            }
            Ok((_, Ok(got))) => {
                failures.push(format!(
                    "request {i} (id {id}, {}): answer {got:?}, expected {want:?}",
                    kind.map_or("valid", |k| KINDS[k])
                ));
                break;
            }
            Ok((_, Err(e))) => {
                failures.push(format!("request {i}: the answer does not decode: {e}"));
                break;
            }
            Err(_) => {
                failures.push(format!("request {i} (id {id}): lost (no answer within 30 s)"));
                break;
            }
        }
        let done = i + 1;
        if done == warm.max(1) {
            rss_warm = rss_kib(pid).unwrap_or(0);
        }
        if done > warm && done % 1000 == 0 {
            rss_peak_after = rss_peak_after.max(rss_kib(pid).unwrap_or(0));
        }
    }
    // Nothing may come after the last answer.
    let mut extra = 0;
    while rx.recv_timeout(Duration::from_millis(500)).is_ok() {
        extra += 1;
    }
    if extra > 0 {
        failures.push(format!("{extra} answers more than frames sent (answered twice)"));
    }
    let rss_end = rss_kib(pid).unwrap_or(0);
    rss_peak_after = rss_peak_after.max(rss_end);
    let alive = child.try_wait().context("checking the board")?.is_none();
    let _ = child.kill();
    let _ = child.wait();
    drop(slave);
    let (logged_errors, tail) = log.join().unwrap_or_default();
    if !alive {
        failures.push(format!("the board exited during the run; its log:\n{}", tail.join("\n")));
    }
    let corrupt_sent: u64 = kind_counts.iter().sum();
    if failures.is_empty() {
        if errors_answered != corrupt_sent + refused_valid {
            failures.push(format!(
                "{errors_answered} error answers for {corrupt_sent} corrupt frames and {refused_valid} empty visits"
            ));
        }
        if logged_errors != errors_answered {
            failures.push(format!("the board logged {logged_errors} errors, answered {errors_answered}"));
        }
    }
    let growth = rss_end - rss_warm;
    let peak_growth = rss_peak_after - rss_warm;
    if warm > 0 && failures.is_empty() && (rss_warm == 0 || peak_growth >= args.max_growth_kib) {
        failures.push(format!(
            "resident memory grew by {peak_growth} KiB after warm-up (limit {} KiB)",
            args.max_growth_kib
        ));
    }
    let wall = start.elapsed().as_secs_f64();
    lat_valid.sort_unstable();
    lat_corrupt.sort_unstable();
    let us = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
    println!(
        "soak-pty: {sent} frames sent, {predictions} predictions, {errors_answered} error answers \
         ({} random, {} truncated, {} bad CRC, {} oversize), {} errors in the board's log",
        kind_counts[0], kind_counts[1], kind_counts[2], kind_counts[3], logged_errors
    );
    println!(
        "soak-pty: latency (frame written to answer read) valid p50 {:.0} us, p99 {:.0} us, max {:.0} us; \
         corrupt p50 {:.0} us, p99 {:.0} us",
        us(&lat_valid, 0.5),
        us(&lat_valid, 0.99),
        us(&lat_valid, 1.0),
        us(&lat_corrupt, 0.5),
        us(&lat_corrupt, 0.99)
    );
    println!(
        "soak-pty: board VmRSS {rss_start} KiB when ready, {rss_warm} KiB after warm-up ({warm} requests), \
         {rss_end} KiB at the end (growth {growth} KiB, largest sample {peak_growth} KiB above warm-up)"
    );
    println!(
        "soak-pty: requests={sent} predictions={predictions} errors={errors_answered} corrupt={corrupt_sent} \
         p50_us={:.0} p99_us={:.0} max_us={:.0} rss_warm_kib={rss_warm} rss_end_kib={rss_end} \
         growth_kib={growth} peak_growth_kib={peak_growth} wall_s={wall:.1} failures={}",
        us(&lat_valid, 0.5),
        us(&lat_valid, 0.99),
        us(&lat_valid, 1.0),
        failures.len()
    );
    for f in &failures {
        println!("soak-pty: FAILED: {f}");
    }
    Ok(failures.is_empty())
}
