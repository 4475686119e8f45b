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
    let n = wire::encode_request(&Request { id, visit: visit.clone(), explain: false }, &mut out)
        .expect("pool visits encode");
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

    let start = Instant::now();
    let engine = ckd_edge::Engine::open(&args.bundle).context("opening the bundle in the driver")?;
    let mut rng = SplitMix64::new(args.seed);
    let visits = pool(&mut rng, 64);
    // The answer to each pool visit, by the board's code in this process (ids patched in later).
    let replies: Vec<Reply> =
        visits.iter().map(|v| expected(&engine, &encode(1, v)).expect("one frame").reply).collect();
    let predicted = replies.iter().filter(|r| matches!(r, Reply::Prediction(_))).count();
    println!("soak-pty: pool of {} visits ({predicted} answered with predictions)", visits.len());

    let (master, slave, slave_path) = open_pty()?;
    let board = Board::start(args, &slave_path)?;
    let mut master = std::fs::File::from(master);
    let answers = read_answers(master.try_clone().context("second handle on the master")?);
    let board = board.wait_ready()?;
    let mut tally = Tally { rss_start: rss_kib(board.pid).unwrap_or(0), ..Tally::default() };
    let driver = Driver {
        args,
        engine: &engine,
        visits: &visits,
        replies: &replies,
        pid: board.pid,
        deadline: start + Duration::from_secs(args.max_secs),
    };
    send_requests(&driver, &mut rng, &mut master, &answers, &mut tally)?;
    // Nothing may come after the last answer.
    let mut extra = 0;
    while answers.recv_timeout(Duration::from_millis(500)).is_ok() {
        extra += 1;
    }
    if extra > 0 {
        tally.failures.push(format!("{extra} answers more than frames sent (answered twice)"));
    }
    tally.rss_end = rss_kib(board.pid).unwrap_or(0);
    tally.rss_peak_after = tally.rss_peak_after.max(tally.rss_end);
    let (alive, logged_errors, tail) = board.stop()?;
    drop(slave);
    if !alive {
        tally.failures.push(format!("the board exited during the run; its log:\n{}", tail.join("\n")));
    }
    check_totals(&mut tally, logged_errors, args);
    print_summary(&tally, logged_errors, args, start.elapsed().as_secs_f64());
    Ok(tally.failures.is_empty())
}

/// A pseudo-terminal in raw mode (set before the board opens it): the master, the slave (held
/// open so the terminal does not hang up between opens) and the slave's path.
fn open_pty() -> anyhow::Result<(std::os::fd::OwnedFd, std::fs::File, String)> {
    use anyhow::Context;
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).context("openpt")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let slave_path = ptsname(&master, Vec::new()).context("ptsname")?.into_string().expect("pty names are ASCII");
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(&slave_path).context("opening the slave")?;
    let mut t = rustix::termios::tcgetattr(slave.as_fd()).context("tcgetattr")?;
    t.make_raw();
    rustix::termios::tcsetattr(slave.as_fd(), rustix::termios::OptionalActions::Now, &t).context("tcsetattr")?;
    Ok((master, slave, slave_path))
}

/// The board's process and the thread draining its log (readiness, then one line per error
/// answer; drained so that it never blocks). The thread returns the error lines counted and the
/// last 20 lines.
struct Board {
    child: std::process::Child,
    pid: u32,
    ready: mpsc::Receiver<()>,
    log: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Board {
    fn start(args: &Args, slave_path: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut child = Command::new(&args.monitor)
            .args(["--bundle".as_ref(), args.bundle.as_os_str()])
            .args(["--device", slave_path, "--baud", "115200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", args.monitor.display()))?;
        let (ready_tx, ready) = mpsc::channel();
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
        Ok(Self { pid: child.id(), child, ready, log })
    }

    /// Waits up to 300 s for the board's "ready" line; on timeout kills it and returns its log.
    fn wait_ready(mut self) -> anyhow::Result<Self> {
        if self.ready.recv_timeout(Duration::from_secs(300)).is_ok() {
            return Ok(self);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (_, tail) = self.log.join().unwrap_or_default();
        anyhow::bail!("the board did not get ready; its log:\n{}", tail.join("\n"))
    }

    /// Stops the board: whether it was still alive, the error lines it logged, its last lines.
    fn stop(mut self) -> anyhow::Result<(bool, u64, Vec<String>)> {
        use anyhow::Context;
        let alive = self.child.try_wait().context("checking the board")?.is_none();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (errors, tail) = self.log.join().unwrap_or_default();
        Ok((alive, errors, tail))
    }
}

/// A thread decoding the answers read from the master; each with the instant it was decoded.
fn read_answers(mut reader: std::fs::File) -> mpsc::Receiver<(Instant, Result<Response, String>)> {
    let (tx, rx) = mpsc::channel();
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
    rx
}

/// What the requests are drawn from and checked against.
struct Driver<'a> {
    args: &'a Args,
    engine: &'a ckd_edge::Engine,
    visits: &'a [VisitSummary],
    replies: &'a [Reply],
    pid: u32,
    deadline: Instant,
}

/// What the run counted and measured (latencies in ns; memory in KiB); a run passes when
/// `failures` stays empty.
#[derive(Default)]
struct Tally {
    sent: u64,
    lat_valid: Vec<u64>,
    lat_corrupt: Vec<u64>,
    kind_counts: [u64; 4],
    errors_answered: u64,
    predictions: u64,
    /// Valid frames answered with an error: the empty visit, which the engine refuses.
    refused_valid: u64,
    failures: Vec<String>,
    rss_start: i64,
    rss_warm: i64,
    rss_peak_after: i64,
    rss_end: i64,
}

/// Sends `--requests` frames one at a time, each answer awaited and compared with the expected
/// one; the first wrong, undecodable or lost answer is a failure and ends the loop. Samples the
/// board's memory after warm-up and every 1000 requests after it.
fn send_requests(
    d: &Driver<'_>,
    rng: &mut SplitMix64,
    master: &mut std::fs::File,
    answers: &mpsc::Receiver<(Instant, Result<Response, String>)>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let (n, every) = (d.args.requests, d.args.corrupt_every);
    let warm = n * d.args.warmup_percent / 100;
    for i in 0..n {
        if Instant::now() > d.deadline {
            tally.failures.push(format!("time limit of {} s reached after {i} of {n} requests", d.args.max_secs));
            break;
        }
        let id = (i + 1) as u32;
        let k = rng.below(d.visits.len());
        let good = encode(id, &d.visits[k]);
        let (frame, want, kind) = if every > 0 && (i + 1) % every == 0 {
            let kind = ((i + 1) / every % 4) as usize;
            let f = corrupt(kind, &good, rng);
            let want = expected(d.engine, &f).expect("a corrupt frame is one frame");
            assert!(matches!(want.reply, Reply::Error { .. }), "corrupt frame {i} ({}) decodes", KINDS[kind]);
            (f, want, Some(kind))
        } else {
            (good, Response { id, reply: d.replies[k].clone() }, None)
        };
        let t0 = Instant::now();
        master.write_all(&frame).context("writing to the pseudo-terminal")?;
        tally.sent += 1;
        let failure = match answers.recv_timeout(Duration::from_secs(30)) {
            Ok((t1, Ok(got))) if got == want => {
                tally.record(kind, &got, (t1 - t0).as_nanos() as u64);
                None
            }
            Ok((_, Ok(got))) => Some(format!(
                "request {i} (id {id}, {}): answer {got:?}, expected {want:?}",
                kind.map_or("valid", |k| KINDS[k])
            )),
            Ok((_, Err(e))) => Some(format!("request {i}: the answer does not decode: {e}")),
            Err(_) => Some(format!("request {i} (id {id}): lost (no answer within 30 s)")),
        };
        if let Some(f) = failure {
            tally.failures.push(f);
            break;
        }
        let done = i + 1;
        if done == warm.max(1) {
            tally.rss_warm = rss_kib(d.pid).unwrap_or(0);
        }
        if done > warm && done % 1000 == 0 {
            tally.rss_peak_after = tally.rss_peak_after.max(rss_kib(d.pid).unwrap_or(0));
        }
    }
    Ok(())
}

impl Tally {
    /// Counts a right answer of latency `ns` to a frame (`kind`: the corruption, if any).
    fn record(&mut self, kind: Option<usize>, got: &Response, ns: u64) {
        let error = matches!(got.reply, Reply::Error { .. });
        match kind {
            Some(kind) => {
                self.lat_corrupt.push(ns);
                self.kind_counts[kind] += 1;
            }
            None => {
                self.lat_valid.push(ns);
                self.refused_valid += u64::from(error);
            }
        }
        if error {
            self.errors_answered += 1;
        } else {
            self.predictions += 1;
        }
    }
}

/// The checks over the whole run: error answers match the corrupt frames and empty visits, the
/// board logged each, and memory after warm-up stayed within `--max-growth-kib`.
fn check_totals(tally: &mut Tally, logged_errors: u64, args: &Args) {
    let corrupt_sent: u64 = tally.kind_counts.iter().sum();
    if tally.failures.is_empty() {
        if tally.errors_answered != corrupt_sent + tally.refused_valid {
            tally.failures.push(format!(
                "{} error answers for {corrupt_sent} corrupt frames and {} empty visits",
                tally.errors_answered, tally.refused_valid
            ));
        }
        if logged_errors != tally.errors_answered {
            tally.failures.push(format!("the board logged {logged_errors} errors, answered {}", tally.errors_answered));
        }
    }
    let warm = args.requests * args.warmup_percent / 100;
    let peak_growth = tally.rss_peak_after - tally.rss_warm;
    if warm > 0 && tally.failures.is_empty() && (tally.rss_warm == 0 || peak_growth >= args.max_growth_kib) {
        tally.failures.push(format!(
            "resident memory grew by {peak_growth} KiB after warm-up (limit {} KiB)",
            args.max_growth_kib
        ));
    }
}

/// Prints counts, latency percentiles, memory, the `key=value` line for scripts and the failures.
fn print_summary(tally: &Tally, logged_errors: u64, args: &Args, wall: f64) {
    let mut lat_valid = tally.lat_valid.clone();
    let mut lat_corrupt = tally.lat_corrupt.clone();
    lat_valid.sort_unstable();
    lat_corrupt.sort_unstable();
    let us = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
    let (sent, predictions, errors) = (tally.sent, tally.predictions, tally.errors_answered);
    let k = tally.kind_counts;
    let corrupt_sent: u64 = k.iter().sum();
    let (rss_start, rss_warm, rss_end) = (tally.rss_start, tally.rss_warm, tally.rss_end);
    let growth = rss_end - rss_warm;
    let peak_growth = tally.rss_peak_after - rss_warm;
    let warm = args.requests * args.warmup_percent / 100;
    println!(
        "soak-pty: {sent} frames sent, {predictions} predictions, {errors} error answers \
         ({} random, {} truncated, {} bad CRC, {} oversize), {logged_errors} errors in the board's log",
        k[0], k[1], k[2], k[3]
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
        "soak-pty: requests={sent} predictions={predictions} errors={errors} corrupt={corrupt_sent} \
         p50_us={:.0} p99_us={:.0} max_us={:.0} rss_warm_kib={rss_warm} rss_end_kib={rss_end} \
         growth_kib={growth} peak_growth_kib={peak_growth} wall_s={wall:.1} failures={}",
        us(&lat_valid, 0.5),
        us(&lat_valid, 0.99),
        us(&lat_valid, 1.0),
        tally.failures.len()
    );
    for f in &tally.failures {
        println!("soak-pty: FAILED: {f}");
    }
}
