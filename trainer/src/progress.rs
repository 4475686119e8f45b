//! Progress for long stages: bars on a terminal, and on anything else (CI logs, Slurm, `nohup`,
//! a file) one plain line per 10% of the work or per 30 s, whichever comes first.
//!
//! [`auto`] picks by whether stderr is a terminal. Writes to a failing stderr are dropped: a
//! progress line must never stop or panic a run.

use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::teacher::train::Bars;

/// Terminal progress bars.
pub struct TermBars;

impl Bars for TermBars {
    fn bar(&self, name: &str) -> ProgressBar {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(&format!("{name:>26} {{bar:30}} {{pos}}/{{len}} {{msg}} ETA {{eta}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    }
}

/// Plain progress lines on stderr (`[ckd] NAME: 40% 120/300 loss 0.31, 1m 02s, ETA 1m 33s`).
pub struct LogBars {
    /// Longest quiet time between two lines.
    pub every: Duration,
}

impl Default for LogBars {
    fn default() -> Self {
        LogBars { every: Duration::from_secs(30) }
    }
}

impl Bars for LogBars {
    fn bar(&self, name: &str) -> ProgressBar {
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(LineLog::new(self.every, Box::new(Stderr))), 1);
        let b = ProgressBar::with_draw_target(Some(0), target);
        b.set_style(
            ProgressStyle::with_template(&format!(
                "{{percent}}% [ckd] {name}: {{percent}}% {{pos}}/{{len}} {{msg}}, {{elapsed}}, ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    }
}

/// Bars on a terminal, lines otherwise.
pub fn auto() -> Box<dyn Bars> {
    if std::io::stderr().is_terminal() {
        Box::new(TermBars)
    } else {
        Box::new(LogBars::default())
    }
}

/// Where [`LineLog`] writes its lines.
pub trait LineSink: Send + Sync {
    /// Writes one line (without its newline).
    fn line(&self, s: &str);
}

struct Stderr;

impl LineSink for Stderr {
    fn line(&self, s: &str) {
        let _ = writeln!(std::io::stderr(), "{s}");
    }
}

#[derive(Debug, Default)]
struct LogState {
    /// The line being drawn.
    pending: String,
    /// The last line written, its decile and when.
    last: Option<(String, u64, Instant)>,
}

/// An indicatif "terminal" that turns redraws into occasional log lines. The bar's template
/// starts with `{percent}% `, which is read to find the decile and cut from the line.
pub struct LineLog {
    every: Duration,
    sink: Box<dyn LineSink>,
    state: Mutex<LogState>,
}

impl std::fmt::Debug for LineLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineLog").field("every", &self.every).finish_non_exhaustive()
    }
}

impl LineLog {
    /// A log that writes to `sink` at most once per decile of progress or `every`.
    pub fn new(every: Duration, sink: Box<dyn LineSink>) -> Self {
        LineLog { every, sink, state: Mutex::new(LogState::default()) }
    }

    fn emit_pending(&self) {
        let Ok(mut st) = self.state.lock() else { return };
        let drawn = std::mem::take(&mut st.pending);
        let Some((pct, text)) = drawn.split_once("% ") else { return };
        let Ok(pct) = pct.trim().parse::<u64>() else { return };
        if text.trim().is_empty() {
            return;
        }
        let decile = pct / 10;
        let due = match &st.last {
            None => true,
            Some((prev, d, at)) => prev != text && (decile > *d || at.elapsed() >= self.every),
        };
        if due {
            self.sink.line(text.trim_end());
            st.last = Some((text.to_string(), decile, Instant::now()));
        }
    }
}

impl TermLike for LineLog {
    fn width(&self) -> u16 {
        200
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)?;
        self.emit_pending();
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if let Ok(mut st) = self.state.lock() {
            st.pending.push_str(s);
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        if let Ok(mut st) = self.state.lock() {
            st.pending.clear();
        }
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        self.emit_pending();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Default, Clone)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl LineSink for Lines {
        fn line(&self, s: &str) {
            self.0.lock().unwrap().push(s.to_string());
        }
    }

    #[test]
    fn one_line_per_decile_when_drawn_often() {
        let lines = Lines::default();
        let log = LineLog::new(Duration::from_secs(3600), Box::new(lines.clone()));
        for i in 0..=100u64 {
            // indicatif redraws as: clear, text, flush.
            log.clear_line().unwrap();
            log.write_str(&format!("{i}% [ckd] student: {i}% {i}/100")).unwrap();
            log.flush().unwrap();
        }
        let got = lines.0.lock().unwrap().clone();
        assert_eq!(got.len(), 11, "{got:?}");
        assert_eq!(got[0], "[ckd] student: 0% 0/100");
        assert_eq!(got[10], "[ckd] student: 100% 100/100");
    }

    #[test]
    fn a_quiet_period_writes_a_line_within_the_decile() {
        let lines = Lines::default();
        let log = LineLog::new(Duration::ZERO, Box::new(lines.clone()));
        for text in ["1% a 1/100", "1% a 1/100", "2% a 2/100"] {
            log.write_line(text).unwrap();
        }
        // Repeats of the same text are dropped; a new text after `every` is written.
        assert_eq!(lines.0.lock().unwrap().clone(), vec!["a 1/100", "a 2/100"]);
    }

    #[test]
    fn log_bars_write_lines_through_indicatif() {
        // The real path: indicatif renders the template into a LineLog.
        let lines = Lines::default();
        let target = ProgressDrawTarget::term_like_with_hz(
            Box::new(LineLog::new(Duration::from_secs(3600), Box::new(lines.clone()))),
            20,
        );
        let b = ProgressBar::with_draw_target(Some(10), target);
        b.set_style(ProgressStyle::with_template("{percent}% [ckd] x: {pos}/{len}").unwrap());
        for _ in 0..10 {
            b.inc(1);
            std::thread::sleep(Duration::from_millis(60));
        }
        b.finish();
        let got = lines.0.lock().unwrap().clone();
        assert!(got.iter().any(|l| l == "[ckd] x: 10/10"), "{got:?}");
        assert!(got.len() >= 2 && got.len() <= 11, "{got:?}");
    }
}
