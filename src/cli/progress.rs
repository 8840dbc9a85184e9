//! How progress looks: the only file that knows indicatif.
//!
//! The choice is made here, once, from `-q` and whether stderr is a terminal; the library only
//! sees the `Reporter` trait.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloudimg::io::progress::{Reporter, Silent};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Picks the reporter for this run: nothing with `-q`, a bar on a terminal, log lines otherwise.
pub fn reporter(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bar::default())
    } else {
        Box::new(LogLines::default())
    }
}

/// `convert -p`: the bar on a terminal, and qemu-img's own lines otherwise (scripts that parse
/// qemu-img's progress read ours unchanged).
pub fn convert_reporter(quiet: bool, progress: bool) -> Box<dyn Reporter> {
    if quiet || !progress {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bar::default())
    } else {
        Box::new(QemuPercent::default())
    }
}

/// qemu-img's `-p` output: `    (NN.NN/100%)` and a carriage return on stdout each time the
/// work advances by another percent, and a newline at the end.
#[derive(Default)]
struct QemuPercent {
    state: Mutex<Option<PercentState>>,
}

struct PercentState {
    total: u64,
    done: u64,
    /// The percentage last printed.
    printed: f64,
}

/// qemu prints again once the work has advanced by this many percent.
const PERCENT_STEP: f64 = 1.0;

fn percent_line(percent: f64) -> String {
    format!("    ({percent:.2}/100%)\r")
}

impl Reporter for QemuPercent {
    fn start(&self, _label: &str, total: Option<u64>, already: u64) {
        out!("{}", percent_line(0.0));
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(PercentState {
            total: total.unwrap_or(0),
            done: already,
            printed: 0.0,
        });
    }

    fn advance(&self, bytes: u64) {
        if let Some(state) = &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            state.done += bytes;
            if state.total == 0 {
                return;
            }
            let percent = (state.done as f64 * 100.0 / state.total as f64).min(100.0);
            if percent - state.printed >= PERCENT_STEP {
                state.printed = percent;
                out!("{}", percent_line(percent));
            }
        }
    }

    fn finish(&self) {
        if self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
        {
            out!("{}\n", percent_line(100.0));
        }
    }
}

/// An indicatif bar with bytes, rate and ETA.
#[derive(Default)]
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Reporter for Bar {
    fn start(&self, label: &str, total: Option<u64>, already: u64) {
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec}")
                    .expect("static template"),
            ),
        };
        bar.set_message(label.to_owned());
        bar.set_position(already);
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// Plain periodic lines for logs and cron mail: one every `INTERVAL`, plus one at the end.
#[derive(Default)]
struct LogLines {
    state: Mutex<Option<LineState>>,
}

struct LineState {
    label: String,
    total: Option<u64>,
    done: u64,
    /// Bytes done before this run (a resumed download); not counted in the rate.
    already: u64,
    started: Instant,
    last: Instant,
}

/// Long enough that a cron mail of a whole download stays a handful of lines.
const INTERVAL: Duration = Duration::from_secs(10);

impl LineState {
    fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = HumanBytes(((self.done - self.already) as f64 / elapsed) as u64);
        match self.total {
            Some(total) if total > 0 => format!(
                "{}: {} of {} ({}%), {rate}/s",
                self.label,
                HumanBytes(self.done),
                HumanBytes(total),
                self.done * 100 / total
            ),
            _ => format!("{}: {}, {rate}/s", self.label, HumanBytes(self.done)),
        }
    }
}

impl Reporter for LogLines {
    fn start(&self, label: &str, total: Option<u64>, already: u64) {
        let now = Instant::now();
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(LineState {
            label: label.to_owned(),
            total,
            done: already,
            already,
            started: now,
            last: now,
        });
    }

    fn advance(&self, bytes: u64) {
        if let Some(state) = &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            state.done += bytes;
            if state.last.elapsed() >= INTERVAL {
                state.last = Instant::now();
                tracing::info!("{}", state.line());
            }
        }
    }

    fn finish(&self) {
        if let Some(state) = self.state.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if state.started.elapsed() >= INTERVAL {
                tracing::info!("{}", state.line());
            }
        }
    }
}
