//! Certificates made for a test: a CA, a server certificate for 127.0.0.1, a client
//! certificate, written as PEM files in a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

/// A test PKI.
pub(crate) struct TestPki {
    /// The CA certificate (PEM file).
    pub(crate) ca_file: PathBuf,
    /// The server certificate (PEM file).
    pub(crate) server_cert_file: PathBuf,
    /// The server key (PEM file).
    pub(crate) server_key_file: PathBuf,
    /// The client certificate (PEM file).
    pub(crate) client_cert_file: PathBuf,
    /// The client key (PEM file).
    pub(crate) client_key_file: PathBuf,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    _dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the CA and signs a server and a client certificate with it.
    pub(crate) fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "fwd2loki test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
            .expect("CA certificate");

        let sign = |names: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let params = CertificateParams::new(names).expect("params");
            let certificate = params.signed_by(&key, &ca).expect("signed certificate");
            (certificate.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = sign(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert_pem, client_key_pem) = sign(vec!["client.test".into()]);

        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("PEM file is written");
            path
        };
        TestPki {
            ca_file: write("ca.pem", &ca.pem()),
            server_cert_file: write("server.pem", &server_cert),
            server_key_file: write("server-key.pem", &server_key),
            client_cert_file: write("client.pem", &client_cert_pem),
            client_key_file: write("client-key.pem", &client_key_pem),
            ca_pem: ca.pem(),
            client_cert_pem,
            client_key_pem,
            _dir: dir,
        }
    }

    /// Connects over TLS to `address`, trusting the test CA, with the client certificate when
    /// `with_client_cert`.
    pub(crate) async fn connect(
        &self,
        address: std::net::SocketAddr,
        with_client_cert: bool,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(certificate.expect("CA PEM")).expect("CA certificate");
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots);
        let config = if with_client_cert {
            let chain = CertificateDer::pem_slice_iter(self.client_cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate");
            let key = PrivateKeyDer::from_pem_slice(self.client_key_pem.as_bytes()).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client certificate and key")
        } else {
            builder.with_no_client_auth()
        };
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::IpAddress(address.ip().into());
        TlsConnector::from(Arc::new(config)).connect(name, tcp).await
    }
}
