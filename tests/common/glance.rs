//! The real Glance API the upload tests talk to (`.ci/run` starts one from
//! `../shared/glance/glance-ci.sh` and exports its URL as `CLOUDIMG_TEST_GLANCE`).
//!
//! Without it a test skips loudly on a developer machine; under CI (`CLOUDIMG_REQUIRE_TOOLS`)
//! it fails instead, so the upload tests cannot be skipped silently.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

/// A name no other test or run uses (the test Glance outlives test runs).
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cloudimg-test-{test}-{}-{nanos}", std::process::id())
}

/// The test Glance's URL, or `None` (after saying why) when none is configured.
pub fn url() -> Option<String> {
    match std::env::var("CLOUDIMG_TEST_GLANCE") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
        _ => {
            if std::env::var_os("CLOUDIMG_REQUIRE_TOOLS").is_some() {
                panic!(
                    "CLOUDIMG_TEST_GLANCE is not set but tools are required \
                     (CLOUDIMG_REQUIRE_TOOLS): start Glance as .ci/run does"
                );
            }
            eprintln!(
                "SKIPPED: CLOUDIMG_TEST_GLANCE is not set; start a Glance with \
                 ../shared/glance/glance-ci.sh and export its URL to run this test"
            );
            None
        }
    }
}

/// Taken by every test that talks to the test Glance. Its SQLite database answers concurrent
/// writes with "database is locked" (HTTP 500); a production Glance on MySQL does not, so the
/// tests take turns rather than retry around the test server's limits.
pub fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    // A test that panicked while holding the lock leaves nothing to repair.
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Skips the calling test (returns from it) unless a test Glance is configured; binds its URL
/// and holds the test's turn with it until the end of the test.
#[macro_export]
macro_rules! require_glance {
    ($url:ident) => {
        let Some($url) = $crate::common::glance::url() else {
            return;
        };
        let _turn = $crate::common::glance::turn();
    };
}

/// `GET` of a Glance API path with curl (an independent client), as JSON; `None` for 404.
pub fn get(url: &str, path: &str) -> Option<Value> {
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{url}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, code) = text.rsplit_once('\n').expect("curl status line");
    match code {
        "404" => None,
        "200" => Some(serde_json::from_str(body).expect("Glance JSON")),
        other => panic!("GET {path}: HTTP {other}: {body}"),
    }
}

/// Every image called `name`, hidden ones included.
pub fn images_named(url: &str, name: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for hidden in ["false", "true"] {
        let list =
            get(url, &format!("/v2/images?name={name}&os_hidden={hidden}")).expect("image list");
        found.extend(list["images"].as_array().cloned().unwrap_or_default());
    }
    found
}

/// Every image tagged `tag`, hidden ones included, as (id, status, os_hidden, updated_at),
/// sorted: equal before and after a run that changed nothing there.
pub fn images_tagged(url: &str, tag: &str) -> Vec<(String, String, bool, String)> {
    let mut found = Vec::new();
    for hidden in ["false", "true"] {
        let list =
            get(url, &format!("/v2/images?tag={tag}&os_hidden={hidden}")).expect("image list");
        for image in list["images"].as_array().cloned().unwrap_or_default() {
            found.push((
                image["id"].as_str().unwrap_or_default().to_owned(),
                image["status"].as_str().unwrap_or_default().to_owned(),
                image["os_hidden"].as_bool().unwrap_or_default(),
                image["updated_at"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    found.sort();
    found
}

/// Deletes the images a test made when the test ends, passed or not, so that a long-lived CI
/// Glance does not fill up.
pub struct Cleanup {
    url: String,
    ids: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn new(url: &str) -> Cleanup {
        Cleanup {
            url: url.to_owned(),
            ids: Mutex::new(Vec::new()),
        }
    }

    /// Deletes `id` at the end of the test; returns it for convenience.
    pub fn track(&self, id: &str) -> String {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_owned());
        id.to_owned()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in self
            .ids
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-X", "DELETE"])
                .arg(format!("{}/v2/images/{id}", self.url))
                .status();
        }
    }
}
