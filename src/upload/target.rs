//! Which Glance to talk to and with what credentials: `--glance` / `--token`, the `OS_*`
//! environment of the OpenStack client, or a named cloud of `clouds.yaml` (`OS_CLOUD`).

use std::path::PathBuf;

use url::Url;

use crate::fetch::ClientConfig;

use super::clouds::{self, CloudAuth};
use super::http::Secret;
use super::keystone::{Credentials, DomainRef, ProjectRef, UserRef};
use super::{Settings, UploadError};

/// Where images go and how requests are authorised. Resolved into a session by
/// [`super::Glance::connect`], which is where Keystone is asked for a token.
#[derive(Clone, Debug)]
pub struct GlanceTarget {
    /// Glance's root URL (`--glance`, `OS_IMAGE_URL`); `None` takes it from the service
    /// catalog.
    pub endpoint: Option<Url>,
    pub auth: Auth,
    /// Catalog region (`OS_REGION_NAME`, `region_name`); `None` accepts any.
    pub region: Option<String>,
    /// Catalog interface (`OS_INTERFACE`): `public` (default), `internal` or `admin`.
    pub interface: String,
    /// A CA bundle to trust for Keystone and Glance (`OS_CACERT`, clouds.yaml `cacert`).
    pub cacert: Option<PathBuf>,
    /// `false` when clouds.yaml says `verify: false` (certificates are then not checked).
    pub verify: bool,
}

/// How requests are authorised.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Nothing sent: a Glance without Keystone in front of it.
    None,
    /// An existing token sent as `X-Auth-Token`; with `auth_url`, the catalog comes from
    /// Keystone's `GET /v3/auth/catalog`.
    Token {
        token: Secret,
        auth_url: Option<Url>,
    },
    /// Keystone v3 issues a token (and a catalog) for these credentials.
    Keystone {
        auth_url: Url,
        credentials: Credentials,
    },
}

impl GlanceTarget {
    /// A Glance at `endpoint` that needs no credentials.
    pub fn unauthenticated(endpoint: Url) -> GlanceTarget {
        GlanceTarget {
            endpoint: Some(endpoint),
            auth: Auth::None,
            region: None,
            interface: "public".to_owned(),
            cacert: None,
            verify: true,
        }
    }

    /// `config` with this target's trust settings added: its CA bundle (`OS_CACERT`, the cloud's
    /// `cacert`) and the cloud's `verify: false`.
    pub fn client_config(&self, config: &ClientConfig) -> Result<ClientConfig, UploadError> {
        let mut config = config.clone();
        if let Some(path) = &self.cacert {
            config.tls.add_ca_file(path).map_err(UploadError::Tls)?;
        }
        if !self.verify {
            config
                .tls
                .disable_verification("verify: false in clouds.yaml");
        }
        Ok(config)
    }

    /// From the process environment, the way the `openstack` client reads it; `glance`,
    /// `token` and `project_name` (the command line's `--glance`, `--token`,
    /// `--os-project-name`) take precedence over it.
    pub fn from_env(
        glance: Option<&str>,
        token: Option<&str>,
        project_name: Option<&str>,
    ) -> Result<GlanceTarget, UploadError> {
        let settings: Vec<(&str, &str)> = project_name
            .map(|name| (PROJECT_NAME, name))
            .into_iter()
            .collect();
        let env = lookup(&settings, true);
        GlanceTarget::from_vars(glance, token, &env)
    }

    /// A catalog target: its own `OS_*`-style settings (see
    /// [`crate::catalog::user::GlanceConfig::os_variables`]). The process environment only
    /// supplies what locates `clouds.yaml` (`HOME`, `XDG_CONFIG_HOME`, `OS_CLIENT_CONFIG_FILE`)
    /// unless `inherit` (a single target with no credentials of its own): then the `OS_*`
    /// variables fill what the target leaves out, as for `upload`.
    pub fn from_settings(
        settings: &[(&str, &str)],
        inherit: bool,
    ) -> Result<GlanceTarget, UploadError> {
        GlanceTarget::from_vars(None, None, &lookup(settings, inherit))
    }

    /// [`GlanceTarget::from_env`] with the variables looked up through `env` (for tests).
    pub fn from_vars(
        glance: Option<&str>,
        token: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GlanceTarget, UploadError> {
        let cloud = match env("OS_CLOUD") {
            Some(name) => {
                let mut cloud = clouds::load(&name, &clouds::search_path(env))?;
                // A project named beside the cloud scopes the token to it instead of the
                // cloud's, as the CLI's options and variables override clouds.yaml.
                if let Some(project) = env(PROJECT_NAME) {
                    cloud.auth.project_name = Some(project);
                    cloud.auth.project_id = None;
                }
                cloud
            }
            None => clouds::Cloud {
                auth: env_auth(env),
                ..clouds::Cloud::default()
            },
        };
        let (fields, auth_type, mut region, mut interface, endpoint_override) = (
            cloud.auth,
            cloud.auth_type,
            cloud.region_name,
            cloud.interface,
            cloud.image_endpoint_override,
        );
        // OS_CACERT wins over the cloud's, like the region below.
        let cacert = env("OS_CACERT").or(cloud.cacert).map(PathBuf::from);
        // The environment's region and interface win over the cloud's, as in the CLI.
        if let Some(value) = env("OS_REGION_NAME") {
            region = Some(value);
        }
        if let Some(value) = env("OS_INTERFACE") {
            interface = Some(value);
        }
        let endpoint = match glance
            .map(str::to_owned)
            .or_else(|| env("OS_IMAGE_URL"))
            .or(endpoint_override)
        {
            Some(text) => Some(parse_url("Glance URL", &text)?),
            None => None,
        };
        let auth = auth_from(&fields, auth_type.as_deref(), token)?;
        let has_catalog = match &auth {
            Auth::None => false,
            Auth::Token { auth_url, .. } => auth_url.is_some(),
            Auth::Keystone { .. } => true,
        };
        if endpoint.is_none() && !has_catalog {
            return Err(Settings::NoGlance.into());
        }
        Ok(GlanceTarget {
            endpoint,
            auth,
            region,
            interface: interface.unwrap_or_else(|| "public".to_owned()),
            cacert,
            verify: cloud.verify.unwrap_or(true),
        })
    }
}

/// The variable (and `--os-project-name`) naming the project a token is scoped to.
const PROJECT_NAME: &str = "OS_PROJECT_NAME";

/// Variables that name a project otherwise; a project name among the settings hides them, so
/// `--os-project-name` wins over an `OS_PROJECT_ID` of the environment.
const OTHER_PROJECT_KEYS: [&str; 3] = ["OS_PROJECT_ID", "OS_TENANT_ID", "OS_TENANT_NAME"];

/// Variable lookup for [`GlanceTarget::from_vars`]: `settings` first, then the process
/// environment — all of it when `inherit`, otherwise only what locates `clouds.yaml`.
fn lookup<'s>(
    settings: &'s [(&'s str, &'s str)],
    inherit: bool,
) -> impl Fn(&str) -> Option<String> + 's {
    move |key: &str| -> Option<String> {
        if let Some((_, value)) = settings.iter().find(|(name, _)| *name == key) {
            return Some((*value).to_owned());
        }
        let project_given = settings.iter().any(|(name, _)| *name == PROJECT_NAME);
        if project_given && OTHER_PROJECT_KEYS.contains(&key) {
            return None;
        }
        let locates_clouds = !key.starts_with("OS_") || key == "OS_CLIENT_CONFIG_FILE";
        (inherit || locates_clouds)
            .then(|| std::env::var(key).ok().filter(|v| !v.is_empty()))
            .flatten()
    }
}

/// The `OS_*` variables in the shape of a `clouds.yaml` `auth` section.
fn env_auth(env: &dyn Fn(&str) -> Option<String>) -> CloudAuth {
    CloudAuth {
        auth_url: env("OS_AUTH_URL"),
        username: env("OS_USERNAME"),
        user_id: env("OS_USER_ID"),
        password: env("OS_PASSWORD"),
        project_name: env(PROJECT_NAME).or_else(|| env("OS_TENANT_NAME")),
        project_id: env("OS_PROJECT_ID").or_else(|| env("OS_TENANT_ID")),
        user_domain_name: env("OS_USER_DOMAIN_NAME"),
        user_domain_id: env("OS_USER_DOMAIN_ID"),
        project_domain_name: env("OS_PROJECT_DOMAIN_NAME"),
        project_domain_id: env("OS_PROJECT_DOMAIN_ID"),
        domain_name: None,
        domain_id: None,
        token: env("OS_TOKEN"),
        application_credential_id: env("OS_APPLICATION_CREDENTIAL_ID"),
        application_credential_secret: env("OS_APPLICATION_CREDENTIAL_SECRET"),
    }
}

fn parse_url(what: &str, text: &str) -> Result<Url, UploadError> {
    Url::parse(text).map_err(|source| {
        Settings::BadUrl {
            what: what.to_owned(),
            value: text.to_owned(),
            source,
        }
        .into()
    })
}

/// A domain from its id or name fields, else the shared `domain_*`, else `Default`.
fn domain(id: &Option<String>, name: &Option<String>, fields: &CloudAuth) -> DomainRef {
    match (id, name, &fields.domain_id, &fields.domain_name) {
        (Some(id), _, _, _) => DomainRef::Id(id.clone()),
        (None, Some(name), _, _) => DomainRef::Name(name.clone()),
        (None, None, Some(id), _) => DomainRef::Id(id.clone()),
        (None, None, None, Some(name)) => DomainRef::Name(name.clone()),
        (None, None, None, None) => DomainRef::Name("Default".to_owned()),
    }
}

fn auth_from(
    fields: &CloudAuth,
    auth_type: Option<&str>,
    token: Option<&str>,
) -> Result<Auth, UploadError> {
    let auth_url = match &fields.auth_url {
        Some(text) => Some(parse_url("auth URL", text)?),
        None => None,
    };
    if let Some(token) = token.map(str::to_owned).or_else(|| fields.token.clone()) {
        return Ok(Auth::Token {
            token: Secret::new(token),
            auth_url,
        });
    }
    if auth_type == Some("none") || auth_type == Some("noauth") {
        return Ok(Auth::None);
    }
    let Some(auth_url) = auth_url else {
        return Ok(Auth::None);
    };
    if let (Some(id), Some(secret)) = (
        &fields.application_credential_id,
        &fields.application_credential_secret,
    ) {
        return Ok(Auth::Keystone {
            auth_url,
            credentials: Credentials::ApplicationCredential {
                id: id.clone(),
                secret: Secret::new(secret.clone()),
            },
        });
    }
    let user = match (&fields.user_id, &fields.username) {
        (Some(id), _) => UserRef::Id(id.clone()),
        (None, Some(name)) => UserRef::Name {
            name: name.clone(),
            domain: domain(&fields.user_domain_id, &fields.user_domain_name, fields),
        },
        (None, None) => {
            return Err(Settings::NoUser {
                auth_url: auth_url.to_string(),
            }
            .into())
        }
    };
    let Some(password) = &fields.password else {
        return Err(Settings::NoPassword {
            auth_url: auth_url.to_string(),
        }
        .into());
    };
    let project = match (&fields.project_id, &fields.project_name) {
        (Some(id), _) => Some(ProjectRef::Id(id.clone())),
        (None, Some(name)) => Some(ProjectRef::Name {
            name: name.clone(),
            domain: domain(
                &fields.project_domain_id,
                &fields.project_domain_name,
                fields,
            ),
        }),
        (None, None) => None,
    };
    Ok(Auth::Keystone {
        auth_url,
        credentials: Credentials::Password {
            user,
            password: Secret::new(password.clone()),
            project,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn target(
        glance: Option<&str>,
        token: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Result<GlanceTarget, UploadError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GlanceTarget::from_vars(glance, token, &|key| vars.get(key).cloned())
    }

    #[test]
    fn glance_url_alone_means_no_auth() {
        let t = target(Some("http://127.0.0.1:9292"), None, &[]).unwrap();
        assert!(matches!(t.auth, Auth::None));
        assert_eq!(t.endpoint.unwrap().as_str(), "http://127.0.0.1:9292/");
        assert_eq!(t.interface, "public");
    }

    #[test]
    fn nothing_configured_is_a_usage_error() {
        let error = target(None, None, &[]).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
        assert!(error.to_string().contains("--glance"), "{error}");
        // A token without a catalog to look the endpoint up in is not enough either.
        assert!(target(None, Some("tok"), &[]).is_err());
    }

    #[test]
    fn password_variables_become_keystone_credentials_with_default_domains() {
        let t = target(
            None,
            None,
            &[
                ("OS_AUTH_URL", "http://keystone:5000/v3"),
                ("OS_USERNAME", "alice"),
                ("OS_PASSWORD", "pw"),
                ("OS_PROJECT_NAME", "demo"),
                ("OS_REGION_NAME", "RegionTwo"),
                ("OS_INTERFACE", "internal"),
            ],
        )
        .unwrap();
        let Auth::Keystone {
            auth_url,
            credentials,
        } = t.auth
        else {
            panic!("expected Keystone auth, got {:?}", t.auth);
        };
        assert_eq!(auth_url.as_str(), "http://keystone:5000/v3");
        assert_eq!(
            credentials,
            Credentials::Password {
                user: UserRef::Name {
                    name: "alice".into(),
                    domain: DomainRef::Name("Default".into())
                },
                password: Secret::new("pw"),
                project: Some(ProjectRef::Name {
                    name: "demo".into(),
                    domain: DomainRef::Name("Default".into())
                }),
            }
        );
        assert_eq!(t.region.as_deref(), Some("RegionTwo"));
        assert_eq!(t.interface, "internal");
        assert!(t.endpoint.is_none());
    }

    #[test]
    fn explicit_token_wins_over_a_password_and_keeps_the_catalog_source() {
        let t = target(
            None,
            Some("tok"),
            &[
                ("OS_AUTH_URL", "http://keystone:5000"),
                ("OS_USERNAME", "alice"),
                ("OS_PASSWORD", "pw"),
            ],
        )
        .unwrap();
        match t.auth {
            Auth::Token { token, auth_url } => {
                assert_eq!(token, Secret::new("tok"));
                assert_eq!(auth_url.unwrap().as_str(), "http://keystone:5000/");
            }
            other => panic!("expected a token, got {other:?}"),
        }
    }

    #[test]
    fn os_token_with_os_image_url_needs_no_keystone() {
        let t = target(
            None,
            None,
            &[("OS_TOKEN", "abc"), ("OS_IMAGE_URL", "http://glance:9292")],
        )
        .unwrap();
        assert!(matches!(t.auth, Auth::Token { auth_url: None, .. }));
        assert_eq!(t.endpoint.unwrap().as_str(), "http://glance:9292/");
    }

    #[test]
    fn auth_url_without_a_user_is_a_usage_error() {
        let error = target(None, None, &[("OS_AUTH_URL", "http://k:5000")]).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Usage);
        let no_password = target(
            None,
            None,
            &[("OS_AUTH_URL", "http://k:5000"), ("OS_USERNAME", "a")],
        )
        .unwrap_err();
        assert!(
            no_password.to_string().contains("OS_PASSWORD"),
            "{no_password}"
        );
    }

    #[test]
    fn os_cloud_reads_clouds_yaml_and_project_id_scope() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clouds.yaml");
        std::fs::write(
            &file,
            "clouds:\n  lab:\n    auth:\n      auth_url: https://lab:5000/v3\n      \
             user_id: u1\n      password: pw\n      project_id: p1\n    region_name: R1\n",
        )
        .unwrap();
        let t = target(
            None,
            None,
            &[
                ("OS_CLOUD", "lab"),
                ("OS_CLIENT_CONFIG_FILE", file.to_str().unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(t.region.as_deref(), Some("R1"));
        match t.auth {
            Auth::Keystone { credentials, .. } => assert_eq!(
                credentials,
                Credentials::Password {
                    user: UserRef::Id("u1".into()),
                    password: Secret::new("pw"),
                    project: Some(ProjectRef::Id("p1".into())),
                }
            ),
            other => panic!("expected Keystone auth, got {other:?}"),
        }
    }

    fn password_project(target: &GlanceTarget) -> Option<ProjectRef> {
        match &target.auth {
            Auth::Keystone {
                credentials: Credentials::Password { project, .. },
                ..
            } => project.clone(),
            other => panic!("expected password credentials, got {other:?}"),
        }
    }

    #[test]
    fn a_project_name_beside_a_cloud_wins_over_the_clouds_project() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clouds.yaml");
        std::fs::write(
            &file,
            "clouds:\n  lab:\n    auth:\n      auth_url: https://lab:5000/v3\n      \
             username: u\n      password: pw\n      project_id: p1\n      \
             project_domain_name: Lab\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let cloud = [("OS_CLOUD", "lab"), ("OS_CLIENT_CONFIG_FILE", config)];
        let own = target(None, None, &cloud).unwrap();
        assert_eq!(password_project(&own), Some(ProjectRef::Id("p1".into())));
        let mut other = cloud.to_vec();
        other.push(("OS_PROJECT_NAME", "other"));
        let scoped = target(None, None, &other).unwrap();
        assert_eq!(
            password_project(&scoped),
            Some(ProjectRef::Name {
                name: "other".into(),
                domain: DomainRef::Name("Lab".into())
            })
        );
    }

    #[test]
    fn a_given_project_name_hides_the_environments_project_id() {
        let settings = [
            ("OS_AUTH_URL", "http://k:5000"),
            ("OS_USERNAME", "a"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "flag"),
        ];
        let env = lookup(&settings, true);
        assert_eq!(env("OS_PROJECT_NAME").as_deref(), Some("flag"));
        for key in OTHER_PROJECT_KEYS {
            assert_eq!(env(key), None, "{key}");
        }
        let t = GlanceTarget::from_vars(None, None, &env).unwrap();
        assert_eq!(
            password_project(&t),
            Some(ProjectRef::Name {
                name: "flag".into(),
                domain: DomainRef::Name("Default".into())
            })
        );
        // Without a project name among the settings, nothing is hidden.
        let plain = [("OS_CLIENT_CONFIG_FILE", "/nonexistent")];
        let env = lookup(&plain, false);
        assert_eq!(
            env("OS_CLIENT_CONFIG_FILE").as_deref(),
            Some("/nonexistent")
        );
    }

    #[test]
    fn application_credentials_are_preferred_over_a_password() {
        let t = target(
            None,
            None,
            &[
                ("OS_AUTH_URL", "http://k:5000"),
                ("OS_APPLICATION_CREDENTIAL_ID", "ac"),
                ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
                ("OS_USERNAME", "a"),
                ("OS_PASSWORD", "pw"),
            ],
        )
        .unwrap();
        assert!(matches!(
            t.auth,
            Auth::Keystone {
                credentials: Credentials::ApplicationCredential { .. },
                ..
            }
        ));
    }
}
