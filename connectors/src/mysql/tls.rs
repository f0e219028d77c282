//! TLS to MySQL and MariaDB, configured as the MySQL client takes it, in the URL: `ssl-mode`
//! (`DISABLED`, `PREFERRED`, the default, `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`; any case),
//! `ssl-ca` (PEM CA file; without it the system's CA store), `ssl-cert` and `ssl-key` (a client
//! certificate). `ssl_mode`, `ssl_ca`, `ssl_cert` and `ssl_key` are read too. The same settings
//! serve mysql_async's connections (catalog, binlog, sinks) and the snapshot's own reader
//! (`source/snapshot/wire.rs`). What the modes check is in `crate::tls`.
//!
//! mysql_async has no "prefer": it either requires TLS or never asks. So `PREFERRED` reads the
//! server's greeting first ([`settle`]) and asks for TLS when the server offers it.

use std::path::Path;

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};
use sluice_core::redact::SecretUrl;

use crate::tls::{Dialect, SslMode, TlsSettings, WireTls};
use crate::UrlError;

/// A MySQL URL, read: the driver's options and the TLS settings, applied at connect time
/// ([`MysqlUrl::settled`]).
#[derive(Debug, Clone)]
pub struct MysqlUrl {
    /// Without TLS options yet.
    pub opts: Opts,
    pub tls: TlsSettings,
}

impl MysqlUrl {
    /// Reads `url` (its password from `password_file` when given), with the session's `init`
    /// statements; `example` is a URL of the expected shape, for the error.
    pub fn read(
        url: &SecretUrl,
        password_file: Option<&Path>,
        init: &str,
        example: &str,
    ) -> Result<MysqlUrl, UrlError> {
        let (plain, tls) = split_url(url.expose())?;
        let opts = Opts::from_url(&plain).map_err(|e| {
            UrlError(format!(
                "{} is not a valid MySQL URL ({example}): {e}",
                sluice_core::redact::redact_connection_string(url.expose())
            ))
        })?;
        // Checked now, so that a bad CA file is a config error rather than a connect error.
        ssl_opts(&tls)?;
        let mut builder = OptsBuilder::from_opts(opts).init(vec![init.to_owned()]);
        if let Some(path) = password_file {
            let password = std::fs::read_to_string(path)
                .map_err(|e| UrlError(format!("password_file {}: {e}", path.display())))?;
            builder = builder.pass(Some(password.trim_end_matches(['\n', '\r']).to_owned()));
        }
        Ok(MysqlUrl {
            opts: builder.into(),
            tls,
        })
    }

    /// The options to connect with: TLS as the settings ask ([`settle`]).
    pub async fn settled(&self) -> Result<Opts, UrlError> {
        settle(self.opts.clone(), &self.tls).await
    }

    /// TLS for sluice's own connections made with `settled` options (None: plain).
    pub fn wire(&self, settled: &Opts) -> Result<Option<WireTls>, UrlError> {
        if settled.ssl_opts().is_none() || settled.socket().is_some() {
            return Ok(None);
        }
        self.tls.wire(settled.ip_or_hostname())
    }
}

/// Other spellings of the parameters, and the dialect's.
const ALIASES: [(&str, &str); 4] = [
    ("ssl_mode", "ssl-mode"),
    ("ssl_ca", "ssl-ca"),
    ("ssl_cert", "ssl-cert"),
    ("ssl_key", "ssl-key"),
];

/// mysql_async's own TLS parameters, which would bypass these settings.
const DRIVER_PARAMETERS: [&str; 4] = [
    "require_ssl",
    "verify_ca",
    "verify_identity",
    "built_in_roots",
];

/// Splits the TLS parameters off a MySQL URL: the URL mysql_async reads, and the settings.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), UrlError> {
    let (plain, settings) = crate::tls::split_url(url, Dialect::Mysql, &ALIASES)?;
    if let Some((_, query)) = plain.split_once('?') {
        for pair in query.split('&') {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            if DRIVER_PARAMETERS.contains(&key) {
                return Err(UrlError(format!(
                    "the url parameter {key} is not read by sluice: use ssl-mode (DISABLED, \
                     PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY) and ssl-ca=/path/ca.pem"
                )));
            }
        }
    }
    Ok((plain, settings))
}

/// mysql_async's options for the settings (None: no TLS). The checks are the ones
/// `crate::tls` makes for the snapshot's reader: the CA file or else the system's store,
/// the chain unless `PREFERRED`/`REQUIRED` without a CA, the name only under `VERIFY_IDENTITY`.
pub fn ssl_opts(settings: &TlsSettings) -> Result<Option<SslOpts>, UrlError> {
    let mut opts = SslOpts::default();
    match settings.mode {
        SslMode::Disable => return Ok(None),
        // mysql_async builds its verifier from the built-in roots even when it accepts any
        // certificate, and refuses to build one from none: they stay.
        SslMode::Prefer | SslMode::Require if settings.root_cert.is_none() => {
            opts = opts.with_danger_accept_invalid_certs(true);
        }
        mode => {
            // Read here so that a missing or empty file is a config error, not a handshake's.
            settings.roots().map_err(|e| UrlError(e.to_string()))?;
            let certs = match &settings.root_cert {
                Some(path) => vec![path.clone().into()],
                None => rustls_native_certs::load_native_certs()
                    .certs
                    .into_iter()
                    .map(|cert| cert.to_vec().into())
                    .collect(),
            };
            opts = opts
                .with_disable_built_in_roots(true)
                .with_root_certs(certs)
                .with_danger_skip_domain_validation(mode != SslMode::VerifyFull);
        }
    }
    if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
        opts = opts.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    Ok(Some(opts))
}

/// Applies the settings to `opts`; under `PREFERRED`, TLS only when the server offers it
/// (its greeting is read to know; a server that cannot be reached is left to the connection
/// that follows to report).
pub async fn settle(opts: Opts, settings: &TlsSettings) -> Result<Opts, UrlError> {
    let mut ssl = ssl_opts(settings)?;
    if settings.mode == SslMode::Prefer
        && opts.socket().is_none()
        && offers_tls(opts.ip_or_hostname(), opts.tcp_port()).await == Some(false)
    {
        ssl = None;
    }
    Ok(OptsBuilder::from_opts(opts).ssl_opts(ssl).into())
}

/// `host:port` of the options, for messages.
pub fn address(opts: &Opts) -> String {
    format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port())
}

/// Whether the server's greeting offers TLS (None: no greeting could be read).
pub async fn offers_tls(host: &str, port: u16) -> Option<bool> {
    use mysql_common::constants::CapabilityFlags;
    use mysql_common::io::ParseBuf;
    use mysql_common::packets::HandshakePacket;
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut tcp = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let mut header = [0u8; 4];
        tcp.read_exact(&mut header).await.ok()?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.ok()?;
        let handshake = ParseBuf(&payload).parse::<HandshakePacket>(()).ok()?;
        Some(
            handshake
                .capabilities()
                .contains(CapabilityFlags::CLIENT_SSL),
        )
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

/// Why a mysql_async connection failed, when TLS is why: a certificate check that failed, or a
/// server without the TLS the settings require. Either is definite (not worth a retry).
pub fn failure(err: &mysql_async::Error, settings: &TlsSettings) -> Option<String> {
    use mysql_async::{DriverError, IoError, TlsError};
    let (mode, dialect) = (settings.mode, settings.dialect);
    match err {
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => Some(format!(
            "the server does not accept TLS connections and {} requires one: turn on TLS on \
             the server (ssl_cert and ssl_key in its config), or use {}",
            dialect.mode_setting(mode),
            dialect.mode_setting(SslMode::Prefer)
        )),
        mysql_async::Error::Io(IoError::Tls(TlsError::Tls(tls))) => {
            Some(crate::tls::explain(tls, mode, dialect))
        }
        mysql_async::Error::Io(IoError::Tls(other)) => Some(format!(
            "TLS cannot be set up ({}): {other}",
            dialect.mode_setting(mode)
        )),
        mysql_async::Error::Io(IoError::Io(io)) => crate::tls::failure_in(io, mode, dialect),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drivers_own_tls_parameters_point_to_ssl_mode() {
        let err = split_url("mysql://u@h/db?require_ssl=true").unwrap_err().0;
        assert!(
            err.contains("require_ssl is not read by sluice: use ssl-mode"),
            "{err}"
        );
        let (url, tls) = split_url("mysql://u@h/db?ssl-mode=required").unwrap();
        assert_eq!(
            (url.as_str(), tls.mode),
            ("mysql://u@h/db", SslMode::Require)
        );
        assert!(ssl_opts(&tls).unwrap().unwrap().accept_invalid_certs());
        let (_, tls) = split_url("mysql://u@h/db?ssl-mode=DISABLED").unwrap();
        assert!(ssl_opts(&tls).unwrap().is_none());
    }
}
