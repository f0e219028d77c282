//! TLS to databases, with rustls: the settings a URL gives (mode, trusted CA, client
//! certificate), the rustls configuration they make, what a failed handshake means in words for
//! the operator, and the transport of sluice's own wire connections (Postgres replication and
//! COPY, the MySQL snapshot reader). Each database spells the settings its own way
//! ([`Dialect`]): `postgres/tls.rs` reads libpq's, `mysql/tls.rs` the MySQL client's.
//!
//! The modes, from weakest: `Disable`; `Prefer` (TLS when the server offers it, the default of
//! both libpq and the MySQL client); `Require` (TLS or no connection; the certificate is checked
//! only when a CA is given, as both clients do); `VerifyCa` (the certificate chains to a trusted
//! CA); `VerifyFull` (that, and it names the host). A certificate that fails its check is a
//! definite error naming the check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::UrlError;

/// How much TLS a connection insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Whose spelling of the settings a URL uses, so that messages name the parameter the user
/// wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// libpq: `sslmode=verify-full&sslrootcert=…&sslcert=…&sslkey=…`.
    #[default]
    Postgres,
    /// The MySQL client: `ssl-mode=VERIFY_IDENTITY&ssl-ca=…&ssl-cert=…&ssl-key=…`.
    Mysql,
}

const MODES: [SslMode; 5] = [
    SslMode::Disable,
    SslMode::Prefer,
    SslMode::Require,
    SslMode::VerifyCa,
    SslMode::VerifyFull,
];

impl Dialect {
    /// The URL parameter of the mode.
    pub fn mode_key(self) -> &'static str {
        match self {
            Dialect::Postgres => "sslmode",
            Dialect::Mysql => "ssl-mode",
        }
    }

    /// The URL parameter of the trusted CA file.
    pub fn ca_key(self) -> &'static str {
        match self {
            Dialect::Postgres => "sslrootcert",
            Dialect::Mysql => "ssl-ca",
        }
    }

    /// The URL parameters of the client certificate and its key.
    pub fn client_keys(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Postgres => ("sslcert", "sslkey"),
            Dialect::Mysql => ("ssl-cert", "ssl-key"),
        }
    }

    /// A mode as this dialect writes it.
    pub fn mode_name(self, mode: SslMode) -> &'static str {
        match (self, mode) {
            (Dialect::Postgres, SslMode::Disable) => "disable",
            (Dialect::Postgres, SslMode::Prefer) => "prefer",
            (Dialect::Postgres, SslMode::Require) => "require",
            (Dialect::Postgres, SslMode::VerifyCa) => "verify-ca",
            (Dialect::Postgres, SslMode::VerifyFull) => "verify-full",
            (Dialect::Mysql, SslMode::Disable) => "DISABLED",
            (Dialect::Mysql, SslMode::Prefer) => "PREFERRED",
            (Dialect::Mysql, SslMode::Require) => "REQUIRED",
            (Dialect::Mysql, SslMode::VerifyCa) => "VERIFY_CA",
            (Dialect::Mysql, SslMode::VerifyFull) => "VERIFY_IDENTITY",
        }
    }

    /// `key=value` for a mode, as a message shows it.
    pub fn mode_setting(self, mode: SslMode) -> String {
        format!("{}={}", self.mode_key(), self.mode_name(mode))
    }

    /// Reads a mode (MySQL's names in any case, as its client takes them; libpq's `allow`
    /// counts as `prefer`).
    pub fn parse_mode(self, text: &str) -> Result<SslMode, UrlError> {
        if self == Dialect::Postgres && text == "allow" {
            return Ok(SslMode::Prefer);
        }
        let found = MODES.into_iter().find(|&mode| match self {
            Dialect::Postgres => self.mode_name(mode) == text,
            Dialect::Mysql => self.mode_name(mode).eq_ignore_ascii_case(text),
        });
        found.ok_or_else(|| {
            let names: Vec<&str> = MODES.iter().map(|&m| self.mode_name(m)).collect();
            UrlError(format!(
                "{}={text} is not one of {}",
                self.mode_key(),
                names.join(", ")
            ))
        })
    }
}

/// The TLS parameters of a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub dialect: Dialect,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Splits a dialect's TLS parameters off `url` (the drivers do not know them, or not all):
/// the URL without them, and the settings. `aliases` maps other spellings to the dialect's.
pub fn split_url(
    url: &str,
    dialect: Dialect,
    aliases: &[(&str, &str)],
) -> Result<(String, TlsSettings), UrlError> {
    let mut settings = TlsSettings {
        dialect,
        ..TlsSettings::default()
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), settings));
    };
    let (cert_key, key_key) = dialect.client_keys();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = aliases
            .iter()
            .find(|(alias, _)| *alias == key)
            .map_or(key, |(_, key)| *key);
        let value = sluice_core::url::percent_decode(value);
        if key == dialect.mode_key() {
            settings.mode = dialect.parse_mode(&value)?;
        } else if key == dialect.ca_key() {
            settings.root_cert = Some(PathBuf::from(value));
        } else if key == cert_key {
            settings.cert = Some(PathBuf::from(value));
        } else if key == key_key {
            settings.key = Some(PathBuf::from(value));
        } else {
            kept.push(pair);
        }
    }
    if settings.cert.is_some() != settings.key.is_some() {
        return Err(UrlError(format!(
            "{cert_key} and {key_key} go together: give both (a client certificate and its key), or neither"
        )));
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
    /// The rustls configuration for these settings (None when TLS is off).
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, TlsFileError> {
        let ca_key = self.dialect.ca_key();
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
                    file_error(ca_key, self.root_cert.as_deref().unwrap_or(Path::new("")))(
                        e.to_string(),
                    )
                })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Verified {
                        inner,
                        // With a CA given, `require` checks the chain too (as verify-ca).
                        check_name: mode == SslMode::VerifyFull,
                    }))
            }
        };
        let (cert_key, key_key) = self.dialect.client_keys();
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| file_error(cert_key, cert)(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error(cert_key, cert)(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| file_error(key_key, key)(e.to_string()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| file_error(cert_key, cert)(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }

    /// The trusted CAs: the given CA file, or the system's store.
    pub fn roots(&self) -> Result<RootCertStore, TlsFileError> {
        let ca_key = self.dialect.ca_key();
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| file_error(ca_key, path)(e.to_string()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| file_error(ca_key, path)(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| file_error(ca_key, path)(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(file_error(ca_key, path)("holds no PEM certificate".into()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(file_error("the system CA store", Path::new(""))(format!(
                        "holds no certificate: give the server's CA with {ca_key}=/path/ca.pem"
                    )));
                }
            }
        }
        Ok(roots)
    }

    /// The settings for sluice's own wire connections to `host` (None when TLS is off).
    pub fn wire(&self, host: &str) -> Result<Option<WireTls>, UrlError> {
        let Some(config) = self.client_config().map_err(|e| UrlError(e.to_string()))? else {
            return Ok(None);
        };
        Ok(Some(WireTls {
            mode: self.mode,
            dialect: self.dialect,
            config,
            server_name: server_name(host)?,
        }))
    }
}

/// TLS for sluice's own wire connections.
#[derive(Clone)]
pub struct WireTls {
    pub mode: SslMode,
    pub dialect: Dialect,
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for WireTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireTls({})", self.dialect.mode_setting(self.mode))
    }
}

impl WireTls {
    /// The TLS handshake over `tcp`, after the server agreed to it.
    pub async fn connect(&self, tcp: tokio::net::TcpStream) -> std::io::Result<WireStream> {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let buffered = tokio::io::BufReader::with_capacity(256 * 1024, tcp);
        let stream = connector
            .connect(self.server_name.clone(), buffered)
            .await?;
        Ok(WireStream::Tls(Box::new(stream)))
    }

    /// [`WireTls::connect`], with a certificate that fails its check explained
    /// (`Err(Ok(reason))`) and other failures as they are.
    pub async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> Result<WireStream, Result<String, std::io::Error>> {
        self.connect(tcp)
            .await
            .map_err(|err| failure_in(&err, self.mode, self.dialect).ok_or(err))
    }

    /// Why the server's "no TLS" is an error under this mode (None: `prefer` stays plain).
    pub fn refused(&self, how_to_enable: &str) -> Option<String> {
        (self.mode != SslMode::Prefer).then(|| {
            format!(
                "the server does not accept TLS connections and {} requires one: {how_to_enable}, \
                 or use {}",
                self.dialect.mode_setting(self.mode),
                self.dialect.mode_setting(SslMode::Prefer)
            )
        })
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
pub fn explain(error: &rustls::Error, mode: SslMode, dialect: Dialect) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate is not signed by a trusted CA ({}): give the CA \
             that signed it with {}=/path/ca.pem",
            dialect.mode_setting(mode),
            dialect.ca_key()
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the server's certificate does not name the host in the url ({}): connect by a \
             name the certificate holds, or use {}",
            dialect.mode_setting(SslMode::VerifyFull),
            dialect.mode_setting(SslMode::VerifyCa)
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's certificate has expired: renew it on the server".into(),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// The TLS failure in an error's source chain (drivers and tokio-rustls wrap it in I/O errors),
/// explained: a certificate or handshake that failed is not worth retrying.
pub fn failure_in(
    error: &(dyn std::error::Error + 'static),
    mode: SslMode,
    dialect: Dialect,
) -> Option<String> {
    let mut cause = Some(error);
    while let Some(err) = cause {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(explain(tls, mode, dialect));
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

/// `require`/`prefer` without a CA: encrypted, but the certificate is not checked (libpq's
/// and the MySQL client's behaviour); handshake signatures still are.
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
pub enum WireStream {
    Plain(tokio::net::TcpStream),
    /// Over a read buffer: rustls reads the socket 4 KiB at a time, a syscall each; the
    /// buffer takes what the socket holds in one (streaming over TLS: 40% slower without).
    Tls(Box<tokio_rustls::client::TlsStream<tokio::io::BufReader<tokio::net::TcpStream>>>),
    Unix(tokio::net::UnixStream),
}

impl WireStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, WireStream::Tls(_))
    }

    /// The TCP socket underneath, if any.
    pub fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        match self {
            WireStream::Plain(tcp) => Some(tcp),
            WireStream::Tls(tls) => Some(tls.get_ref().0.get_ref()),
            WireStream::Unix(_) => None,
        }
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
    fn each_dialect_reads_its_own_parameters_and_leaves_the_rest() {
        let (url, tls) = split_url(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
            Dialect::Postgres,
            &[],
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
        let (url, tls) = split_url("postgres://u@h/db", Dialect::Postgres, &[]).unwrap();
        assert_eq!(
            (url.as_str(), tls.mode),
            ("postgres://u@h/db", SslMode::Prefer)
        );
        assert!(
            split_url("postgres://h/db?sslmode=sometimes", Dialect::Postgres, &[])
                .unwrap_err()
                .0
                .contains("sslmode=sometimes is not one of disable, prefer")
        );
        assert!(split_url("postgres://h/db?sslcert=/c.pem", Dialect::Postgres, &[]).is_err());

        let (url, tls) = split_url(
            "mysql://u@h/db?ssl_mode=verify_identity&ssl-ca=/ca.pem&prefer_socket=false",
            Dialect::Mysql,
            &[("ssl_mode", "ssl-mode")],
        )
        .unwrap();
        assert_eq!(url, "mysql://u@h/db?prefer_socket=false");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/ca.pem")));
        let err = split_url("mysql://h/db?ssl-mode=verify-full", Dialect::Mysql, &[])
            .unwrap_err()
            .0;
        assert!(
            err.contains("ssl-mode=verify-full is not one of DISABLED, PREFERRED"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_ca_file_names_the_parameter_and_the_file() {
        let tls = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let err = tls.client_config().unwrap_err().to_string();
        assert!(err.starts_with("sslrootcert /nonexistent/ca.pem:"), "{err}");
        let tls = TlsSettings {
            dialect: Dialect::Mysql,
            ..tls
        };
        let err = tls.client_config().unwrap_err().to_string();
        assert!(err.starts_with("ssl-ca /nonexistent/ca.pem:"), "{err}");
    }
}
