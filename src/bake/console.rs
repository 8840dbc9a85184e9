//! Reading the guest's serial console: where the boot is, and how the bake ended.
//!
//! The guest reports to cloudimg with marker lines that cloudimg's own final stage prints on
//! the console, `cloudimg-bake:<nonce>:<word>:<detail>`. The nonce is random per boot and never
//! appears literally in the seed (the script assembles the prefix at run time), so neither a
//! recipe echoing text nor cloud-init logging its user data can fake a verdict. Ordinary
//! console lines (the kernel banner, cloud-init's stage banners, the power-down message) only
//! move the phase shown to the user.
//!
//! The scanner is pure: it takes bytes as they come and returns events; it keeps the last lines
//! for error messages. Lines are bounded ([`MAX_LINE`]) so a guest printing without newlines
//! cannot grow memory.

use std::collections::VecDeque;

/// Start of every marker line; the nonce and a colon follow.
pub const MARKER: &str = "cloudimg-bake:";

/// Longest line kept; longer runs without a newline are cut into pieces of this size.
pub const MAX_LINE: usize = 4096;

/// What Linux prints when it panics.
const KERNEL_PANIC: &str = "Kernel panic - not syncing";

/// The panic an emulated CPU starved by a loaded host causes in early boot (the timer check
/// sees too few ticks). Nothing was written to the disk yet; booting again is safe.
const TIMER_PANIC: &str = "timer doesn't work";

/// Whether a panic message is the early timer check failing under a loaded host.
pub fn is_transient_panic(message: &str) -> bool {
    message.contains(TIMER_PANIC)
}

/// How many console lines an error message shows.
pub const TAIL_LINES: usize = 25;

/// Where the guest is, as far as the console says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The kernel started.
    Kernel,
    /// cloud-init's local and network stages (datasource, users, files, growpart).
    CloudInitInit,
    /// cloud-init's config modules (packages, …).
    CloudInitConfig,
    /// cloud-init's final modules (the recipe's commands).
    CloudInitFinal,
    /// cloud-init is done; cloudimg's final stage checks its result.
    Checking,
    /// `cloud-init clean`, host keys, logs.
    Generalising,
    /// `fstrim` so freed blocks become holes.
    Trimming,
    /// The kernel is powering the machine off.
    PoweringOff,
}

impl Phase {
    /// What the user sees.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Kernel => "booting the kernel",
            Phase::CloudInitInit => "cloud-init: init stages",
            Phase::CloudInitConfig => "cloud-init: config modules",
            Phase::CloudInitFinal => "cloud-init: final modules",
            Phase::Checking => "checking cloud-init's result",
            Phase::Generalising => "generalising",
            Phase::Trimming => "trimming free space",
            Phase::PoweringOff => "powering off",
        }
    }
}

/// How the guest says the run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything passed; `detail` is what the stage reports (the instance id in a boot test).
    Ok { detail: String },
    /// Recipe command `index` (0-based, in `--run` order) exited with `status`.
    RunFailed { index: usize, status: i32 },
    /// cloud-init reported an error; `detail` is its own summary.
    CloudInitError { detail: String },
    /// A marker this version does not understand (a bug, or a guest-side failure).
    Malformed { line: String },
}

/// Something worth telling the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Phase(Phase),
    Verdict(Verdict),
    /// A warning from cloudimg's final stage (cloud-init's recoverable errors).
    Warning(String),
    /// The guest kernel panicked (it then hangs: nothing more will come).
    Panic(String),
    /// A complete console line, for `-v`.
    Line(String),
}

/// Splits console bytes into lines and recognises markers and banners.
#[derive(Debug)]
pub struct Scanner {
    /// `cloudimg-bake:<nonce>:`.
    prefix: String,
    partial: Vec<u8>,
    tail: VecDeque<String>,
    /// The tail as it was when the verdict arrived: what led to it, not the shutdown after.
    verdict_tail: Option<Vec<String>>,
    /// Whether any byte arrived at all (a silent guest under KVM is a known failure).
    seen_output: bool,
}

impl Scanner {
    pub fn new(nonce: &str) -> Scanner {
        Scanner {
            prefix: format!("{MARKER}{nonce}:"),
            partial: Vec::new(),
            tail: VecDeque::with_capacity(TAIL_LINES),
            verdict_tail: None,
            seen_output: false,
        }
    }

    /// Takes the next bytes from the console; returns what they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        if !bytes.is_empty() {
            self.seen_output = true;
        }
        for &byte in bytes {
            if byte == b'\n' {
                self.end_line(&mut events);
            } else {
                self.partial.push(byte);
                if self.partial.len() >= MAX_LINE {
                    self.end_line(&mut events);
                }
            }
        }
        events
    }

    /// Ends the last, unterminated line (when the console closes).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            self.end_line(&mut events);
        }
        events
    }

    /// The last console lines, oldest first; once a verdict arrived, the lines up to it.
    pub fn tail(&self) -> Vec<String> {
        match &self.verdict_tail {
            Some(lines) => lines.clone(),
            None => self.tail.iter().cloned().collect(),
        }
    }

    pub fn seen_output(&self) -> bool {
        self.seen_output
    }

    fn end_line(&mut self, events: &mut Vec<Event>) {
        let raw = std::mem::take(&mut self.partial);
        let line = clean(&raw);
        let event = self.classify(&line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        if let Some(event) = event {
            if matches!(event, Event::Verdict(_)) && self.verdict_tail.is_none() {
                self.verdict_tail = Some(self.tail.iter().cloned().collect());
            }
            events.push(event);
        }
        events.push(Event::Line(line));
    }

    fn classify(&self, line: &str) -> Option<Event> {
        if let Some(at) = line.find(&self.prefix) {
            return Some(marker(&line[at + self.prefix.len()..]));
        }
        if let Some(at) = line.find(KERNEL_PANIC) {
            return Some(Event::Panic(line[at..].to_owned()));
        }
        banner(line).map(Event::Phase)
    }
}

/// The text after `cloudimg-bake:<nonce>:`.
fn marker(rest: &str) -> Event {
    let (word, detail) = rest.split_once(':').unwrap_or((rest, ""));
    let detail = detail.trim();
    match word {
        "phase" => match detail {
            "checking" => Event::Phase(Phase::Checking),
            "generalising" => Event::Phase(Phase::Generalising),
            "trimming" => Event::Phase(Phase::Trimming),
            _ => Event::Warning(format!("unknown phase {detail:?}")),
        },
        "warning" => Event::Warning(detail.to_owned()),
        "result" => Event::Verdict(verdict(detail, rest)),
        _ => Event::Verdict(Verdict::Malformed {
            line: rest.to_owned(),
        }),
    }
}

fn verdict(detail: &str, whole: &str) -> Verdict {
    let (outcome, rest) = detail.split_once(':').unwrap_or((detail, ""));
    let rest = rest.trim();
    match outcome {
        "ok" => Verdict::Ok {
            detail: rest.to_owned(),
        },
        "cloud-init-error" => Verdict::CloudInitError {
            detail: rest.to_owned(),
        },
        "run-failed" => {
            let mut numbers = rest.split_whitespace().map(str::parse::<i64>);
            match (numbers.next(), numbers.next()) {
                (Some(Ok(index)), Some(Ok(status))) if index >= 0 => Verdict::RunFailed {
                    index: usize::try_from(index).unwrap_or(usize::MAX),
                    status: i32::try_from(status).unwrap_or(-1),
                },
                _ => Verdict::Malformed {
                    line: whole.to_owned(),
                },
            }
        }
        _ => Verdict::Malformed {
            line: whole.to_owned(),
        },
    }
}

/// Phases recognised from ordinary console output.
fn banner(line: &str) -> Option<Phase> {
    if line.contains("Linux version ") {
        Some(Phase::Kernel)
    } else if line.contains("Cloud-init v.") || line.contains("cloud-init[") {
        if line.contains("'modules:final'") {
            Some(Phase::CloudInitFinal)
        } else if line.contains("'modules:config'") {
            Some(Phase::CloudInitConfig)
        } else if line.contains("running 'init") {
            Some(Phase::CloudInitInit)
        } else {
            None
        }
    } else if line.contains("reboot: Power down") {
        Some(Phase::PoweringOff)
    } else {
        None
    }
}

/// Text of a console line: lossy UTF-8, carriage returns and terminal escapes removed.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            // CSI sequences (`ESC [ … final byte`), as systemd's coloured status uses.
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for next in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&next) {
                            break;
                        }
                    }
                }
            }
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(scanner: &mut Scanner, bytes: &[u8]) -> Vec<Event> {
        scanner
            .feed(bytes)
            .into_iter()
            .filter(|e| !matches!(e, Event::Line(_)))
            .collect()
    }

    #[test]
    fn ok_verdict_with_detail() {
        let mut scanner = Scanner::new("n0nce");
        assert_eq!(
            events(&mut scanner, b"cloudimg-bake:n0nce:result:ok:iid-1\r\n"),
            vec![Event::Verdict(Verdict::Ok {
                detail: "iid-1".into()
            })]
        );
    }

    #[test]
    fn another_nonce_is_ignored() {
        let mut scanner = Scanner::new("n0nce");
        // One byte different in the nonce.
        assert!(events(&mut scanner, b"cloudimg-bake:n0ncf:result:ok\n").is_empty());
        // The script's text, as a log might show it, is not a marker either.
        assert!(events(&mut scanner, b"say result:ok  # cloudimg-bake:$n:\n").is_empty());
    }

    #[test]
    fn run_failure_carries_index_and_status() {
        let mut scanner = Scanner::new("x");
        assert_eq!(
            events(
                &mut scanner,
                b"[  42.1] cloud-init[612]: cloudimg-bake:x:result:run-failed:1 7\n"
            ),
            vec![Event::Verdict(Verdict::RunFailed {
                index: 1,
                status: 7
            })]
        );
        assert!(matches!(
            events(&mut scanner, b"cloudimg-bake:x:result:run-failed:-1 7\n")[..],
            [Event::Verdict(Verdict::Malformed { .. })]
        ));
    }

    #[test]
    fn markers_split_across_reads_are_found() {
        let mut scanner = Scanner::new("x");
        assert!(events(&mut scanner, b"cloudimg-ba").is_empty());
        assert_eq!(
            events(&mut scanner, b"ke:x:phase:generalising\n"),
            vec![Event::Phase(Phase::Generalising)]
        );
    }

    #[test]
    fn banners_move_the_phase() {
        let mut scanner = Scanner::new("x");
        let console = b"[    0.000000] Linux version 6.1.0-37-cloud-amd64\n\
            [    5.1] cloud-init[201]: Cloud-init v. 22.4.2 running 'init-local' at Sun\n\
            [   20.3] cloud-init[399]: Cloud-init v. 22.4.2 running 'modules:config' at Sun\n\
            [   25.0] cloud-init[420]: Cloud-init v. 22.4.2 running 'modules:final' at Sun\n\
            [   40.0] reboot: Power down\n";
        assert_eq!(
            events(&mut scanner, console),
            vec![
                Event::Phase(Phase::Kernel),
                Event::Phase(Phase::CloudInitInit),
                Event::Phase(Phase::CloudInitConfig),
                Event::Phase(Phase::CloudInitFinal),
                Event::Phase(Phase::PoweringOff),
            ]
        );
    }

    #[test]
    fn escapes_are_removed_and_the_tail_is_bounded() {
        let mut scanner = Scanner::new("x");
        scanner.feed(b"\x1b[0;32m  OK  \x1b[0m] Started\r\n");
        assert_eq!(scanner.tail(), vec!["  OK  ] Started".to_owned()]);
        for i in 0..(TAIL_LINES + 5) {
            scanner.feed(format!("line {i}\n").as_bytes());
        }
        let tail = scanner.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().unwrap(), &format!("line {}", TAIL_LINES + 4));
    }

    #[test]
    fn kernel_panics_are_reported() {
        let mut scanner = Scanner::new("x");
        let events = events(
            &mut scanner,
            b"[    0.064000] Kernel panic - not syncing: IO-APIC + timer doesn't work!  Boot with apic=debug\n",
        );
        let [Event::Panic(message)] = &events[..] else {
            panic!("{events:?}")
        };
        assert!(is_transient_panic(message));
        assert!(!is_transient_panic(
            "Kernel panic - not syncing: VFS: Unable to mount root fs"
        ));
    }

    #[test]
    fn the_tail_stops_at_the_verdict() {
        let mut scanner = Scanner::new("x");
        scanner.feed(b"exit 7 output\ncloudimg-bake:x:result:run-failed:0 7\n");
        scanner.feed(b"Stopped everything\n");
        assert_eq!(
            scanner.tail(),
            vec![
                "exit 7 output".to_owned(),
                "cloudimg-bake:x:result:run-failed:0 7".to_owned()
            ]
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let mut scanner = Scanner::new("x");
        let lines = scanner
            .feed(&vec![b'a'; MAX_LINE * 2 + 1])
            .into_iter()
            .filter(|e| matches!(e, Event::Line(_)))
            .count();
        assert_eq!(lines, 2);
        assert_eq!(scanner.finish().len(), 1);
    }
}
