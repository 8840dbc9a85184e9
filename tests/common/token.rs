//! A registry token server for the push tests: the `WWW-Authenticate: Bearer` dance against a
//! real registry. Debian's docker-registry (distribution 2.8) is configured with token auth and
//! this server as its realm; it checks basic credentials and answers with a JWT granting the
//! scopes asked for, signed RS256 by a key whose self-signed certificate (made with `openssl`, a
//! fixture maker) is the registry's `rootcertbundle` and travels in the token's `x5c` header.
//!
//! Enough of HTTP for a token client: one `GET /token?service=…&scope=…` per connection,
//! `Connection: close`. Every request is logged (its scopes and whether it authenticated) so a
//! test can see what the client asked for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;

/// The registry's name for itself in tokens (`aud`) and challenges (`service`).
pub const SERVICE: &str = "cloudimg-test-registry";
/// Who signs the tokens (`iss`); the registry trusts only this issuer.
pub const ISSUER: &str = "cloudimg-test-token-issuer";
/// How long a token is valid.
const TOKEN_SECONDS: u64 = 300;
/// Largest request head read.
const MAX_HEAD: u64 = 16 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One token request as the server saw it.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The `scope` parameters, in order (`repository:lab/noble:pull,push`).
    pub scopes: Vec<String>,
    pub service: Option<String>,
    /// Whether it carried the right basic credentials (a token was issued).
    pub granted: bool,
}

pub struct TokenServer {
    pub addr: SocketAddr,
    /// The certificate the registry trusts (`rootcertbundle`).
    pub cert: PathBuf,
    log: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// What signing needs, shared with the acceptor thread.
struct Issuer {
    key: PathBuf,
    /// The certificate, DER, base64 (standard, as `x5c` wants).
    x5c: String,
    /// `user:password` accepted.
    credentials: String,
}

impl TokenServer {
    /// Makes the signing key and certificate in `dir` and starts serving, accepting `user` /
    /// `password`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cloudimg test token issuer",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        let der = openssl(&["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"]);
        let issuer = Arc::new(Issuer {
            key,
            x5c: STANDARD.encode(der),
            credentials: format!("{user}:{password}"),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::spawn({
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(&issuer, &log, stream);
                    }
                }
            }
        });
        TokenServer {
            addr,
            cert,
            log,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// The realm a registry names in its challenges.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Runs `openssl` with `args`; its stdout.
fn openssl(args: &[&str]) -> Vec<u8> {
    super::tools::run(Command::new("openssl").args(args)).stdout
}

/// Answers one connection: a token for the right credentials, 401 otherwise.
fn serve(issuer: &Issuer, log: &Mutex<Vec<TokenRequest>>, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let Some((target, authorization)) = read_head(&stream) else {
        return;
    };
    let url = url::Url::parse(&format!("http://token{target}")).expect("request target");
    let mut request = TokenRequest {
        scopes: Vec::new(),
        service: None,
        granted: false,
    };
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "scope" => request.scopes.push(value.into_owned()),
            "service" => request.service = Some(value.into_owned()),
            _ => {}
        }
    }
    let expected = format!("Basic {}", STANDARD.encode(&issuer.credentials));
    request.granted = url.path() == "/token" && authorization.as_deref() == Some(&expected);
    let (status, body) = if request.granted {
        let token = issuer.token(&request.scopes);
        (
            "200 OK",
            json!({"token": token, "access_token": token, "expires_in": TOKEN_SECONDS}).to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            json!({"details": "bad credentials"}).to_string(),
        )
    };
    log.lock().unwrap_or_else(|p| p.into_inner()).push(request);
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The request target and the `Authorization` header of a request head.
fn read_head(stream: &TcpStream) -> Option<(String, Option<String>)> {
    let mut reader = BufReader::new(stream.take(MAX_HEAD));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_owned();
    let mut authorization = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    Some((target, authorization))
}

impl Issuer {
    /// A JWT granting exactly the actions `scopes` ask for.
    fn token(&self, scopes: &[String]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<_> = scopes
            .iter()
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": ISSUER,
            "sub": self.credentials.split(':').next().unwrap_or_default(),
            "aud": SERVICE,
            "exp": now + TOKEN_SECONDS,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", std::process::id()),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl dgst");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let signed = child.wait_with_output().unwrap();
        assert!(signed.status.success(), "openssl dgst -sign failed");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signed.stdout))
    }
}
