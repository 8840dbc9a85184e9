//! A small HTTP/1.1 server on 127.0.0.1 serving a directory tree, with faults tests can inject.
//!
//! Enough of HTTP for the client under test: GET and HEAD, `Range: bytes=N-` / `N-M` (206 with
//! Content-Range, 416 past the end), ETag (`"<size hex>-<mtime ns hex>"`) and Last-Modified,
//! `If-None-Match` / `If-Modified-Since` (304), `If-Range`, a directory served by its
//! `index.html`, 404 otherwise. One thread per connection, `Connection: close` on every response.
//!
//! Faults are set per URL path at runtime ([`Server::inject`]) and apply to the next requests of
//! that path; rewriting a file under the root changes its ETag like a real mirror update would.
//! Every request is logged ([`Server::log`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use url::Url;

/// Largest request head accepted; the client sends a few hundred bytes.
const MAX_HEAD: usize = 64 << 10;

/// Body bytes written per `write_all`.
const SEND_BLOCK: usize = 64 << 10;

/// How long a connection may sit silent before the server gives up on it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the server saw and answered it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogEntry {
    pub method: String,
    /// The decoded URL path, e.g. `/noble/current/SHA256SUMS`.
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub status: u16,
    /// Body bytes handed to the socket (counted before each write, so a reader that has seen
    /// the bytes always sees the count).
    pub bytes_sent: u64,
}

/// Misbehaviour to inject for a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Announce the full Content-Length, send this many body bytes, then close the connection.
    DropAfter(u64),
    /// Send this many body bytes, then go silent for `pause` before going on.
    StallAfter { bytes: u64, pause: Duration },
    /// Answer with this status (and `Retry-After` if given) instead of the file.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Answer a Range request with 200 and the whole file.
    IgnoreRange,
    /// Flip every bit of the byte at this file offset when sending it.
    CorruptByte(u64),
    /// Send the body one byte at a time, this long apart (a slow-drip server).
    Drip(Duration),
    /// Answer 200 with a generated body instead of the file (oversized-document servers).
    Generated(Generated),
}

/// A generated body: `head`, then `row` repeated (`{i}` in it replaced by the row's number),
/// then `tail`. With `rows: None` the body is endless and sent without Content-Length; the
/// server stops when the client hangs up or after [`ENDLESS_CAP`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub head: String,
    pub row: String,
    pub rows: Option<u64>,
    pub tail: String,
}

/// Where an "endless" body stops anyway, so a test server never runs away.
pub const ENDLESS_CAP: u64 = 1 << 30;

impl Generated {
    /// An Apache FancyIndexing page of `rows` links (`None`: endless).
    pub fn listing(rows: Option<u64>) -> Generated {
        Generated {
            head: "<html><body><pre>".into(),
            row: "<a href=\"file-{i}.img\">file-{i}.img</a>   2024-08-21 10:00  584M  \n".into(),
            rows,
            tail: "</pre></body></html>\n".into(),
        }
    }

    /// A listing of at least `bytes` bytes.
    pub fn listing_of_size(bytes: u64) -> Generated {
        let row = Generated::listing(None).row.len() as u64;
        Generated::listing(Some(bytes / row + 1))
    }

    fn row(&self, index: u64) -> String {
        self.row.replace("{i}", &index.to_string())
    }

    /// The exact length, when finite.
    fn length(&self) -> Option<u64> {
        let rows = self.rows?;
        let mut length = (self.head.len() + self.tail.len()) as u64;
        for index in 0..rows {
            length += self.row(index).len() as u64;
        }
        Some(length)
    }
}

/// For how many of the next requests of the path a fault applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    Once,
    Next(u32),
    Always,
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    /// `None`: forever.
    remaining: Option<u32>,
}

#[derive(Default)]
struct State {
    log: Vec<LogEntry>,
    faults: HashMap<String, Vec<Armed>>,
}

struct Shared {
    root: PathBuf,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the whole test down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The faults for this request of `path`, consuming one use of each.
    fn take_faults(&self, path: &str) -> Vec<Fault> {
        let mut state = self.state();
        let Some(armed) = state.faults.get_mut(path) else {
            return Vec::new();
        };
        let active = armed.iter().map(|armed| armed.fault.clone()).collect();
        for armed in armed.iter_mut() {
            if let Some(remaining) = &mut armed.remaining {
                *remaining = remaining.saturating_sub(1);
            }
        }
        armed.retain(|armed| armed.remaining != Some(0));
        active
    }

    fn record(&self, entry: LogEntry) -> usize {
        let mut state = self.state();
        state.log.push(entry);
        state.log.len() - 1
    }

    fn add_sent(&self, index: usize, bytes: u64) {
        if let Some(entry) = self.state().log.get_mut(index) {
            entry.bytes_sent += bytes;
        }
    }
}

/// The running server; stops accepting on drop.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: impl Into<PathBuf>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            root: root.into(),
            state: Mutex::new(State::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::spawn({
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || serve_connection(&shared, stream));
                }
            }
        });
        Server {
            addr,
            shared,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("server URL")
    }

    /// The URL of a path under the root, e.g. `url_for("noble/SHA256SUMS")`.
    pub fn url_for(&self, path: &str) -> Url {
        self.url()
            .join(path.trim_start_matches('/'))
            .expect("URL path")
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.state().log.clone()
    }

    /// The requests so far for one path (`/a/b` or `a/b`).
    pub fn requests_for(&self, path: &str) -> Vec<LogEntry> {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.log()
            .into_iter()
            .filter(|entry| entry.path == path)
            .collect()
    }

    pub fn clear_log(&self) {
        self.shared.state().log.clear();
    }

    /// Arms `fault` for the next `times` requests of `path` (`/a/b` or `a/b`). Several faults
    /// may be armed for one path; they apply together.
    pub fn inject(&self, path: &str, fault: Fault, times: Times) {
        let remaining = match times {
            Times::Once => Some(1),
            Times::Next(count) => Some(count),
            Times::Always => None,
        };
        if remaining == Some(0) {
            return;
        }
        let path = format!("/{}", path.trim_start_matches('/'));
        self.shared
            .state()
            .faults
            .entry(path)
            .or_default()
            .push(Armed { fault, remaining });
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A parsed request head.
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).cloned()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.take(MAX_HEAD as u64));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let path = percent_decode(target.split(['?', '#']).next()?);
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| byte == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                index += 3;
            }
            None => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file a URL path names: refuses `..`, serves a directory's `index.html`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|component| !matches!(component, Component::Normal(_)))
    {
        return None;
    }
    let mut file = root.join(relative);
    if file.is_dir() {
        file = file.join("index.html");
    }
    file.is_file().then_some(file)
}

/// `bytes=N-` or `bytes=N-M` against a file of `size` bytes: `Ok(Some((first, last)))`,
/// `Err(())` when unsatisfiable, `Ok(None)` when not a form we serve (whole file then).
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let Ok(first) = first.trim().parse::<u64>() else {
        return Ok(None);
    };
    if first >= size {
        return Err(());
    }
    let last = match last.trim() {
        "" => size - 1,
        last => match last.parse::<u64>() {
            Ok(last) if last >= first => last.min(size - 1),
            _ => return Ok(None),
        },
    };
    Ok(Some((first, last)))
}

fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let Some(request) = read_request(&stream) else {
        return;
    };
    let faults = shared.take_faults(&request.path);
    let mut entry = LogEntry {
        method: request.method.clone(),
        path: request.path.clone(),
        range: request.header("range"),
        if_range: request.header("if-range"),
        if_none_match: request.header("if-none-match"),
        if_modified_since: request.header("if-modified-since"),
        ..LogEntry::default()
    };
    let reply =
        |shared: &Shared, stream: &mut TcpStream, mut entry: LogEntry, status: u16, extra: &str| {
            entry.status = status;
            shared.record(entry);
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n",
                reason(status)
            );
            let _ = stream.write_all(head.as_bytes());
        };

    if let Some((status, retry_after)) = faults.iter().find_map(|fault| match fault {
        Fault::Status {
            status,
            retry_after,
        } => Some((*status, retry_after.clone())),
        _ => None,
    }) {
        let extra = retry_after
            .map(|value| format!("Retry-After: {value}\r\n"))
            .unwrap_or_default();
        return reply(shared, &mut stream, entry, status, &extra);
    }
    if request.method != "GET" && request.method != "HEAD" {
        return reply(shared, &mut stream, entry, 405, "Allow: GET, HEAD\r\n");
    }
    if let Some(generated) = faults.iter().find_map(|fault| match fault {
        Fault::Generated(generated) => Some(generated.clone()),
        _ => None,
    }) {
        entry.status = 200;
        let index = shared.record(entry);
        return send_generated(shared, index, &mut stream, &generated);
    }
    let Some(path) = resolve(&shared.root, &request.path) else {
        return reply(shared, &mut stream, entry, 404, "");
    };
    let Ok(mut file) = File::open(&path) else {
        return reply(shared, &mut stream, entry, 404, "");
    };
    let Ok(metadata) = file.metadata() else {
        return reply(shared, &mut stream, entry, 500, "");
    };
    let size = metadata.len();
    let mtime = metadata.modified().unwrap_or(UNIX_EPOCH);
    let nanos = mtime
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0);
    let etag = format!("\"{size:x}-{nanos:x}\"");
    let last_modified = httpdate::fmt_http_date(mtime);
    let validators = format!("ETag: {etag}\r\nLast-Modified: {last_modified}\r\n");

    let not_modified = match (&entry.if_none_match, &entry.if_modified_since) {
        (Some(tags), _) => tags
            .split(',')
            .any(|tag| tag.trim() == etag || tag.trim() == "*"),
        (None, Some(since)) => httpdate::parse_http_date(since)
            .map(|since| truncate_to_seconds(mtime) <= since)
            .unwrap_or(false),
        (None, None) => false,
    };
    if not_modified {
        return reply(shared, &mut stream, entry, 304, &validators);
    }

    let ignore_range = faults.contains(&Fault::IgnoreRange)
        || entry
            .if_range
            .as_ref()
            .is_some_and(|value| *value != etag && *value != last_modified);
    let range = match (&entry.range, ignore_range) {
        (Some(value), false) => parse_range(value, size),
        _ => Ok(None),
    };
    let (status, first, last) = match range {
        Ok(Some((first, last))) => (206, first, last),
        Ok(None) => (200, 0, size.saturating_sub(1)),
        Err(()) => {
            let extra = format!("Content-Range: bytes */{size}\r\n{validators}");
            return reply(shared, &mut stream, entry, 416, &extra);
        }
    };
    let length = if size == 0 { 0 } else { last - first + 1 };
    let content_type = if path.extension().is_some_and(|ext| ext == "html") {
        "text/html; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {length}\r\nContent-Type: {content_type}\r\n\
         Accept-Ranges: bytes\r\nConnection: close\r\n{validators}",
        reason(status)
    );
    if status == 206 {
        head.push_str(&format!("Content-Range: bytes {first}-{last}/{size}\r\n"));
    }
    head.push_str("\r\n");
    entry.status = status;
    let index = shared.record(entry);
    if stream.write_all(head.as_bytes()).is_err() || request.method == "HEAD" {
        return;
    }
    if file.seek(SeekFrom::Start(first)).is_err() {
        return;
    }
    send_body(
        shared,
        index,
        &mut stream,
        &mut file,
        first,
        length,
        &faults,
    );
}

/// Streams `length` bytes of `file` (positioned at file offset `first`), applying faults.
fn send_body(
    shared: &Shared,
    index: usize,
    stream: &mut TcpStream,
    file: &mut File,
    first: u64,
    length: u64,
    faults: &[Fault],
) {
    let drop_after = faults.iter().find_map(|fault| match fault {
        Fault::DropAfter(bytes) => Some(*bytes),
        _ => None,
    });
    let mut stall = faults.iter().find_map(|fault| match fault {
        Fault::StallAfter { bytes, pause } => Some((*bytes, *pause)),
        _ => None,
    });
    let corrupt: Vec<u64> = faults
        .iter()
        .filter_map(|fault| match fault {
            Fault::CorruptByte(offset) => Some(*offset),
            _ => None,
        })
        .collect();
    let drip = faults.iter().find_map(|fault| match fault {
        Fault::Drip(interval) => Some(*interval),
        _ => None,
    });
    let limit = drop_after.map_or(length, |bytes| bytes.min(length));
    let mut sent = 0u64;
    let mut buffer = vec![0u8; SEND_BLOCK];
    while sent < limit {
        if let Some((_, pause)) = stall.filter(|(at, _)| *at == sent) {
            let _ = stream.flush();
            std::thread::sleep(pause);
            stall = None;
        }
        // Stop each block at the drop or stall point so they happen at the exact byte.
        let mut block_end = limit;
        if let Some((at, _)) = stall.filter(|(at, _)| *at > sent) {
            block_end = block_end.min(at);
        }
        let block = if drip.is_some() { 1 } else { SEND_BLOCK as u64 };
        let want = (block_end - sent).min(block) as usize;
        let Ok(read) = file.read(&mut buffer[..want]) else {
            return;
        };
        if read == 0 {
            break;
        }
        let block = &mut buffer[..read];
        for offset in &corrupt {
            let at = offset.wrapping_sub(first + sent);
            if at < read as u64 {
                block[at as usize] ^= 0xff;
            }
        }
        shared.add_sent(index, read as u64);
        if stream.write_all(block).is_err() {
            return;
        }
        sent += read as u64;
        if let Some(interval) = drip {
            let _ = stream.flush();
            std::thread::sleep(interval);
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Sends a generated body (see [`Generated`]), until done, the client hangs up, or the cap.
fn send_generated(shared: &Shared, index: usize, stream: &mut TcpStream, body: &Generated) {
    let length = body
        .length()
        .map(|length| format!("Content-Length: {length}\r\n"))
        .unwrap_or_default();
    let head =
        format!("HTTP/1.1 200 OK\r\n{length}Content-Type: text/html\r\nConnection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut block = body.head.clone();
    let mut sent = 0u64;
    let mut row = 0u64;
    loop {
        let finished = body.rows.is_some_and(|rows| row >= rows) || sent >= ENDLESS_CAP;
        if finished {
            block.push_str(&body.tail);
        } else {
            block.push_str(&body.row(row));
            row += 1;
        }
        if finished || block.len() >= SEND_BLOCK {
            shared.add_sent(index, block.len() as u64);
            if stream.write_all(block.as_bytes()).is_err() {
                return;
            }
            sent += block.len() as u64;
            block.clear();
        }
        if finished {
            break;
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Last-Modified has one-second resolution; compare like with like.
fn truncate_to_seconds(time: SystemTime) -> SystemTime {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
