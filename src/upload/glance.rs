//! The Glance v2 images API: create, upload or stage-and-import data, look up, hide,
//! deactivate and delete images.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{Map, Value};
use url::Url;

use super::http::{Http, Secret, Streamed};
use super::keystone;
use super::target::{Auth, GlanceTarget};
use super::UploadError;
use crate::fetch::ClientConfig;
use crate::io::progress::Reporter;

/// Glance's media type for JSON-patch image updates.
const PATCH_TYPE: &str = "application/openstack-images-v2.1-json-patch";

/// Most list pages followed for one query: with the default page size enough for 100 000
/// images, bounded against a server whose `next` links loop.
const MAX_PAGES: usize = 1000;

/// The image attributes the upload and sync code read. Everything else (custom properties,
/// `kernel_id`, `os_glance_failed_import`, …) is in `properties`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub os_hash_algo: Option<String>,
    #[serde(default)]
    pub os_hash_value: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub os_hidden: bool,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(flatten)]
    pub properties: Map<String, Value>,
}

impl Image {
    /// A string property (`kernel_id`, `os_glance_failed_import`, custom ones).
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(Value::as_str)
    }
}

/// Which images to list. Empty fields do not filter.
#[derive(Clone, Debug, Default)]
pub struct ImageFilter {
    pub name: Option<String>,
    /// Images carrying every one of these tags.
    pub tags: Vec<String>,
    /// Hidden images (`os_hidden=true`) are left out of listings unless asked for.
    pub hidden: bool,
    /// Images per request; `None` for [`DEFAULT_PAGE_SIZE`]. All pages are read either way.
    pub page_size: Option<u32>,
}

/// Images asked for per list request.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

pub use crate::catalog::user::Retire;

/// An authenticated session with one Glance.
pub struct Glance {
    http: Http,
    /// Glance's root, ending in `/` (the `v2/…` paths are joined to it).
    root: Url,
    token: Option<Secret>,
}

impl Glance {
    /// Resolves `target`: asks Keystone for a token (and the catalog's image endpoint) when
    /// configured so; otherwise uses the given endpoint and token as they are. Sends nothing to
    /// Glance itself.
    pub async fn connect(
        target: &GlanceTarget,
        config: &ClientConfig,
    ) -> Result<Glance, UploadError> {
        let http = Http::new(&target.client_config(config)?)?;
        let (token, catalog) = match &target.auth {
            Auth::None => (None, None),
            Auth::Token { token, auth_url } => {
                let catalog = match (&target.endpoint, auth_url) {
                    (None, Some(auth_url)) => {
                        Some(keystone::catalog(&http, auth_url, token).await?)
                    }
                    _ => None,
                };
                (Some(token.clone()), catalog)
            }
            Auth::Keystone {
                auth_url,
                credentials,
            } => {
                let (token, catalog) = keystone::authenticate(&http, auth_url, credentials).await?;
                (Some(token), Some(catalog))
            }
        };
        let endpoint = match (&target.endpoint, catalog) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(catalog)) => keystone::endpoint(
                &catalog,
                "image",
                &target.interface,
                target.region.as_deref(),
            )?,
            (None, None) => return Err(super::Settings::NoGlance.into()),
        };
        let root = root_url(&endpoint);
        tracing::debug!(glance = %root, authenticated = token.is_some(), "Glance session");
        Ok(Glance { http, root, token })
    }

    /// Glance's root URL, as requests use it.
    pub fn root(&self) -> &Url {
        &self.root
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.root.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // The root ends in '/': drop the empty last segment before appending.
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    async fn call(
        &self,
        method: Method,
        url: &Url,
        body: Option<(&'static str, Bytes)>,
        idempotent: bool,
    ) -> Result<super::http::Reply, UploadError> {
        self.http
            .call(method, url, self.token.as_ref(), body, idempotent)
            .await
    }

    /// `GET /v2/images/{id}`.
    pub async fn image(&self, id: &str) -> Result<Image, UploadError> {
        let url = self.url(&["v2", "images", id]);
        self.call(Method::GET, &url, None, true)
            .await?
            .json(&Method::GET, &url)
    }

    /// Every image matching `filter`, following Glance's pagination.
    pub async fn images(&self, filter: &ImageFilter) -> Result<Vec<Image>, UploadError> {
        #[derive(serde::Deserialize)]
        struct Page {
            images: Vec<Image>,
            #[serde(default)]
            next: Option<String>,
        }
        let mut url = self.url(&["v2", "images"]);
        {
            let mut query = url.query_pairs_mut();
            let limit = filter.page_size.unwrap_or(DEFAULT_PAGE_SIZE).max(1);
            query.append_pair("limit", &limit.to_string());
            if let Some(name) = &filter.name {
                query.append_pair("name", name);
            }
            for tag in &filter.tags {
                query.append_pair("tag", tag);
            }
            if filter.hidden {
                query.append_pair("os_hidden", "true");
            }
        }
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Page = self
                .call(Method::GET, &url, None, true)
                .await?
                .json(&Method::GET, &url)?;
            found.extend(page.images);
            // `next` is Glance's own path for the next page; only its query (the marker) is
            // taken, so a path prefix of a proxied endpoint is neither lost nor doubled.
            match page.next {
                Some(next) => {
                    let query =
                        (self.root.join(&next).ok()).and_then(|u| u.query().map(str::to_owned));
                    let Some(query) = query else {
                        return Err(UploadError::BadResponse {
                            method: Method::GET,
                            url: url.to_string(),
                            reason: format!("next page link without a query: {next:?}"),
                        });
                    };
                    url.set_query(Some(&query));
                }
                None => return Ok(found),
            }
        }
        Err(UploadError::BadResponse {
            method: Method::GET,
            url: url.to_string(),
            reason: format!("more than {MAX_PAGES} pages of images"),
        })
    }

    /// `POST /v2/images` with the given attributes; the new image is `queued`. Not retried on
    /// server errors (a second POST would make a second image).
    pub async fn create(&self, attributes: &Map<String, Value>) -> Result<Image, UploadError> {
        let url = self.url(&["v2", "images"]);
        let body = Bytes::from(Value::Object(attributes.clone()).to_string());
        self.call(Method::POST, &url, Some(("application/json", body)), false)
            .await?
            .json(&Method::POST, &url)
    }

    /// Streams `path` (`size` bytes) as the image's data: `PUT /v2/images/{id}/file`, or
    /// `/stage` for the interoperable import.
    pub(crate) async fn put_data(
        &self,
        id: &str,
        stage: bool,
        path: &Path,
        size: u64,
        reporter: &dyn Reporter,
    ) -> Result<Streamed, UploadError> {
        let url = self.url(&["v2", "images", id, if stage { "stage" } else { "file" }]);
        self.http
            .put_file(&url, self.token.as_ref(), path, size, reporter)
            .await
    }

    /// The import methods the server offers (`GET /v2/info/import`).
    pub async fn import_methods(&self) -> Result<Vec<String>, UploadError> {
        let url = self.url(&["v2", "info", "import"]);
        let info: Value = self
            .call(Method::GET, &url, None, true)
            .await?
            .json(&Method::GET, &url)?;
        Ok(info
            .pointer("/import-methods/value")
            .and_then(Value::as_array)
            .map(|methods| {
                methods
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `POST /v2/images/{id}/import` with `method` (`glance-direct` after staging).
    pub async fn import(&self, id: &str, method: &str) -> Result<(), UploadError> {
        let url = self.url(&["v2", "images", id, "import"]);
        let body = serde_json::json!({ "method": { "name": method } }).to_string();
        self.call(
            Method::POST,
            &url,
            Some(("application/json", Bytes::from(body))),
            false,
        )
        .await?;
        Ok(())
    }

    /// Polls an importing image until it is `active`. A failed import (Glance sets
    /// `os_glance_failed_import` and leaves the image `importing`) or a `killed` image is an
    /// error, as is still waiting after `limit`.
    pub async fn wait_for_import(
        &self,
        id: &str,
        name: &str,
        limit: Duration,
    ) -> Result<Image, UploadError> {
        let started = tokio::time::Instant::now();
        let mut interval = Duration::from_millis(200);
        loop {
            let image = self.image(id).await?;
            if let Some(failed) = image
                .property("os_glance_failed_import")
                .filter(|s| !s.is_empty())
            {
                let mut reason = format!("store(s) {failed} reported a failure");
                if let Some(message) = self.task_failure(id).await {
                    reason = format!("{reason}: {message}");
                }
                return Err(UploadError::ImportFailed {
                    name: name.to_owned(),
                    image_id: id.to_owned(),
                    reason,
                });
            }
            match image.status.as_str() {
                "active" => return Ok(image),
                "killed" | "deleted" | "pending_delete" | "deactivated" => {
                    return Err(UploadError::ImportFailed {
                        name: name.to_owned(),
                        image_id: id.to_owned(),
                        reason: format!("image became {}", image.status),
                    })
                }
                _ => {}
            }
            if started.elapsed() >= limit {
                return Err(UploadError::ImportTimeout {
                    name: name.to_owned(),
                    image_id: id.to_owned(),
                    status: image.status,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(interval.min(limit.saturating_sub(started.elapsed()))).await;
            interval = (interval * 2).min(Duration::from_secs(2));
        }
    }

    /// The message of the image's last failed task (`GET /v2/images/{id}/tasks`), if the
    /// server keeps one: the only place Glance says why an import failed. Best effort.
    async fn task_failure(&self, id: &str) -> Option<String> {
        let url = self.url(&["v2", "images", id, "tasks"]);
        let tasks: Value = self
            .call(Method::GET, &url, None, true)
            .await
            .ok()?
            .json(&Method::GET, &url)
            .ok()?;
        tasks
            .get("tasks")?
            .as_array()?
            .iter()
            .rev()
            .filter(|task| task.get("status").and_then(Value::as_str) == Some("failure"))
            .find_map(|task| task.get("message").and_then(Value::as_str))
            .map(str::to_owned)
    }

    /// `DELETE /v2/images/{id}`; an image already gone is fine.
    pub async fn delete(&self, id: &str) -> Result<(), UploadError> {
        let url = self.url(&["v2", "images", id]);
        match self.call(Method::DELETE, &url, None, true).await {
            Err(error) if error.status() == Some(404) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Retires an image as `sync` does with superseded ones.
    pub async fn retire(&self, id: &str, how: Retire) -> Result<(), UploadError> {
        match how {
            Retire::Hide => {
                let url = self.url(&["v2", "images", id]);
                let patch = serde_json::json!([
                    { "op": "replace", "path": "/os_hidden", "value": true }
                ]);
                self.call(
                    Method::PATCH,
                    &url,
                    Some((PATCH_TYPE, Bytes::from(patch.to_string()))),
                    true,
                )
                .await?;
                Ok(())
            }
            Retire::Deactivate => {
                let url = self.url(&["v2", "images", id, "actions", "deactivate"]);
                // Deactivating twice is allowed by Glance: safe to resend.
                self.call(Method::POST, &url, None, true).await?;
                Ok(())
            }
            Retire::Delete => self.delete(id).await,
        }
    }

    /// Deletes an image after a failed upload, logging (not returning) a failure to do so:
    /// the caller reports the original error. Returns whether the image is gone.
    pub(crate) async fn discard(&self, id: &str) -> bool {
        let error = match self.delete(id).await {
            Ok(()) => {
                tracing::info!(image = id, "deleted the image left by the failed upload");
                return true;
            }
            Err(error) => error,
        };
        // Glance deletes some images itself when their data fails (a failed stage); then the
        // DELETE is refused but the image is gone all the same.
        match self.image(id).await {
            Err(e) if e.status() == Some(404) => true,
            Ok(image) if image.status == "deleted" => true,
            _ => {
                tracing::warn!(image = id, error = %error, "could not delete the image left by the failed upload");
                false
            }
        }
    }
}

/// Glance's root from an endpoint, which catalogs give with or without a trailing `/v2`.
fn root_url(endpoint: &Url) -> Url {
    let mut root = endpoint.clone();
    let path = endpoint.path().trim_end_matches('/');
    let path = path.strip_suffix("/v2").unwrap_or(path);
    root.set_path(&format!("{path}/"));
    root.set_query(None);
    root.set_fragment(None);
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_drops_a_version_suffix_and_keeps_a_prefix() {
        for (endpoint, root) in [
            ("http://127.0.0.1:9292", "http://127.0.0.1:9292/"),
            ("http://127.0.0.1:9292/v2/", "http://127.0.0.1:9292/"),
            (
                "https://cloud.example/image",
                "https://cloud.example/image/",
            ),
            (
                "https://cloud.example/image/v2",
                "https://cloud.example/image/",
            ),
        ] {
            assert_eq!(root_url(&Url::parse(endpoint).unwrap()).as_str(), root);
        }
    }

    #[test]
    fn image_keeps_unknown_attributes_as_properties() {
        let image: Image = serde_json::from_str(
            r#"{"id": "i1", "name": "n", "status": "importing", "size": null,
                "checksum": null, "os_hash_algo": null, "os_hash_value": null, "tags": ["a"],
                "os_hidden": false, "os_glance_failed_import": "fs", "kernel_id": "k1",
                "min_disk": 3}"#,
        )
        .unwrap();
        assert_eq!(image.property("os_glance_failed_import"), Some("fs"));
        assert_eq!(image.property("kernel_id"), Some("k1"));
        assert_eq!(image.size, None);
        assert_eq!(image.tags, ["a"]);
    }

    #[tokio::test]
    async fn urls_escape_ids_into_one_segment() {
        let glance = Glance::connect(
            &GlanceTarget::unauthenticated(Url::parse("http://h:1/image").unwrap()),
            &ClientConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            glance.url(&["v2", "images", "../x"]).as_str(),
            "http://h:1/image/v2/images/..%2Fx"
        );
    }
}
