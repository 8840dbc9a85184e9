//! How progress looks: the only file that knows indicatif.
//!
//! The choice is made here, once, from `-q` and whether stderr is a terminal; the library only
//! sees the `Reporter` trait. Operations that run at once (`sync --jobs N`) each get their own
//! bar in one `MultiProgress`, or log lines that start with their name.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudimg::io::progress::{Reporter, Silent};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Picks the reporter for this run: nothing with `-q`, bars on a terminal, log lines otherwise.
pub fn reporter(quiet: bool) -> Arc<dyn Reporter> {
    if quiet {
        Arc::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bar::new(
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            None,
        ))
    } else {
        Arc::new(LogLines::new(None))
    }
}

/// `convert -p`: the bar on a terminal, and qemu-img's own lines otherwise (scripts that parse
/// qemu-img's progress read ours unchanged).
pub fn convert_reporter(quiet: bool, progress: bool) -> Box<dyn Reporter> {
    if quiet || !progress {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bar::new(
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            None,
        ))
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

/// What a line or bar says: the operation's name (when several run), then the label.
fn message(operation: Option<&str>, label: &str) -> String {
    match operation {
        Some(operation) => format!("{operation}: {label}"),
        None => label.to_owned(),
    }
}

/// A byte count in binary units as the progress lines show them (`1.50 GiB`).
pub(super) fn human_bytes(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// An indicatif bar with bytes, rate and ETA, one per operation in a shared `MultiProgress`.
struct Bar {
    bars: MultiProgress,
    operation: Option<String>,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    fn new(bars: MultiProgress, operation: Option<String>) -> Bar {
        Bar {
            bars,
            operation,
            bar: Mutex::new(None),
        }
    }
}

impl Reporter for Bar {
    fn start(&self, label: &str, total: Option<u64>, already: u64) {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
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
        let bar = self.bars.add(bar);
        bar.set_message(message(self.operation.as_deref(), label));
        bar.set_position(already);
        bar.enable_steady_tick(Duration::from_millis(200));
        let previous = self
            .bar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(bar);
        if let Some(previous) = previous {
            previous.finish_and_clear();
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
            self.bars.remove(&bar);
        }
    }

    fn operation(&self, id: &str) -> Option<Arc<dyn Reporter>> {
        Some(Arc::new(Bar::new(self.bars.clone(), Some(id.to_owned()))))
    }
}

/// Plain periodic lines for logs and cron mail: one every `INTERVAL`, plus one at the end.
struct LogLines {
    operation: Option<String>,
    state: Mutex<Option<LineState>>,
}

impl LogLines {
    fn new(operation: Option<String>) -> LogLines {
        LogLines {
            operation,
            state: Mutex::new(None),
        }
    }
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
            label: message(self.operation.as_deref(), label),
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

    fn operation(&self, id: &str) -> Option<Arc<dyn Reporter>> {
        Some(Arc::new(LogLines::new(Some(id.to_owned()))))
    }
}

/// The reporter of a command with phases (`bake`): phases without a byte count show as a
/// spinner with the elapsed time on a terminal and as one log line each otherwise; conversions
/// with a byte count show as usual.
pub fn phase_reporter(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Phases {
            spinner: Mutex::new(None),
            bytes: Bar::new(
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                None,
            ),
        })
    } else {
        Box::new(PhaseLines {
            bytes: LogLines::new(None),
        })
    }
}

struct Phases {
    spinner: Mutex<Option<ProgressBar>>,
    bytes: Bar,
}

impl Reporter for Phases {
    fn start(&self, label: &str, total: Option<u64>, already: u64) {
        if total.is_some() {
            return self.bytes.start(label, total, already);
        }
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
        );
        spinner.set_message(label.to_owned());
        spinner.enable_steady_tick(Duration::from_millis(200));
        if let Some(old) = self
            .spinner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(spinner)
        {
            old.finish_and_clear();
        }
    }

    fn advance(&self, bytes: u64) {
        self.bytes.advance(bytes);
    }

    fn finish(&self) {
        if let Some(spinner) = self
            .spinner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            spinner.finish_and_clear();
        }
        self.bytes.finish();
    }
}

struct PhaseLines {
    bytes: LogLines,
}

impl Reporter for PhaseLines {
    fn start(&self, label: &str, total: Option<u64>, already: u64) {
        match total {
            Some(_) => self.bytes.start(label, total, already),
            None => tracing::info!("{label}"),
        }
    }

    fn advance(&self, bytes: u64) {
        self.bytes.advance(bytes);
    }

    fn finish(&self) {
        self.bytes.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_names_itself_in_its_lines() {
        let line = |lines: &LogLines| {
            lines.start("disk.img", Some(10), 0);
            let state = lines.state.lock().unwrap();
            state.as_ref().unwrap().line()
        };
        let noble = line(&LogLines::new(Some("noble".into())));
        assert!(noble.starts_with("noble: disk.img: 0 B of 10 B"), "{noble}");
        let alone = line(&LogLines::new(None));
        assert!(alone.starts_with("disk.img: "), "{alone}");
        assert!(LogLines::new(None).operation("jammy").is_some());
    }
}
