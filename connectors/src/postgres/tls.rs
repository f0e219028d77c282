//! TLS to Postgres, configured as libpq takes it in the URL: `sslmode` (`disable`, `prefer`,
//! the default, `require`, `verify-ca`, `verify-full`), `sslrootcert` (PEM CA file; without
//! it the system's CA store), `sslcert` and `sslkey` (a client certificate). The same settings
//! serve tokio-postgres's connections (catalog, sinks) and sluice's own wire connections
//! (replication, snapshot COPY). What the modes check is in `crate::tls`.

use rustls::ClientConfig;

use crate::tls::{Dialect, TlsFileError};
pub use crate::tls::{SslMode, TlsSettings, WireStream, WireTls};
use crate::UrlError;

/// Splits libpq's TLS parameters off `url` (tokio-postgres does not know `verify-ca` and
/// `verify-full`, nor the certificate files): the URL without them, and the settings.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), UrlError> {
    crate::tls::split_url(url, Dialect::Postgres, &[])
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
    match crate::tls::failure_in(err, tls.mode, Dialect::Postgres) {
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
    let wire = tls.wire(&host).ok()??;
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
        b'N' => {
            return match tls.refused("turn on ssl in the server's postgresql.conf") {
                None => Ok(WireStream::Plain(tcp)),
                Some(reason) => Err(failed(reason)),
            }
        }
        other => {
            return Err(failed(format!(
                "the server answered the TLS request with {other:#04x}, not S or N: is this a \
                 Postgres server?"
            )))
        }
    }
    tls.handshake(tcp).await.map_err(|err| match err {
        Ok(reason) => failed(reason),
        Err(io) => super::PostgresError::Io(io),
    })
}
