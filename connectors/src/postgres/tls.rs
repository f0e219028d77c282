//! TLS to Postgres, configured as libpq takes it in the URL: `sslmode` (`disable`, `prefer`,
//! the default, `require`, `verify-ca`, `verify-full`), `sslrootcert` (PEM CA file; without
//! it the system's CA store), `sslcert` and `sslkey` (a client certificate). The same settings
//! serve tokio-postgres's connections (catalog, sinks) and sluice's own wire connections
//! (replication, snapshot COPY).
//!
//! `require` encrypts without checking the certificate (as libpq does without a root
//! certificate); `verify-ca` checks that it chains to a trusted CA; `verify-full` also that it
//! names the host. A certificate that fails its check is a definite error naming the check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::UrlError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, UrlError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(UrlError(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS parameters of a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Splits libpq's TLS parameters off `url` (tokio-postgres does not know `verify-ca` and
/// `verify-full`, nor the certificate files): the URL without them, and the settings.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), UrlError> {
    let mut settings = TlsSettings::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), settings));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = sluice_core::url::percent_decode(value);
        match key {
            "sslmode" => settings.mode = SslMode::parse(&value)?,
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(value)),
            "sslcert" => settings.cert = Some(PathBuf::from(value)),
            "sslkey" => settings.key = Some(PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    if settings.cert.is_some() != settings.key.is_some() {
        return Err(UrlError(
            "sslcert and sslkey go together: give both (a client certificate and its key), or neither".into(),
        ));
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, settings))
}

/// Why TLS cannot be set up from the settings (a file missing or unreadable).
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {reason}", path.display())]
pub struct TlsFileError {
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

fn file_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(String) -> TlsFileError + 'a {
    move |reason| TlsFileError {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

impl TlsSettings {
    /// The rustls configuration for these settings (None with `sslmode=disable`).
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, TlsFileError> {
        // ring: no cmake or assembler toolchain to build. It has no post-quantum key exchange,
        // which rustls marks by deprecating this; aws-lc-rs would bring it at that build cost.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error("TLS", Path::new("(protocol versions)"))(e.to_string()))?;
        let builder = match self.mode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require if self.root_cert.is_none() => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider))),
            mode => {
                let roots = Arc::new(self.roots()?);
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots,
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| {
                    file_error(
                        "sslrootcert",
                        self.root_cert.as_deref().unwrap_or(Path::new("")),
                    )(e.to_string())
                })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Verified {
                        inner,
                        // libpq with a root certificate and sslmode=require checks the chain
                        // too (as verify-ca).
                        check_name: mode == SslMode::VerifyFull,
                    }))
            }
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| file_error("sslcert", cert)(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error("sslcert", cert)(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| file_error("sslkey", key)(e.to_string()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| file_error("sslcert", cert)(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }

    /// The trusted CAs: `sslrootcert`, or the system's store.
    fn roots(&self) -> Result<RootCertStore, TlsFileError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| file_error("sslrootcert", path)(e.to_string()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| file_error("sslrootcert", path)(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| file_error("sslrootcert", path)(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(file_error("sslrootcert", path)(
                        "holds no PEM certificate".into(),
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(file_error("the system CA store", Path::new(""))(
                        "holds no certificate: give the server's CA with sslrootcert=/path/ca.pem"
                            .into(),
                    ));
                }
            }
        }
        Ok(roots)
    }
}

/// A URL's tokio-postgres config with its TLS settings applied, and the connector that does
/// the TLS (`redacted` is the URL as error messages may show it).
pub fn pg_config(
    url: &str,
    redacted: &str,
) -> Result<(tokio_postgres::Config, TlsSettings), UrlError> {
    use std::str::FromStr;
    let (plain, tls) = split_url(url)?;
    let mut config = tokio_postgres::Config::from_str(&plain).map_err(|e| {
        UrlError(format!(
            "{redacted} is not a valid Postgres URL: {}",
            super::ErrorText(&e)
        ))
    })?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, tls))
}

impl TlsSettings {
    /// tokio-postgres's connector for these settings (with `disable` it is never used).
    pub fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsFileError> {
        let config = match self.client_config()? {
            Some(config) => config,
            None => TlsSettings::default()
                .client_config()?
                .expect("prefer has a configuration"),
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
            ClientConfig::clone(&config),
        ))
    }
}

/// TLS for sluice's own wire connections.
#[derive(Clone)]
pub struct WireTls {
    pub mode: SslMode,
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for WireTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireTls({})", self.mode.as_str())
    }
}

/// The name the server's certificate must carry for `host`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, UrlError> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        UrlError(format!(
            "{host:?} is not a host name or address TLS can check"
        ))
    })
}

/// What went wrong in a handshake, for the operator: which check failed, and what to do.
pub fn explain(error: &rustls::Error, settings_mode: SslMode) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate is not signed by a trusted CA (sslmode={}): give the CA \
             that signed it with sslrootcert=/path/ca.pem",
            settings_mode.as_str()
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate does not name the host in the url (sslmode=verify-full): \
              connect by a name the certificate holds, or use sslmode=verify-ca"
            .into(),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's certificate has expired: renew it on the server".into(),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// The TLS failure in an error's source chain (tokio-postgres and tokio-rustls wrap it in I/O
/// errors), explained: a certificate or handshake that failed is not worth retrying.
pub fn failure_in(error: &(dyn std::error::Error + 'static), mode: SslMode) -> Option<String> {
    let mut cause = Some(error);
    while let Some(err) = cause {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(explain(tls, mode));
        }
        // An io::Error's source() skips the error it wraps (its message already shows it).
        cause = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// `require`/`prefer` without a root certificate: encrypted, but the certificate is not
/// checked (libpq's behaviour); handshake signatures still are.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (the chain only) and `verify-full` (the chain and the host name).
#[derive(Debug)]
struct Verified {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The transport of sluice's own wire connections: plain TCP, TLS over it, or a Unix socket.
pub(super) enum WireStream {
    Plain(tokio::net::TcpStream),
    /// Over a read buffer: rustls reads the socket 4 KiB at a time, a syscall each; the
    /// buffer takes what the socket holds in one (streaming over TLS: 40% slower without).
    Tls(Box<tokio_rustls::client::TlsStream<tokio::io::BufReader<tokio::net::TcpStream>>>),
    Unix(tokio::net::UnixStream),
}

/// Why a tokio-postgres connection failed, when TLS is why: a certificate check that failed, or
/// a server without the TLS the settings require. Either is definite (not worth a retry).
pub(super) async fn connect_failure(
    err: &tokio_postgres::Error,
    config: &tokio_postgres::Config,
    tls: &TlsSettings,
) -> Option<String> {
    if err.code().is_some() {
        return None;
    }
    match failure_in(err, tls.mode) {
        Some(reason) => Some(reason),
        None => refused(config, tls).await,
    }
}

/// After a tokio-postgres connection failed (not with a server error): whether the server
/// refuses the TLS these settings require, in words for the operator. tokio-postgres says so
/// only in its message text, so the server is asked once more, directly.
pub(super) async fn refused(config: &tokio_postgres::Config, tls: &TlsSettings) -> Option<String> {
    if matches!(tls.mode, SslMode::Disable | SslMode::Prefer) {
        return None;
    }
    let host = match config.get_hosts() {
        [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
        _ => return None,
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let wire = WireTls {
        mode: tls.mode,
        config: tls.client_config().ok()??,
        server_name: server_name(&host).ok()?,
    };
    let address = format!("{host}:{port}");
    let tcp = tokio::net::TcpStream::connect(&address).await.ok()?;
    match negotiate(tcp, Some(&wire), &address).await {
        Err(super::PostgresError::Tls { reason, .. }) => Some(reason),
        _ => None,
    }
}

/// Postgres' SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Asks the server for TLS on a fresh connection (`tls` None: stays plain) and shakes hands.
/// `prefer` stays plain when the server has no TLS; the other modes refuse to.
pub(super) async fn negotiate(
    mut tcp: tokio::net::TcpStream,
    tls: Option<&WireTls>,
    address: &str,
) -> Result<WireStream, super::PostgresError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(tls) = tls else {
        return Ok(WireStream::Plain(tcp));
    };
    let failed = |reason: String| super::PostgresError::Tls {
        address: address.to_owned(),
        reason,
    };
    tcp.write_all(&SSL_REQUEST)
        .await
        .map_err(super::PostgresError::Io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(super::PostgresError::Io)?;
    match answer[0] {
        b'S' => {}
        b'N' if tls.mode == SslMode::Prefer => return Ok(WireStream::Plain(tcp)),
        b'N' => {
            return Err(failed(format!(
                "the server does not accept TLS connections and sslmode={} requires one: turn \
                 on ssl in the server's postgresql.conf, or use sslmode=prefer",
                tls.mode.as_str()
            )))
        }
        other => {
            return Err(failed(format!(
                "the server answered the TLS request with {other:#04x}, not S or N: is this a \
                 Postgres server?"
            )))
        }
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    let buffered = tokio::io::BufReader::with_capacity(256 * 1024, tcp);
    match connector.connect(tls.server_name.clone(), buffered).await {
        Ok(stream) => Ok(WireStream::Tls(Box::new(stream))),
        Err(err) => match failure_in(&err, tls.mode) {
            Some(reason) => Err(failed(reason)),
            None => Err(super::PostgresError::Io(err)),
        },
    }
}

impl tokio::io::AsyncRead for WireStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            WireStream::Plain(tcp) => std::pin::Pin::new(tcp).poll_read(cx, buf),
            WireStream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_read(cx, buf),
            WireStream::Unix(unix) => std::pin::Pin::new(unix).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for WireStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WireStream::Plain(tcp) => std::pin::Pin::new(tcp).poll_write(cx, buf),
            WireStream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_write(cx, buf),
            WireStream::Unix(unix) => std::pin::Pin::new(unix).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            WireStream::Plain(tcp) => std::pin::Pin::new(tcp).poll_flush(cx),
            WireStream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_flush(cx),
            WireStream::Unix(unix) => std::pin::Pin::new(unix).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            WireStream::Plain(tcp) => std::pin::Pin::new(tcp).poll_shutdown(cx),
            WireStream::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_shutdown(cx),
            WireStream::Unix(unix) => std::pin::Pin::new(unix).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_leave_the_url_and_the_rest_stays() {
        let (url, tls) = split_url(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
        let (url, tls) = split_url("postgres://u@h/db").unwrap();
        assert_eq!(
            (url.as_str(), tls.mode),
            ("postgres://u@h/db", SslMode::Prefer)
        );
        assert!(split_url("postgres://h/db?sslmode=sometimes")
            .unwrap_err()
            .0
            .contains("sslmode=sometimes is not one of"));
        assert!(split_url("postgres://h/db?sslcert=/c.pem").is_err());
    }

    #[test]
    fn a_missing_root_certificate_names_the_file() {
        let tls = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let err = tls.client_config().unwrap_err().to_string();
        assert!(err.starts_with("sslrootcert /nonexistent/ca.pem:"), "{err}");
    }
}
