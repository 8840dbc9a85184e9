//! Keystone v3: a token from a password or an application credential, and the Glance endpoint
//! from the token's service catalog.

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};
use url::Url;

use super::http::{Http, Secret};
use super::UploadError;

/// A domain, by id or by name (`OS_USER_DOMAIN_ID` / `OS_USER_DOMAIN_NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

impl DomainRef {
    fn json(&self) -> Value {
        match self {
            DomainRef::Id(id) => json!({ "id": id }),
            DomainRef::Name(name) => json!({ "name": name }),
        }
    }
}

/// The project a token is scoped to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// A user, by id (globally unique) or by name within a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// What Keystone is given for a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Password {
        user: UserRef,
        password: Secret,
        project: Option<ProjectRef>,
    },
    /// Application credentials carry their own scope.
    ApplicationCredential { id: String, secret: Secret },
}

/// The body of `POST /v3/auth/tokens`.
pub(crate) fn token_request(credentials: &Credentials) -> Value {
    match credentials {
        Credentials::Password {
            user,
            password,
            project,
        } => {
            let user = match user {
                UserRef::Id(id) => json!({ "id": id, "password": password.expose() }),
                UserRef::Name { name, domain } => json!({
                    "name": name, "domain": domain.json(), "password": password.expose()
                }),
            };
            let mut auth = json!({
                "identity": { "methods": ["password"], "password": { "user": user } }
            });
            if let Some(project) = project {
                let project = match project {
                    ProjectRef::Id(id) => json!({ "id": id }),
                    ProjectRef::Name { name, domain } => {
                        json!({ "name": name, "domain": domain.json() })
                    }
                };
                auth["scope"] = json!({ "project": project });
            }
            json!({ "auth": auth })
        }
        Credentials::ApplicationCredential { id, secret } => json!({
            "auth": { "identity": {
                "methods": ["application_credential"],
                "application_credential": { "id": id, "secret": secret.expose() }
            } }
        }),
    }
}

/// `{auth_url}/v3/` whether or not the configured URL already names the version.
fn v3_base(auth_url: &Url) -> Url {
    let mut base = auth_url.clone();
    let path = auth_url.path().trim_end_matches('/');
    let path = if path.ends_with("/v3") {
        format!("{path}/")
    } else {
        format!("{path}/v3/")
    };
    base.set_path(&path);
    base.set_query(None);
    base
}

pub(crate) fn tokens_url(auth_url: &Url) -> Url {
    let mut url = v3_base(auth_url);
    url.set_path(&format!("{}auth/tokens", url.path()));
    url
}

fn catalog_url(auth_url: &Url) -> Url {
    let mut url = v3_base(auth_url);
    url.set_path(&format!("{}auth/catalog", url.path()));
    url
}

/// One service of the catalog.
#[derive(Clone, Debug, serde::Deserialize)]
pub(crate) struct Service {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) interface: String,
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) region: Option<String>,
    #[serde(default)]
    pub(crate) region_id: Option<String>,
}

/// `public`, `internal` or `admin`; the v2-era spellings (`publicURL`) are accepted too.
pub(crate) fn normalise_interface(interface: &str) -> String {
    interface
        .strip_suffix("URL")
        .unwrap_or(interface)
        .to_ascii_lowercase()
}

/// The URL of `service` at `interface` (in `region` when given) from a catalog.
pub(crate) fn endpoint(
    catalog: &[Service],
    service: &'static str,
    interface: &str,
    region: Option<&str>,
) -> Result<Url, UploadError> {
    let interface = normalise_interface(interface);
    let candidates = catalog
        .iter()
        .filter(|s| s.kind == service)
        .flat_map(|s| &s.endpoints);
    let found = candidates.clone().find(|e| {
        e.interface == interface
            && region
                .is_none_or(|r| e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r))
    });
    match found {
        Some(e) => Url::parse(&e.url).map_err(|source| {
            super::Settings::BadUrl {
                what: format!("{service} endpoint in the service catalog"),
                value: e.url.clone(),
                source,
            }
            .into()
        }),
        None => {
            let offered = candidates
                .map(|e| {
                    format!(
                        "{} {}",
                        e.interface,
                        e.region_id
                            .as_deref()
                            .or(e.region.as_deref())
                            .unwrap_or("-")
                    )
                })
                .collect::<Vec<_>>();
            Err(UploadError::NoEndpoint {
                service,
                interface,
                region: region.map(str::to_owned),
                offered: if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                },
            })
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(serde::Deserialize)]
struct TokenInfo {
    #[serde(default)]
    catalog: Vec<Service>,
}

#[derive(serde::Deserialize)]
struct CatalogBody {
    #[serde(default)]
    catalog: Vec<Service>,
}

/// Asks Keystone for a token; returns it with its service catalog.
pub(crate) async fn authenticate(
    http: &Http,
    auth_url: &Url,
    credentials: &Credentials,
) -> Result<(Secret, Vec<Service>), UploadError> {
    let url = tokens_url(auth_url);
    let body = Bytes::from(token_request(credentials).to_string());
    // Asking for a token changes nothing on the server: safe to resend.
    let reply = http
        .call(
            Method::POST,
            &url,
            None,
            Some(("application/json", body)),
            true,
        )
        .await
        .map_err(auth_failure)?;
    let token = reply
        .headers
        .get("X-Subject-Token")
        .and_then(|v| v.to_str().ok())
        .map(Secret::new)
        .ok_or_else(|| UploadError::BadResponse {
            method: Method::POST,
            url: url.to_string(),
            reason: "no X-Subject-Token header".to_owned(),
        })?;
    let parsed: TokenBody = reply.json(&Method::POST, &url)?;
    tracing::debug!(url = %url, services = parsed.token.catalog.len(), "authenticated");
    Ok((token, parsed.token.catalog))
}

/// The service catalog of an existing token (`OS_TOKEN` with `OS_AUTH_URL`).
pub(crate) async fn catalog(
    http: &Http,
    auth_url: &Url,
    token: &Secret,
) -> Result<Vec<Service>, UploadError> {
    let url = catalog_url(auth_url);
    let reply = http
        .call(Method::GET, &url, Some(token), None, true)
        .await
        .map_err(auth_failure)?;
    let parsed: CatalogBody = reply.json(&Method::GET, &url)?;
    Ok(parsed.catalog)
}

fn auth_failure(error: UploadError) -> UploadError {
    match error {
        UploadError::Status {
            url,
            status: status @ (401 | 403),
            message,
            ..
        } => UploadError::AuthFailed {
            url,
            status,
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_catalog(text: &str) -> Vec<Service> {
        serde_json::from_str::<TokenBody>(text)
            .unwrap()
            .token
            .catalog
    }

    /// A trimmed `POST /v3/auth/tokens` answer in the shape Keystone documents.
    const TOKEN_BODY: &str = r#"{"token": {
        "methods": ["password"], "expires_at": "2026-11-26T09:00:00.000000Z",
        "project": {"id": "p1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
        "catalog": [
          {"type": "identity", "name": "keystone", "id": "k", "endpoints": [
            {"id": "e0", "interface": "public", "region": "RegionOne", "region_id": "RegionOne",
             "url": "https://cloud.example/identity"}]},
          {"type": "image", "name": "glance", "id": "g", "endpoints": [
            {"id": "e1", "interface": "public", "region": "RegionOne", "region_id": "RegionOne",
             "url": "https://cloud.example/image"},
            {"id": "e2", "interface": "internal", "region": "RegionOne", "region_id": "RegionOne",
             "url": "http://10.0.0.5:9292"},
            {"id": "e3", "interface": "public", "region": "RegionTwo", "region_id": "RegionTwo",
             "url": "https://two.example:9292/"}]}
        ]}}"#;

    #[test]
    fn password_request_names_user_domain_and_project_scope() {
        let body = token_request(&Credentials::Password {
            user: UserRef::Name {
                name: "alice".into(),
                domain: DomainRef::Name("Default".into()),
            },
            password: Secret::new("s3cret"),
            project: Some(ProjectRef::Name {
                name: "demo".into(),
                domain: DomainRef::Id("default".into()),
            }),
        });
        let expected = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "alice", "domain": {"name": "Default"}, "password": "s3cret"}}},
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}
        }});
        assert_eq!(body, expected);
    }

    #[test]
    fn project_id_scope_needs_no_domain_and_unscoped_has_no_scope() {
        let scoped = token_request(&Credentials::Password {
            user: UserRef::Id("u1".into()),
            password: Secret::new("pw"),
            project: Some(ProjectRef::Id("p1".into())),
        });
        assert_eq!(scoped["auth"]["scope"], json!({"project": {"id": "p1"}}));
        assert_eq!(
            scoped["auth"]["identity"]["password"]["user"],
            json!({"id": "u1", "password": "pw"})
        );
        let unscoped = token_request(&Credentials::Password {
            user: UserRef::Id("u1".into()),
            password: Secret::new("pw"),
            project: None,
        });
        assert!(unscoped["auth"].get("scope").is_none());
    }

    #[test]
    fn application_credential_request_has_id_and_secret_only() {
        let body = token_request(&Credentials::ApplicationCredential {
            id: "ac1".into(),
            secret: Secret::new("xyz"),
        });
        assert_eq!(
            body,
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "ac1", "secret": "xyz"}}}})
        );
    }

    #[test]
    fn tokens_url_adds_v3_only_when_missing() {
        for (auth, expected) in [
            ("http://k:5000", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000/", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000/v3", "http://k:5000/v3/auth/tokens"),
            (
                "https://c.example/identity/v3/",
                "https://c.example/identity/v3/auth/tokens",
            ),
        ] {
            assert_eq!(
                tokens_url(&Url::parse(auth).unwrap()).as_str(),
                expected,
                "{auth}"
            );
        }
        assert_eq!(
            catalog_url(&Url::parse("http://k:5000/v3").unwrap()).as_str(),
            "http://k:5000/v3/auth/catalog"
        );
    }

    #[test]
    fn image_endpoint_is_chosen_by_interface_and_region() {
        let catalog = parse_catalog(TOKEN_BODY);
        let pick = |interface, region| {
            endpoint(&catalog, "image", interface, region).map(|u| u.to_string())
        };
        assert_eq!(pick("public", None).unwrap(), "https://cloud.example/image");
        assert_eq!(pick("internal", None).unwrap(), "http://10.0.0.5:9292/");
        assert_eq!(
            pick("publicURL", None).unwrap(),
            "https://cloud.example/image"
        );
        assert_eq!(
            pick("public", Some("RegionTwo")).unwrap(),
            "https://two.example:9292/"
        );
    }

    #[test]
    fn missing_endpoint_lists_what_the_catalog_offers() {
        let catalog = parse_catalog(TOKEN_BODY);
        let error = endpoint(&catalog, "image", "admin", Some("RegionOne")).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("interface admin in region RegionOne"),
            "{text}"
        );
        assert!(
            text.contains("public RegionOne, internal RegionOne"),
            "{text}"
        );
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
        let empty = endpoint(&[], "image", "public", None).unwrap_err();
        assert!(empty.to_string().contains("offered: none"), "{empty}");
    }

    #[test]
    fn catalog_tolerates_services_without_endpoints() {
        let catalog = parse_catalog(r#"{"token": {"catalog": [{"type": "image"}]}}"#);
        assert_eq!(catalog.len(), 1);
        assert!(endpoint(&catalog, "image", "public", None).is_err());
        let none = parse_catalog(r#"{"token": {"methods": ["token"]}}"#);
        assert!(none.is_empty());
    }
}
