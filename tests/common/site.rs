//! A loopback site for tests that run the binary: a generated mirror, its HTTP server, a keyring
//! trusting the test signing key, and helpers to run `cloudimg` against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::bin::cloudimg_in;
use super::mirror::{Knobs, Mirror, MirrorBuilder, Release};
use super::pgp;
use super::server::Server;

/// Released serials of every generated site, oldest first.
pub const RELEASED: [&str; 2] = ["20240821", "20241004.1"];
/// Daily serials of every generated site.
pub const DAILY: [&str; 1] = ["20241010"];

/// A mirror, its server and a keyring file holding the test signing key.
pub struct Site {
    pub _dir: TempDir,
    pub mirror: Mirror,
    pub server: Server,
    pub keyring: PathBuf,
}

impl Site {
    /// The upstream file of noble's released `serial` for `arch`.
    pub fn released_image(&self, arch: &str, serial: &str) -> PathBuf {
        self.mirror.root().join(Mirror::image_path(
            crate::common::mirror::Stream::Released,
            &Release::NOBLE,
            arch,
            serial,
        ))
    }
}

pub fn build_site(knobs: Knobs) -> Site {
    build_site_for(knobs, &["amd64"], &DAILY)
}

/// A site whose noble is built for `arches`, with `daily` serials in the daily stream.
pub fn build_site_for(knobs: Knobs, arches: &[&str], daily: &[&str]) -> Site {
    let dir = super::scratch::tempdir();
    let mirror = MirrorBuilder::new(dir.path().join("mirror"))
        .releases(&[Release::NOBLE])
        .arches(arches)
        .released_serials(&RELEASED)
        .daily_serials(daily)
        .knobs(knobs)
        .build()
        .expect("mirror");
    let keyring = dir.path().join("trusted.asc");
    pgp::signing_key().write_public_key(&keyring).unwrap();
    let server = Server::start(mirror.root());
    Site {
        _dir: dir,
        mirror,
        server,
        keyring,
    }
}

/// One well-formed mirror shared by the tests that only read it.
pub fn shared_site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| build_site(Knobs::default()))
}

/// The binary reading the site, trusting its key, with a cache of its own below the site's
/// folder (see [`cloudimg_in`]).
pub fn cloudimg(site: &Site, args: &[&str]) -> Command {
    let mut command = cloudimg_in(site._dir.path());
    command
        .arg("--mirror")
        .arg(site.server.url().as_str())
        .arg("--keyring")
        .arg(&site.keyring)
        .args(["--retries", "2", "--stall-timeout", "2"])
        .args(args)
        .env_remove("CLOUDIMG_MIRROR")
        .env_remove("CLOUDIMG_KEYRING")
        .env("NO_COLOR", "1");
    command
}

pub fn run(site: &Site, args: &[&str]) -> Output {
    cloudimg(site, args).output().expect("run cloudimg")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "cloudimg failed: {}",
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

pub use super::tools::names;

/// URL path of the newest released noble file of a kind, as discovery resolves it.
pub fn file_url_path(site: &Site, ftype: &str) -> String {
    let listing = json(&run(site, &["--json", "list", "noble"]));
    let url = listing["listing"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["ftype"] == ftype)
        .unwrap_or_else(|| panic!("{ftype} listed"))["url"]
        .as_str()
        .unwrap()
        .to_owned();
    url::Url::parse(&url).unwrap().path().to_owned()
}

/// The JSON summary a `sync` or `mirror` run printed, whatever its exit status.
pub fn summary(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("JSON summary expected; stderr: {}", stderr(output)))
}

/// The entry called `name` in such a summary.
pub fn outcome<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {summary}"))
}
