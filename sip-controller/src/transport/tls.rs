//! TLS for SIP (RFC 3261 §26.2, RFC 5630): rustls server and client configurations, the server
//! certificate (from PEM files or a persisted self-signed one), SNI certificate selection,
//! client-certificate verification, and the [`TlsInfo`] a connection reports.
//!
//! rustls does the protocol; this module only assembles its configurations from our settings,
//! so every policy decision (TLS 1.2 and 1.3 only, which CAs, when to accept any certificate)
//! is visible in one place. Certificates are parsed with `x509-parser` solely to report the
//! peer's subject DN.

use std::{
    collections::HashMap,
    fs,
    io::Write,
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ClientConfig, CommonState, DigitallySignedStruct, ProtocolVersion, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Serialize;

use super::TransportError;

/// TLS 1.2 and 1.3 only (RFC 8996 retired the older versions).
static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// File name of the persisted self-signed certificate inside the state directory.
pub const SELF_SIGNED_CERT_FILE: &str = "sip-tls-self-signed.crt";
/// File name of its private key (mode 0600).
pub const SELF_SIGNED_KEY_FILE: &str = "sip-tls-self-signed.key";

/// What a TLS connection negotiated, reported with every message it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The IANA-registered suite name rustls uses, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// Subject DN of the peer's end-entity certificate (`CN=..., O=...`), when it sent one.
    pub peer_subject: Option<String>,
    /// The server name: what the client asked for via SNI (inbound) or what we asked for
    /// (outbound to a DNS name).
    pub sni: Option<String>,
}

impl TlsInfo {
    pub(crate) fn from_connection(state: &CommonState, sni: Option<String>) -> Self {
        let version = match state.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_owned(),
        };
        let cipher_suite = state
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
        let peer_subject = state
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| certificate_subject(cert));
        Self {
            version,
            cipher_suite,
            peer_subject,
            sni,
        }
    }
}

/// The subject DN of a DER certificate in RFC 4514 style, `None` if it does not parse.
pub fn certificate_subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFiles {
    /// Certificate chain, end entity first.
    pub cert_file: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Where the default server certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCertificate {
    /// Operator-provided PEM files.
    Files(CertificateFiles),
    /// Generated with rcgen on first start and kept in `state_dir` (key mode 0600); reused on
    /// later starts so peers that pinned it keep working.
    SelfSigned {
        /// Directory holding [`SELF_SIGNED_CERT_FILE`] and [`SELF_SIGNED_KEY_FILE`].
        state_dir: PathBuf,
        /// Subject alternative names (DNS names or IP addresses) of a newly generated one.
        subject_alt_names: Vec<String>,
    },
}

/// An extra certificate chosen when the client's SNI matches `server_name` (exact, or one
/// label under a `*.` wildcard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniCertificate {
    /// Server name, e.g. `sip.example.com` or `*.example.com`.
    pub server_name: String,
    /// Its certificate and key.
    pub files: CertificateFiles,
}

/// Whether inbound TLS clients must present a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ClientCertificatePolicy {
    /// No certificate requested.
    #[default]
    None,
    /// Requested; verified against the CA bundle when sent, connections without one accepted.
    Optional {
        /// CA bundle (PEM) client certificates must chain to.
        ca_file: PathBuf,
    },
    /// Required and verified; handshakes without a valid one fail.
    Required {
        /// CA bundle (PEM) client certificates must chain to.
        ca_file: PathBuf,
    },
}

/// TLS settings of the transport layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Default server certificate (also the fallback when SNI matches nothing).
    pub certificate: ServerCertificate,
    /// Certificates selected by SNI.
    pub sni_certificates: Vec<SniCertificate>,
    /// Client-certificate verification of inbound connections.
    pub client_certificates: ClientCertificatePolicy,
    /// CA bundles (PEM) trusted for outbound connections. Empty: the system bundle
    /// ([`SYSTEM_CA_BUNDLES`], first that exists).
    pub trusted_ca_files: Vec<PathBuf>,
    /// Verify outbound servers' certificates by default. `false` accepts any certificate, for
    /// lab trunks only, and is logged as a warning on every connection it affects; a send can
    /// override it with [`super::Outbound::tls_verify_server`].
    pub tls_verify_server: bool,
    /// Certificate presented to outbound servers that ask for one (mutual TLS to carriers).
    pub client_certificate: Option<CertificateFiles>,
}

impl TlsSettings {
    /// Self-signed certificate in `state_dir`, no client certificates, outbound verified
    /// against the system bundle.
    pub fn self_signed(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            certificate: ServerCertificate::SelfSigned {
                state_dir: state_dir.into(),
                subject_alt_names: vec!["localhost".to_owned()],
            },
            sni_certificates: Vec::new(),
            client_certificates: ClientCertificatePolicy::None,
            trusted_ca_files: Vec::new(),
            tls_verify_server: true,
            client_certificate: None,
        }
    }
}

/// System CA bundles tried, in order, when no `trusted_ca_files` are configured.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Everything TLS the running transport needs, built once at start.
#[derive(Debug)]
pub(crate) struct TlsContext {
    pub server: Arc<ServerConfig>,
    /// Verifies servers against the trusted CAs.
    pub client_verifying: Arc<ClientConfig>,
    /// Accepts any server certificate (lab trunks).
    pub client_accept_any: Arc<ClientConfig>,
    /// Path of the default certificate (useful when it was generated).
    pub certificate_file: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config_error(e: &impl std::fmt::Display) -> TransportError {
    TransportError::TlsConfig {
        reason: e.to_string(),
    }
}

impl TlsContext {
    /// Builds the server and client configurations; `listen_ips` are added to the names of a
    /// newly generated self-signed certificate.
    pub fn build(settings: &TlsSettings, listen_ips: &[IpAddr]) -> Result<Self, TransportError> {
        let provider = provider();
        let (server, certificate_file) = server_config(settings, listen_ips, &provider)?;
        let (client_verifying, client_accept_any) = client_configs(settings, &provider)?;
        if !settings.tls_verify_server {
            tracing::warn!(
                "tls_verify_server = false: outbound TLS accepts any server certificate \
                 (lab trunks only)"
            );
        }
        Ok(Self {
            server,
            client_verifying,
            client_accept_any,
            certificate_file,
        })
    }
}

/// The server configuration (certificates, SNI, client verification) and the default
/// certificate's file.
fn server_config(
    settings: &TlsSettings,
    listen_ips: &[IpAddr],
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<ServerConfig>, PathBuf), TransportError> {
    let (default_files, certificate_file) = match &settings.certificate {
        ServerCertificate::Files(files) => (files.clone(), files.cert_file.clone()),
        ServerCertificate::SelfSigned {
            state_dir,
            subject_alt_names,
        } => {
            let mut names = subject_alt_names.clone();
            for ip in listen_ips.iter().filter(|ip| !ip.is_unspecified()) {
                let ip = ip.to_string();
                if !names.contains(&ip) {
                    names.push(ip);
                }
            }
            let files = ensure_self_signed(state_dir, &names)?;
            let path = files.cert_file.clone();
            (files, path)
        }
    };
    let default = Arc::new(load_certified_key(&default_files, provider)?);
    let mut by_name = HashMap::new();
    for sni in &settings.sni_certificates {
        let key = Arc::new(load_certified_key(&sni.files, provider)?);
        by_name.insert(sni.server_name.to_ascii_lowercase(), key);
    }
    let resolver = Arc::new(SniResolver { default, by_name });

    let server_builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| tls_config_error(&e))?;
    let server_builder = match &settings.client_certificates {
        ClientCertificatePolicy::None => server_builder.with_no_client_auth(),
        ClientCertificatePolicy::Optional { ca_file } => {
            let roots = Arc::new(load_roots(std::slice::from_ref(ca_file))?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_config_error(&e))?;
            server_builder.with_client_cert_verifier(verifier)
        }
        ClientCertificatePolicy::Required { ca_file } => {
            let roots = Arc::new(load_roots(std::slice::from_ref(ca_file))?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| tls_config_error(&e))?;
            server_builder.with_client_cert_verifier(verifier)
        }
    };
    let server = Arc::new(server_builder.with_cert_resolver(resolver));
    Ok((server, certificate_file))
}

/// The outbound configurations: verifying against the trusted CAs, and accepting any
/// certificate (lab trunks).
fn client_configs(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<ClientConfig>, Arc<ClientConfig>), TransportError> {
    let ca_files = if settings.trusted_ca_files.is_empty() {
        SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .into_iter()
            .collect()
    } else {
        settings.trusted_ca_files.clone()
    };
    if ca_files.is_empty() {
        tracing::warn!(
            "no trusted CA files configured and no system CA bundle found: outbound TLS \
                 with server verification will fail"
        );
    }
    let roots = load_roots(&ca_files)?;
    let client_cert = settings
        .client_certificate
        .as_ref()
        .map(load_chain_and_key)
        .transpose()?;

    let verifying = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| tls_config_error(&e))?
        .with_root_certificates(roots);
    let verifying = match client_cert
        .as_ref()
        .map(|(chain, key)| (chain.clone(), key.clone_key()))
    {
        Some((chain, key)) => verifying
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_config_error(&e))?,
        None => verifying.with_no_client_auth(),
    };
    let accept_any = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| tls_config_error(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate {
            algorithms: provider.signature_verification_algorithms,
        }));
    let accept_any = match client_cert {
        Some((chain, key)) => accept_any
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_config_error(&e))?,
        None => accept_any.with_no_client_auth(),
    };
    Ok((Arc::new(verifying), Arc::new(accept_any)))
}

/// Picks the certificate by SNI, falling back to the default one (also for clients that send
/// no SNI, or an IP address).
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn lookup(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(key) = self.by_name.get(&name) {
            return key.clone();
        }
        // One label under a wildcard: `a.example.com` matches `*.example.com`.
        name.split_once('.')
            .and_then(|(_, parent)| self.by_name.get(&format!("*.{parent}")))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(client_hello.server_name()))
    }
}

/// The lab-trunk verifier: any certificate is accepted, but the handshake signatures are still
/// checked (so the peer must own the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyServerCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn certificate_error(path: &Path, reason: impl std::fmt::Display) -> TransportError {
    TransportError::Certificate {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| certificate_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate_error(path, e))?;
    if certs.is_empty() {
        return Err(certificate_error(path, "no CERTIFICATE in PEM file"));
    }
    Ok(certs)
}

fn load_chain_and_key(
    files: &CertificateFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TransportError> {
    let chain = load_certs(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| certificate_error(&files.key_file, e))?;
    Ok((chain, key))
}

fn load_certified_key(
    files: &CertificateFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TransportError> {
    let (chain, key) = load_chain_and_key(files)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| certificate_error(&files.key_file, e))?;
    let certified = CertifiedKey::new(chain, signing_key);
    // A key that does not belong to the certificate only shows up at the first handshake
    // otherwise; refuse to start instead.
    certified
        .keys_match()
        .map_err(|e| certificate_error(&files.cert_file, e))?;
    Ok(certified)
}

fn load_roots(files: &[PathBuf]) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for file in files {
        for cert in load_certs(file)? {
            roots.add(cert).map_err(|e| certificate_error(file, e))?;
        }
    }
    Ok(roots)
}

/// Paths of the persisted self-signed certificate and key in `state_dir`.
pub fn self_signed_files(state_dir: &Path) -> CertificateFiles {
    CertificateFiles {
        cert_file: state_dir.join(SELF_SIGNED_CERT_FILE),
        key_file: state_dir.join(SELF_SIGNED_KEY_FILE),
    }
}

/// Returns the persisted self-signed certificate in `state_dir`, generating it first when
/// either file is missing. The key is written with mode 0600 (and tightened to 0600 if an
/// existing one is looser); both files are written to a temporary name and renamed, so a crash
/// never leaves half a key.
pub fn ensure_self_signed(
    state_dir: &Path,
    subject_alt_names: &[String],
) -> Result<CertificateFiles, TransportError> {
    let files = self_signed_files(state_dir);
    let state_error = |source| TransportError::StateDir {
        path: state_dir.to_owned(),
        source,
    };
    if files.cert_file.exists() && files.key_file.exists() {
        let mode = fs::metadata(&files.key_file)
            .map_err(state_error)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                key = %files.key_file.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "TLS key readable by others; setting mode 0600"
            );
            fs::set_permissions(&files.key_file, fs::Permissions::from_mode(0o600))
                .map_err(state_error)?;
        }
        return Ok(files);
    }
    fs::create_dir_all(state_dir).map_err(state_error)?;
    let mut params = rcgen::CertificateParams::new(subject_alt_names.to_vec())
        .map_err(|e| tls_config_error(&e))?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "sip-controller self-signed");
    params.distinguished_name = name;
    let key = rcgen::KeyPair::generate().map_err(|e| tls_config_error(&e))?;
    let cert = params.self_signed(&key).map_err(|e| tls_config_error(&e))?;
    write_atomically(&files.key_file, key.serialize_pem().as_bytes(), 0o600)
        .map_err(state_error)?;
    write_atomically(&files.cert_file, cert.pem().as_bytes(), 0o644).map_err(state_error)?;
    tracing::info!(
        cert = %files.cert_file.display(),
        names = ?subject_alt_names,
        "generated a self-signed TLS certificate"
    );
    Ok(files)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash may exist; it holds nothing we need.
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sipc-tls-{tag}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn self_signed_is_generated_once_and_reused() {
        let dir = temp_dir("persist");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = ensure_self_signed(&dir, &names).unwrap();
        let pem = fs::read(&first.cert_file).unwrap();
        let key_mode = fs::metadata(&first.key_file).unwrap().permissions().mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let second = ensure_self_signed(&dir, &names).unwrap();
        assert_eq!(second, first);
        assert_eq!(fs::read(&second.cert_file).unwrap(), pem);
        let cert = load_certs(&first.cert_file).unwrap();
        assert_eq!(
            certificate_subject(&cert[0]).as_deref(),
            Some("CN=sip-controller self-signed")
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn loose_key_permissions_are_tightened() {
        let dir = temp_dir("mode");
        let files = ensure_self_signed(&dir, &["localhost".to_owned()]).unwrap();
        fs::set_permissions(&files.key_file, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_self_signed(&dir, &["localhost".to_owned()]).unwrap();
        let mode = fs::metadata(&files.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sni_resolver_matches_exact_wildcard_and_falls_back() {
        let dir = temp_dir("sni");
        let provider = provider();
        let mk = |sub: &str, name: &str| {
            let files = ensure_self_signed(&dir.join(sub), &[name.to_owned()]).unwrap();
            Arc::new(load_certified_key(&files, &provider).unwrap())
        };
        let default = mk("default", "localhost");
        let exact = mk("exact", "sip.example.com");
        let wildcard = mk("wild", "*.example.net");
        let resolver = SniResolver {
            default: default.clone(),
            by_name: HashMap::from([
                ("sip.example.com".to_owned(), exact.clone()),
                ("*.example.net".to_owned(), wildcard.clone()),
            ]),
        };
        assert!(Arc::ptr_eq(
            &resolver.lookup(Some("SIP.example.com")),
            &exact
        ));
        assert!(Arc::ptr_eq(
            &resolver.lookup(Some("a.example.net")),
            &wildcard
        ));
        assert!(Arc::ptr_eq(
            &resolver.lookup(Some("a.b.example.net")),
            &default
        ));
        assert!(Arc::ptr_eq(&resolver.lookup(Some("other.org")), &default));
        assert!(Arc::ptr_eq(&resolver.lookup(None), &default));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn mismatched_key_is_refused_at_load() {
        let dir = temp_dir("mismatch");
        let a = ensure_self_signed(&dir.join("a"), &["a".to_owned()]).unwrap();
        let b = ensure_self_signed(&dir.join("b"), &["b".to_owned()]).unwrap();
        let mixed = CertificateFiles {
            cert_file: a.cert_file,
            key_file: b.key_file,
        };
        assert!(matches!(
            load_certified_key(&mixed, &provider()),
            Err(TransportError::Certificate { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_certificate_file_is_a_certificate_error() {
        let missing = Path::new("/nonexistent/sipc.pem");
        let err = load_certs(missing).unwrap_err();
        assert!(
            matches!(&err, TransportError::Certificate { path, .. } if path == missing),
            "{err:?}"
        );
    }
}
