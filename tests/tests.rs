//! The one integration-test binary (one link instead of one per file), a module per area.

mod common;

/// `bake`: a real guest under QEMU (TCG) customised, generalised, boot-tested, read offline.
mod bake;
/// The binary against a loopback mirror: discovery, verified fetches, exit codes, resume.
mod cli;
/// `--catalog debian` against a cloud.debian.org look-alike: SHA-512, no signature, tar.xz.
mod debian;
/// Shell completions and manual pages, parsed by the shells and groff.
mod docs;
/// Hostile document servers: slow drip, oversized and endless bodies, empty sources.
mod documents;
/// Downloads and documents against the loopback server: resume, retries, cache, locks.
mod fetch;
/// Formats cloudimg recognises but does not read: refused by name, never read as raw.
mod foreign;
/// Conversions through the `cloudimg` binary, checked with qemu-img.
mod formats;
/// `mirror`: a served copy of the loopback mirror, read back by list, fetch, prepare and sync.
mod mirror;
/// Where outputs land: temporaries and their sweep, devices, FIFOs, symbolic links.
mod outputs;
/// `prepare`: artifacts for every Glance container format, checked by independent tools.
mod prepare;
/// KubeVirt containerDisks: OCI layouts pushed to a real registry, judged by skopeo.
mod push;
/// qemu-img's interface: info and check layouts, repairs, exit statuses, progress lines.
mod qemu_img;
/// The cloud-init seed ISO, read back with isoinfo.
mod seed;
/// `sync` from user catalogs: publish, retention, kills, locks, failures, full disks.
mod sync;
/// Several Glance targets against two real Glance APIs, one stopped half way.
mod targets;
/// HTTPS behind a private CA: the system store, SSL_CERT_FILE, --cacert, OS_CACERT, clouds.yaml.
mod tls;
/// `cloudimg upload` and the Glance library against a real Glance API.
mod upload;
/// OpenPGP verification of the generated mirror, and the mirror's own shape.
mod verify;
