//! `list` and `fetch`: the commands that talk to the mirror.

use std::io::IsTerminal;
use std::time::Duration;

use cloudimg::catalog::Catalog;
use cloudimg::fetch::{Client, ClientConfig, TlsConfig};
use cloudimg::formats::Options;
use cloudimg::index::{Discovery, Query, SourceKind, Stream};
use cloudimg::pipeline::{self, Error, FetchRequest, Refusal, SignaturePolicy, Usage};
use cloudimg::verify::openpgp::Keyring;
use url::Url;

use super::args::{FetchArgs, Global, ListArgs, Selection, SourceArg, StreamArg};
use super::{print_json, progress};

/// What every mirror command needs: the catalog, the mirror URL and an HTTP client.
pub(super) struct Context {
    pub(super) catalog: Catalog,
    pub(super) mirror: Url,
    pub(super) client: Client,
}

impl Context {
    pub(super) fn new(global: &Global) -> Result<Context, Error> {
        Context::with_cache(global, true)
    }

    /// A context for a dry run: index documents are read without the document cache, so
    /// nothing is written anywhere.
    pub(super) fn uncached(global: &Global) -> Result<Context, Error> {
        Context::with_cache(global, false)
    }

    fn with_cache(global: &Global, cache: bool) -> Result<Context, Error> {
        let catalog = match &global.catalog {
            Some(name_or_path) => Catalog::load(name_or_path)?,
            None => Catalog::builtin("ubuntu")?,
        };
        let base = global
            .mirror
            .as_deref()
            .unwrap_or(catalog.base_url.as_str());
        let mut mirror = Url::parse(base).map_err(|source| Usage::BadUrl {
            what: "mirror",
            value: base.to_owned(),
            source,
        })?;
        // Relative paths resolve below the mirror, not beside its last segment.
        if !mirror.path().ends_with('/') {
            mirror.set_path(&format!("{}/", mirror.path()));
        }
        let client = Client::new(ClientConfig {
            retries: global.retries,
            stall_timeout: Duration::from_secs(global.stall_timeout.max(1)),
            document_timeout: Duration::from_secs(global.document_timeout.max(1)),
            cache_dir: if cache {
                global.cache_dir.clone().or_else(default_cache_dir)
            } else {
                None
            },
            tls: tls(global)?,
            ..ClientConfig::default()
        })?;
        Ok(Context {
            catalog,
            mirror,
            client,
        })
    }

    pub(super) fn keyring(&self, global: &Global) -> Result<Keyring, Error> {
        Ok(match &global.keyring {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                Keyring::from_bytes(&bytes)?
            }
            None => Keyring::from_armored_texts(
                &self
                    .catalog
                    .keys
                    .iter()
                    .map(|k| k.armored.as_str())
                    .collect::<Vec<_>>(),
            )?,
        })
    }
}

/// The trust settings of the global options (`--cacert`, `--insecure`).
pub(super) fn tls(global: &Global) -> Result<TlsConfig, Error> {
    let mut tls = TlsConfig::default();
    if let Some(path) = &global.cacert {
        add_ca_file(&mut tls, path)?;
    }
    if global.insecure {
        tls.disable_verification("--insecure");
    }
    Ok(tls)
}

pub(super) fn add_ca_file(tls: &mut TlsConfig, path: &std::path::Path) -> Result<(), Error> {
    Ok(tls.add_ca_file(path)?)
}

/// `$XDG_CACHE_HOME/cloudimg`, else `~/.cache/cloudimg`: where index pages and checksum files
/// are kept for conditional requests when `--cache-dir` is not given.
pub(super) fn default_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cache"))
        })?;
    Some(base.join("cloudimg"))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })
}

pub(super) fn query(release: &str, selection: &Selection) -> Query {
    Query {
        release: release.to_owned(),
        arch: selection.arch.clone(),
        stream: match selection.stream {
            StreamArg::Released => Stream::Released,
            StreamArg::Daily => Stream::Daily,
            StreamArg::Minimal => Stream::Minimal,
            StreamArg::MinimalDaily => Stream::MinimalDaily,
        },
        source: selection.source.map(|s| match s {
            SourceArg::Html => SourceKind::Html,
            SourceArg::Streams => SourceKind::Streams,
        }),
    }
}

/// `latest` means the newest, like no serial at all.
pub(super) fn serial(selection: &Selection) -> Option<&str> {
    selection.serial.as_deref().filter(|s| *s != "latest")
}

pub fn list(global: &Global, args: ListArgs) -> Result<i32, Error> {
    let context = Context::new(global)?;
    let discovery = Discovery::new(&context.client, &context.catalog, context.mirror.clone());
    let runtime = runtime()?;
    let Some(release) = &args.release else {
        let query = query("", &args.selection);
        let releases = runtime.block_on(discovery.releases(query.stream, query.source))?;
        if global.json {
            print_json(&releases);
        } else {
            outln!(
                "{:<8} {:<10} {:<40} SUPPORT",
                "VERSION",
                "CODENAME",
                "TITLE"
            );
            for r in &releases {
                let support = match (&r.supported, &r.eol) {
                    (true, Some(eol)) => format!("supported until {eol}"),
                    (true, None) => "supported".to_owned(),
                    (false, Some(eol)) => format!("end of life {eol}"),
                    (false, None) => "end of life".to_owned(),
                };
                outln!(
                    "{:<8} {:<10} {:<40} {support}",
                    r.version,
                    r.codename,
                    r.title
                );
            }
        }
        return Ok(0);
    };
    let query = query(release, &args.selection);
    let (serials, listing) = runtime.block_on(async {
        let serials = discovery.serials(&query).await?;
        let listing = discovery.listing(&query, serial(&args.selection)).await?;
        Ok::<_, Error>((serials, listing))
    })?;
    if global.json {
        print_json(&serde_json::json!({ "serials": serials, "listing": listing }));
    } else {
        outln!(
            "serials of {} ({}), newest first:",
            listing.release.codename,
            listing.release.version
        );
        for s in &serials {
            outln!("  {s}");
        }
        outln!("files of {} ({}):", listing.serial, listing.dir_url);
        let human = std::io::stdout().is_terminal();
        for f in &listing.files {
            let size = size_column(f.size, f.size_exact, human);
            outln!(
                "  {:<14} {:>12}  {}",
                f.ftype.as_deref().unwrap_or("-"),
                size,
                f.name
            );
        }
    }
    Ok(0)
}

/// A file's size in `list`: human units for a reader at a terminal, exact bytes for scripts
/// (and pipes); `~` when the listing rounded it, `-` when unknown.
fn size_column(size: Option<u64>, exact: bool, human: bool) -> String {
    let Some(size) = size else {
        return "-".to_owned();
    };
    let figure = if human {
        progress::human_bytes(size)
    } else {
        size.to_string()
    };
    if exact {
        figure
    } else {
        format!("~{figure}")
    }
}

pub fn fetch(global: &Global, args: FetchArgs) -> Result<i32, Error> {
    let context = Context::new(global)?;
    let keyring;
    let signature = if args.no_verify_signature {
        SignaturePolicy::Skip
    } else {
        keyring = context.keyring(global)?;
        SignaturePolicy::Require(&keyring)
    };
    if args.convert.is_none() && !args.deprecated.options.is_empty() {
        return Err(Usage::Missing {
            needed_by: "-o (conversion options)",
            what: "--convert FMT",
        }
        .into());
    }
    let convert = match &args.convert {
        Some(name) => {
            let format = super::image::disk_format(name)?;
            Some((
                format,
                Options::parse(&args.deprecated.merged(&args.convert_options).join(","))?,
            ))
        }
        None => None,
    };
    let kind = match args.kind.clone().or(context.catalog.default_kind.clone()) {
        Some(kind) => kind,
        None => {
            return Err(Refusal::NoDefaultKind {
                catalog: context.catalog.name.clone(),
            }
            .into())
        }
    };
    let request = FetchRequest {
        query: query(&args.release, &args.selection),
        serial: serial(&args.selection).map(str::to_owned),
        kind,
        output_dir: args.output.clone(),
        signature,
        convert,
    };
    let reporter = progress::reporter(global.quiet);
    let fetched = runtime()?.block_on(pipeline::fetch(
        &context.client,
        &context.catalog,
        &context.mirror,
        request,
        reporter.clone(),
    ))?;
    if global.json {
        print_json(&fetched);
    } else if !global.quiet {
        outln!("{}  {}", fetched.digest, fetched.path.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::size_column;

    #[test]
    fn list_sizes_are_human_at_a_terminal_and_bytes_for_scripts() {
        assert_eq!(size_column(Some(629_145_600), true, true), "600.00 MiB");
        assert_eq!(size_column(Some(629_145_600), true, false), "629145600");
        assert_eq!(size_column(Some(1024), false, true), "~1.00 KiB");
        assert_eq!(size_column(Some(1024), false, false), "~1024");
        assert_eq!(size_column(None, true, true), "-");
    }
}
