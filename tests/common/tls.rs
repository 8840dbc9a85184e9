//! HTTPS for the tests: a private certificate authority made with the `openssl` command (a
//! fixture maker, as qemu-img is for images), and a TLS-terminating proxy on 127.0.0.1 that
//! presents a certificate the CA signed for `127.0.0.1` and `localhost` and relays the bytes to
//! a plain-HTTP test server (the mirror, the test Glance).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use url::Url;

/// A CA and a server certificate it signed, as PEM files in a folder.
pub struct TestCa {
    /// The CA certificate: what a client must trust.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    super::tools::run(Command::new("openssl").args(args).current_dir(dir));
}

impl TestCa {
    /// Makes the CA and the server certificate in `dir` (P-256 keys, valid two days).
    pub fn create(dir: &Path) -> TestCa {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=cloudimg test CA",
        ];
        ca.extend_from_slice(&ec);
        ca.extend_from_slice(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
        request.extend_from_slice(&ec);
        request.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr"]);
        openssl(dir, &request);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        TestCa {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// The running proxy; stops accepting on drop.
pub struct TlsProxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    /// HTTPS on an ephemeral port of 127.0.0.1, relaying to `backend` (an `http://` URL).
    pub fn start(ca: &TestCa, backend: &Url) -> TlsProxy {
        let certs = CertificateDer::pem_file_iter(&ca.server_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&ca.server_key).unwrap();
        let config = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let backend = format!(
            "{}:{}",
            backend.host_str().unwrap(),
            backend.port_or_known_default().unwrap()
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = stopped => {}
                    _ = relay_all(listener, acceptor, backend) => {}
                }
            });
        });
        TlsProxy {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:<port>/`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("https://{}/", self.addr)).unwrap()
    }
}

async fn relay_all(listener: TcpListener, acceptor: TlsAcceptor, backend: String) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, backend) = (acceptor.clone(), backend.clone());
        tokio::spawn(async move {
            // A client that refuses our certificate ends here, as it should.
            let Ok(mut tls) = acceptor.accept(client).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(&backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
