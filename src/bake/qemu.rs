//! Running one guest under QEMU: the command line, and a supervisor that streams the serial
//! console, enforces the deadline and stops the guest on every way out.
//!
//! The command line is a pure function of [`Machine`] (unit-tested). The guest has no display,
//! no default devices, `-no-reboot` (a reboot or a crash ends QEMU instead of looping), its disk
//! on virtio with `discard=unmap` (the guest's `fstrim` turns freed blocks into holes of the
//! qcow2), the seed as a read-only virtio disk labelled `cidata`, and user-mode networking
//! (restricted, or none). The serial console is QEMU's stdout.
//!
//! A restricted guest (`restrict=on`) reaches nothing, not even the host's alias 10.0.2.2;
//! QEMU's `guestfwd` rules are the way through that stays explicit: `tcp:10.0.2.100:80-tcp:
//! 127.0.0.1:8080` makes the guest's connections to 10.0.2.100:80 reach one server on the host
//! (QEMU refuses a rule on 10.0.2.2 itself, the host alias, and connects a `tcp:` target once,
//! when it starts; a `cmd:` target runs its command per connection).
//!
//! QEMU runs in its own process group, so the terminal's Ctrl-C reaches cloudimg only, which
//! then kills the guest itself; and it gets `SIGKILL` if cloudimg dies (`PR_SET_PDEATHSIG`), so
//! no guest outlives its bake. [`boot`] returns when QEMU has exited — after the guest's
//! verdict, a timeout, a cancellation or a failure — never with QEMU still running.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::console::{Event, Phase, Scanner, Verdict};

/// How often the supervisor looks at the clock and the cancel flag without console output.
const TICK: Duration = Duration::from_millis(200);

/// Under KVM, a guest that prints nothing for this long is stuck (this is how a paravirtual
/// KVM such as `kvm_pvm` fails): stop instead of waiting for the whole timeout.
pub const KVM_SILENCE_LIMIT: Duration = Duration::from_secs(90);

/// Bytes of QEMU's stderr kept for an error message.
const MAX_STDERR: usize = 16 * 1024;

/// Bytes read from the console at once.
const READ_CHUNK: usize = 8 * 1024;

/// Console bytes written to the log at most; a guest flooding its console cannot fill the disk.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// `ioctl(KVM_GET_API_VERSION)` and the only version Linux has ever answered.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_API_VERSION: libc::c_int = 12;

/// Guest architectures cloudimg can boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// From the names the catalogs and Glance use (`amd64`, `x86_64`, `arm64`, `aarch64`).
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "amd64" | "x86_64" => Some(Arch::X86_64),
            "arm64" | "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The Debian/Ubuntu package that ships [`Arch::binary`] (and, for arm64, its firmware).
    pub fn package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm qemu-efi-aarch64",
        }
    }

    fn is_host(self) -> bool {
        Some(self) == Arch::from_name(std::env::consts::ARCH)
    }
}

/// UEFI firmware for arm64 guests, from Debian's `qemu-efi-aarch64`.
pub const AARCH64_FIRMWARE: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// What the guest runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Resolves `auto`: KVM when the guest has the host's architecture and `/dev/kvm` answers, TCG
/// otherwise. Returns the choice and why, for the log.
pub fn choose_accel(choice: AccelChoice, arch: Arch) -> (Accel, String) {
    match choice {
        AccelChoice::Kvm => (Accel::Kvm, "asked for".into()),
        AccelChoice::Tcg => (Accel::Tcg, "asked for".into()),
        AccelChoice::Auto if !arch.is_host() => (
            Accel::Tcg,
            "the guest's architecture is not the host's".into(),
        ),
        AccelChoice::Auto => match kvm_usable() {
            Ok(()) => (Accel::Kvm, "/dev/kvm works".into()),
            Err(why) => (Accel::Tcg, why),
        },
    }
}

/// Whether `/dev/kvm` can run a stock guest.
fn kvm_usable() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION as _) };
    if version != KVM_API_VERSION {
        return Err(format!("/dev/kvm answers API version {version}"));
    }
    // A paravirtual KVM (kvm_pvm) aborts QEMU's `-cpu host` and hangs a stock kernel.
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err("/dev/kvm is kvm_pvm, on which stock guests hang".into());
    }
    Ok(())
}

/// The guest's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// QEMU user-mode networking: the guest reaches what the host reaches (package mirrors).
    User,
    /// User-mode networking with `restrict=on`: a NIC and DHCP, but no traffic leaves.
    Restricted,
    /// No NIC at all.
    None,
}

/// One guest to boot.
#[derive(Clone, Debug)]
pub struct Machine {
    pub arch: Arch,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub network: Network,
    /// QEMU `guestfwd` rules of the user-mode network ([`check_guestfwd`]).
    pub guestfwd: Vec<String>,
    /// The qcow2 system disk.
    pub disk: PathBuf,
    /// Writes go to a throwaway overlay (the boot test), not to `disk`.
    pub snapshot: bool,
    /// The NoCloud seed image.
    pub seed: PathBuf,
    /// Boot this kernel directly instead of through the firmware and the disk's boot loader.
    pub kernel: Option<DirectKernel>,
}

/// A kernel QEMU loads itself (`-kernel`, `-initrd`, `-append`): the firmware's disk reads
/// and the boot loader are skipped, seconds under TCG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

impl Machine {
    /// QEMU's arguments, without the binary.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-name", "cloudimg-bake", "-nodefaults", "-no-user-config"]);
        push(&["-display", "none", "-no-reboot"]);
        match self.arch {
            Arch::X86_64 => push(&["-machine", "q35"]),
            Arch::Aarch64 => push(&["-machine", "virt", "-bios", AARCH64_FIRMWARE]),
        }
        push(&["-accel", self.accel.name()]);
        push(&[
            "-cpu",
            match self.accel {
                Accel::Kvm => "host",
                Accel::Tcg => "max",
            },
        ]);
        push(&["-m", &self.memory_mib.to_string()]);
        push(&["-smp", &self.cpus.max(1).to_string()]);
        push(&["-chardev", "stdio,id=console,signal=off"]);
        push(&["-serial", "chardev:console"]);
        // The guest's data only has to be durable once QEMU exits cleanly; a killed guest's
        // disk is thrown away. `unsafe` skips the guest's flushes, which cost seconds.
        let mut disk = drive_option("file=", &self.disk);
        disk.push(",format=qcow2,if=virtio,discard=unmap,detect-zeroes=unmap,cache=unsafe");
        if self.snapshot {
            disk.push(",snapshot=on");
        }
        args.push("-drive".into());
        args.push(disk);
        let mut seed = drive_option("file=", &self.seed);
        seed.push(",format=raw,if=virtio,readonly=on");
        args.push("-drive".into());
        args.push(seed);
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        let mut nic = match self.network {
            Network::User => "user,model=virtio-net-pci".to_owned(),
            Network::Restricted => "user,model=virtio-net-pci,restrict=on".to_owned(),
            Network::None => "none".to_owned(),
        };
        if self.network != Network::None {
            for rule in &self.guestfwd {
                nic.push_str(",guestfwd=");
                nic.push_str(rule);
            }
        }
        push(&["-nic", &nic]);
        if let Some(direct) = &self.kernel {
            args.extend(["-kernel".into(), direct.kernel.clone().into_os_string()]);
            if let Some(initrd) = &direct.initrd {
                args.extend(["-initrd".into(), initrd.clone().into_os_string()]);
            }
            args.extend(["-append".into(), OsString::from(&direct.cmdline)]);
        }
        args
    }
}

/// Checks a `guestfwd` rule: `tcp:[ADDRESS]:PORT-TARGET`, the target a character device
/// (`tcp:HOST:PORT`, `unix:PATH`) or `cmd:COMMAND`; no comma, which would end QEMU's option
/// and start another.
pub fn check_guestfwd(rule: &str) -> Result<(), &'static str> {
    if rule.contains(',') || rule.chars().any(char::is_control) {
        return Err("must not contain a comma or a control character");
    }
    let Some((guest, target)) = rule
        .strip_prefix("tcp:")
        .and_then(|rest| rest.split_once('-'))
    else {
        return Err(
            "expected tcp:[ADDRESS]:PORT-TARGET, e.g. tcp:10.0.2.100:80-tcp:127.0.0.1:8080",
        );
    };
    let port_ok = guest.rsplit_once(':').is_some_and(|(address, port)| {
        port.parse::<u16>().is_ok_and(|p| p > 0)
            && (address.is_empty() || address.parse::<std::net::Ipv4Addr>().is_ok())
    });
    if !port_ok {
        return Err("the guest side must be tcp:[ADDRESS]:PORT with an IPv4 address");
    }
    if !["tcp:", "unix:", "cmd:"]
        .iter()
        .any(|kind| target.starts_with(kind) && target.len() > kind.len())
    {
        return Err("the target must be tcp:HOST:PORT, unix:PATH or cmd:COMMAND");
    }
    Ok(())
}

/// `key=path` with QEMU's escaping of commas in option values (`,,`).
fn drive_option(key: &str, path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = key.as_bytes().to_vec();
    for &byte in path.as_os_str().as_bytes() {
        bytes.push(byte);
        if byte == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

/// Why a guest run did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("{binary} is not installed (Debian/Ubuntu: apt install {package})")]
    Missing {
        binary: &'static str,
        package: &'static str,
    },
    #[error("cannot start {binary}")]
    Spawn {
        binary: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU failed ({status}): {stderr}")]
    Exited { status: ExitStatus, stderr: String },
    #[error("the guest did not power off within {} s; it was stopped", .after.as_secs())]
    Timeout { after: Duration },
    #[error(
        "the guest printed nothing on its serial console for {} s under KVM; it was stopped. \
         Some KVM hosts (a paravirtual /dev/kvm such as kvm_pvm) hang stock guests: try --accel tcg",
        .after.as_secs()
    )]
    KvmSilent { after: Duration },
    #[error("the guest powered off without reporting a result")]
    NoVerdict,
    #[error("the guest's kernel panicked: {message}")]
    KernelPanic { message: String },
    #[error("interrupted; the guest was stopped")]
    Interrupted,
}

/// What one boot produced.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    /// When each phase began, from the start of QEMU.
    pub phases: Vec<(Phase, Duration)>,
    /// Warnings the guest's final stage printed.
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

/// Callbacks of a running boot: the phase changed, a console line arrived.
pub trait Watcher {
    fn phase(&mut self, phase: Phase);
    fn line(&mut self, line: &str);
}

/// Where a boot writes its console and how long it may take.
pub struct Run<'a> {
    pub machine: &'a Machine,
    pub timeout: Duration,
    pub cancel: &'a AtomicBool,
    /// The console log (appended to, up to [`MAX_LOG_BYTES`] in total).
    pub log: &'a mut dyn Write,
    pub log_written: &'a mut u64,
}

/// Boots the guest and supervises it until QEMU exits. `scanner` keeps the console's tail for
/// the caller's error messages.
pub fn boot(
    run: Run<'_>,
    scanner: &mut Scanner,
    watcher: &mut dyn Watcher,
) -> Result<Outcome, QemuError> {
    let binary = run.machine.arch.binary();
    let mut child = spawn(binary, &run.machine.args(), run.machine.arch)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill(&mut child);
        return Err(QemuError::Io {
            what: "QEMU's output pipes".into(),
            source: std::io::Error::other("not captured"),
        });
    };
    let (chunks_tx, chunks) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || pump(stdout, &chunks_tx));
    let errors = std::thread::spawn(move || collect_stderr(stderr));
    let result = supervise(&mut child, &chunks, run, scanner, watcher);
    // Every path out of `supervise` has QEMU exited or killed, so both pipes reach EOF.
    let _ = reader.join();
    let stderr = errors.join().unwrap_or_default();
    let (status, mut outcome) = result?;
    let Some(verdict) = outcome.verdict.take() else {
        if !status.success() {
            return Err(QemuError::Exited { status, stderr });
        }
        return Err(QemuError::NoVerdict);
    };
    Ok(Outcome {
        verdict,
        phases: outcome.phases,
        warnings: outcome.warnings,
        elapsed: outcome.elapsed,
    })
}

#[derive(Default)]
struct Partial {
    verdict: Option<Verdict>,
    phases: Vec<(Phase, Duration)>,
    warnings: Vec<String>,
    panic: Option<String>,
    elapsed: Duration,
}

fn spawn(binary: &'static str, args: &[OsString], arch: Arch) -> Result<Child, QemuError> {
    debug!(binary, ?args, "starting QEMU");
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            QemuError::Missing {
                binary,
                package: arch.package(),
            }
        } else {
            QemuError::Spawn { binary, source }
        }
    })
}

/// The console reader thread: chunks until EOF or until the supervisor stops listening.
fn pump(mut stdout: impl Read, chunks: &mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if chunks.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// QEMU's stderr, bounded; the rest is read and dropped so QEMU never blocks on it.
fn collect_stderr(mut stderr: impl Read) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = MAX_STDERR.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).trim().to_owned()
}

/// The loop: console in, events out, clock and cancel flag checked every [`TICK`].
fn supervise(
    child: &mut Child,
    chunks: &mpsc::Receiver<Vec<u8>>,
    run: Run<'_>,
    scanner: &mut Scanner,
    watcher: &mut dyn Watcher,
) -> Result<(ExitStatus, Partial), QemuError> {
    let started = Instant::now();
    let mut partial = Partial::default();
    loop {
        let events = match chunks.recv_timeout(TICK) {
            Ok(bytes) => {
                write_log(run.log, run.log_written, &bytes);
                scanner.feed(&bytes)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let events = scanner.finish();
                record(&mut partial, events, started, watcher);
                break;
            }
        };
        record(&mut partial, events, started, watcher);
        let elapsed = started.elapsed();
        let stop = if run.cancel.load(Ordering::Relaxed) {
            Some(QemuError::Interrupted)
        } else if let Some(message) = partial.panic.take() {
            // A panicked kernel hangs; waiting for the timeout would only waste it.
            Some(QemuError::KernelPanic { message })
        } else if elapsed >= run.timeout {
            Some(QemuError::Timeout { after: run.timeout })
        } else if run.machine.accel == Accel::Kvm
            && !scanner.seen_output()
            && elapsed >= KVM_SILENCE_LIMIT
        {
            Some(QemuError::KvmSilent { after: elapsed })
        } else {
            None
        };
        if let Some(error) = stop {
            kill(child);
            return Err(error);
        }
    }
    // The console closed: QEMU is exiting. Its exit is still bounded by the same deadline.
    let status = loop {
        let exited = child.try_wait().map_err(|source| QemuError::Io {
            what: "waiting for QEMU".into(),
            source,
        })?;
        if let Some(status) = exited {
            break status;
        }
        if run.cancel.load(Ordering::Relaxed) || started.elapsed() >= run.timeout {
            kill(child);
            return Err(if run.cancel.load(Ordering::Relaxed) {
                QemuError::Interrupted
            } else {
                QemuError::Timeout { after: run.timeout }
            });
        }
        std::thread::sleep(TICK);
    };
    partial.elapsed = started.elapsed();
    let _ = run.log.flush();
    Ok((status, partial))
}

fn record(partial: &mut Partial, events: Vec<Event>, started: Instant, watcher: &mut dyn Watcher) {
    for event in events {
        match event {
            Event::Phase(phase) => {
                if partial.phases.last().map(|(p, _)| *p) != Some(phase) {
                    partial.phases.push((phase, started.elapsed()));
                    watcher.phase(phase);
                }
            }
            // The first verdict counts; a second one cannot overrule it.
            Event::Verdict(verdict) => {
                partial.verdict.get_or_insert(verdict);
            }
            Event::Warning(text) => partial.warnings.push(text),
            Event::Panic(message) => {
                partial.panic.get_or_insert(message);
            }
            Event::Line(line) => watcher.line(&line),
        }
    }
}

fn write_log(log: &mut dyn Write, written: &mut u64, bytes: &[u8]) {
    let room = MAX_LOG_BYTES.saturating_sub(*written);
    if room == 0 {
        return;
    }
    let take = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
    if log.write_all(&bytes[..take]).is_ok() {
        *written += take as u64;
        if *written == MAX_LOG_BYTES {
            let _ = log.write_all(b"\n[cloudimg: console log truncated here]\n");
        }
    }
}

/// Kills QEMU and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            arch: Arch::X86_64,
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            network: Network::Restricted,
            guestfwd: Vec::new(),
            disk: PathBuf::from("/w/a,b.qcow2"),
            snapshot: true,
            seed: PathBuf::from("/w/seed.iso"),
            kernel: None,
        }
    }

    fn joined(machine: &Machine) -> String {
        machine
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_line_has_the_bake_devices() {
        let line = joined(&machine());
        for expected in [
            "-nodefaults",
            "-no-reboot",
            "-accel tcg -cpu max",
            "-m 1024 -smp 2",
            "-serial chardev:console",
            "file=/w/a,,b.qcow2,format=qcow2,if=virtio,discard=unmap,detect-zeroes=unmap,\
             cache=unsafe,snapshot=on",
            "file=/w/seed.iso,format=raw,if=virtio,readonly=on",
            "-nic user,model=virtio-net-pci,restrict=on",
        ] {
            assert!(line.contains(expected), "{expected:?} not in {line}");
        }
    }

    #[test]
    fn a_direct_kernel_is_loaded_by_qemu_with_its_command_line() {
        let mut machine = machine();
        assert!(!joined(&machine).contains("-kernel"));
        machine.kernel = Some(DirectKernel {
            kernel: PathBuf::from("/w/vmlinuz"),
            initrd: Some(PathBuf::from("/w/initrd,img")),
            cmdline: "root=LABEL=cloudimg-rootfs ro console=ttyS0".into(),
        });
        let args = machine.args();
        let at = |flag: &str| args.iter().position(|a| a == flag).unwrap();
        assert_eq!(args[at("-kernel") + 1], "/w/vmlinuz");
        // Not a QEMU option list: a comma in a path needs no doubling.
        assert_eq!(args[at("-initrd") + 1], "/w/initrd,img");
        assert_eq!(
            args[at("-append") + 1],
            "root=LABEL=cloudimg-rootfs ro console=ttyS0"
        );
    }

    #[test]
    fn guestfwd_rules_join_the_restricted_nic() {
        let mut machine = machine();
        machine.guestfwd = vec!["tcp:10.0.2.100:80-tcp:127.0.0.1:8080".into()];
        let line = joined(&machine);
        assert!(
            line.contains(
                "-nic user,model=virtio-net-pci,restrict=on,\
                 guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080"
            ),
            "{line}"
        );
        assert!(check_guestfwd("tcp:10.0.2.100:80-tcp:127.0.0.1:8080").is_ok());
        assert!(check_guestfwd("tcp::80-cmd:nc 127.0.0.1 8080").is_ok());
        // One byte off each: a comma smuggling another option, no protocol, a bad port.
        assert!(check_guestfwd("tcp:10.0.2.100:80-tcp:127.0.0.1:8080,hostfwd=x").is_err());
        assert!(check_guestfwd("udp:10.0.2.100:80-tcp:127.0.0.1:8080").is_err());
        assert!(check_guestfwd("tcp:10.0.2.100:8O-tcp:127.0.0.1:8080").is_err());
        assert!(check_guestfwd("tcp:10.0.2.100:80-").is_err());
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_no_network_means_no_nic() {
        let mut machine = machine();
        machine.accel = Accel::Kvm;
        machine.network = Network::None;
        machine.snapshot = false;
        let line = joined(&machine);
        assert!(line.contains("-accel kvm -cpu host"), "{line}");
        assert!(line.contains("-nic none"), "{line}");
        assert!(!line.contains("snapshot"), "{line}");
    }

    #[test]
    fn arm64_boots_with_uefi_on_virt() {
        let mut machine = machine();
        machine.arch = Arch::Aarch64;
        let line = joined(&machine);
        assert!(
            line.contains(&format!("-machine virt -bios {AARCH64_FIRMWARE}")),
            "{line}"
        );
        assert_eq!(Arch::Aarch64.binary(), "qemu-system-aarch64");
    }

    #[test]
    fn explicit_accelerators_are_kept() {
        assert_eq!(choose_accel(AccelChoice::Tcg, Arch::X86_64).0, Accel::Tcg);
        assert_eq!(choose_accel(AccelChoice::Kvm, Arch::X86_64).0, Accel::Kvm);
    }

    #[test]
    fn a_missing_binary_names_the_package() {
        let error = spawn("cloudimg-no-such-qemu", &[], Arch::X86_64).unwrap_err();
        assert!(
            error.to_string().contains("apt install qemu-system-x86"),
            "{error}"
        );
    }
}
