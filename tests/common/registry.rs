//! A real OCI registry for the push tests: Debian's `docker-registry` (the CNCF distribution
//! registry 2.8) on 127.0.0.1, storing under a temporary folder, with deletes enabled and,
//! optionally, htpasswd basic auth or token auth (a [`TokenServer`] as the realm). `skopeo` is
//! the independent client that judges a push.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;

use super::token::{self, TokenServer};

/// User and password of the registry started with auth.
pub const USER: &str = "lab";
pub const PASSWORD: &str = "s3cret-pass";
/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Registry {
    pub dir: TempDir,
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// A containers auth file with the credentials (when started with auth).
    pub auth_file: Option<PathBuf>,
    /// The token server (with [`Auth::Token`]).
    pub token_server: Option<TokenServer>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the test registry authenticates clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// htpasswd (bcrypt) basic auth for [`USER`].
    Basic,
    /// Token auth: a [`TokenServer`] is the realm; it checks [`USER`]'s basic credentials.
    Token,
}

/// A containers auth file in `dir` holding [`USER`]'s credentials for `addr`.
fn write_auth_file(dir: &Path, addr: &str) -> PathBuf {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let file = dir.join("auth.json");
    std::fs::write(
        &file,
        format!(r#"{{"auths": {{"{addr}": {{"auth": "{token}"}}}}}}"#),
    )
    .unwrap();
    file
}

impl Registry {
    /// Starts a registry; with `auth`, htpasswd (bcrypt) basic auth for [`USER`].
    pub fn start(auth: bool) -> Registry {
        Registry::start_with(if auth { Auth::Basic } else { Auth::None })
    }

    pub fn start_with(auth: Auth) -> Registry {
        let dir = TempDir::new().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut auth_file = None;
        let mut token_server = None;
        match auth {
            Auth::None => {}
            Auth::Basic => {
                let output = Command::new("htpasswd")
                    .args(["-Bbn", USER, PASSWORD])
                    .output()
                    .expect("run htpasswd");
                assert!(output.status.success(), "htpasswd failed");
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, &output.stdout).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: cloudimg-test\n    path: {}\n",
                    htpasswd.display()
                ));
                auth_file = Some(write_auth_file(dir.path(), &addr));
            }
            Auth::Token => {
                let server = TokenServer::start(dir.path(), USER, PASSWORD);
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                     rootcertbundle: {}\n",
                    server.realm(),
                    token::SERVICE,
                    token::ISSUER,
                    server.cert.display()
                ));
                auth_file = Some(write_auth_file(dir.path(), &addr));
                token_server = Some(server);
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            dir,
            child,
            addr,
            auth_file,
            token_server,
        };
        let started = Instant::now();
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "docker-registry did not listen: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `docker://127.0.0.1:<port>/<path>`.
    pub fn reference(&self, path: &str) -> String {
        format!("docker://{}/{path}", self.addr)
    }

    /// skopeo's credential flags for this registry.
    fn creds(&self, flag: &str) -> Vec<String> {
        match self.auth_file {
            Some(_) => vec![flag.to_owned(), format!("{USER}:{PASSWORD}")],
            None => Vec::new(),
        }
    }

    /// `skopeo inspect` of `path` (`repo:tag`): `None` when it fails (no such tag).
    pub fn inspect(&self, path: &str, raw: bool) -> Option<Value> {
        let mut command = Command::new("skopeo");
        command
            .arg("inspect")
            .arg("--tls-verify=false")
            .args(self.creds("--creds"));
        if raw {
            command.arg("--raw");
        }
        let output = command
            .arg(self.reference(path))
            .output()
            .expect("run skopeo");
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).expect("skopeo JSON"))
    }

    /// The tags of `repository`, sorted, by `skopeo list-tags` (none when it has none).
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let output = Command::new("skopeo")
            .args(["list-tags", "--tls-verify=false"])
            .args(self.creds("--creds"))
            .arg(self.reference(repository))
            .output()
            .expect("run skopeo");
        if !output.status.success() {
            return Vec::new();
        }
        let listed: Value = serde_json::from_slice(&output.stdout).expect("skopeo JSON");
        let mut tags: Vec<String> = listed["Tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// Blob files in the registry's storage (what uploads add; a push that sends nothing leaves
    /// the count alone).
    pub fn stored_blobs(&self) -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| match e.file_type() {
                            Ok(t) if t.is_dir() => count(&e.path()),
                            Ok(_) if e.file_name() == "data" => 1,
                            _ => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(&self.dir.path().join("data/docker/registry/v2/blobs"))
    }

    /// `skopeo copy docker://…/<path> dir:<out>`.
    pub fn pull(&self, path: &str, out: &Path) -> Output {
        self.pull_platform(path, None, out)
    }

    /// [`Registry::pull`] of the image for `arch` (linux) when `path` names an image index.
    pub fn pull_platform(&self, path: &str, arch: Option<&str>, out: &Path) -> Output {
        let platform: Vec<&str> = match arch {
            Some(arch) => vec!["--override-os", "linux", "--override-arch", arch],
            None => Vec::new(),
        };
        let output = Command::new("skopeo")
            .args(&platform)
            .args(["copy", "--src-tls-verify=false"])
            .args(self.creds("--src-creds"))
            .arg(self.reference(path))
            .arg(format!("dir:{}", out.display()))
            .output()
            .expect("run skopeo");
        assert!(
            output.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
