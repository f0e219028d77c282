//! sluice's own Postgres connection, speaking the frontend/backend protocol directly on top of
//! `postgres-protocol` (framing, SCRAM). It carries the replication stream (in replication
//! mode) and the snapshot's COPY (in an ordinary session).
//!
//! Why our own transport rather than the `pgwire-replication` crate: sluice must acknowledge to
//! the server exactly the last transaction durable in the log, separately as write and flush
//! LSNs, including a final status update at shutdown, and must later switch to pgoutput protocol
//! 2 (streaming of in-progress transactions) and binary tuples. That crate hard-codes protocol 1,
//! reports one LSN for write, flush and apply, sends nothing at stop and returns errors as strings.
//! Owning ~400 lines here keeps every one of those under our control, with typed errors that
//! carry SQLSTATE codes for retry classification. tokio-postgres, which has no replication
//! support as published, is still used for ordinary queries (catalog, setup).
//!
//! The snapshot reads COPY here rather than through tokio-postgres because its rows are parsed
//! where they lie in the read buffer: tokio-postgres hands each row over as its own `Bytes`
//! through a channel from its connection task, which cost about a tenth of the snapshot's CPU.
//!
//! Reading is cancel-safe: bytes are buffered and a message is only taken out once complete, so
//! `recv` can sit in a `select!` with a timer.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PostgresError;
use sluice_core::position::Lsn;

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
pub(super) const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// An error the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl ServerError {
    fn from_fields(
        mut fields: postgres_protocol::message::backend::ErrorFields<'_>,
    ) -> ServerError {
        let mut error = ServerError {
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }
}

/// Where and how to connect (taken from the source URL). Its `Debug` leaves the password out.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    pub connect_timeout: Duration,
    /// None with `sslmode=disable` (and over a Unix socket).
    pub tls: Option<super::tls::WireTls>,
    /// The socket file, for a Unix-socket host (`host=/var/run/postgresql`).
    pub unix_socket: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .field("tls", &self.tls)
            .field("unix_socket", &self.unix_socket)
            .finish()
    }
}

/// A message of the replication stream.
#[derive(Debug)]
pub(super) enum ReplicationMessage {
    /// WAL data: a pgoutput message starting at `wal_start`.
    XLogData { wal_start: Lsn, data: Bytes },
    /// The server's keepalive: `wal_end` is where its decoding stands (everything committed
    /// before it has been sent); answer at once when `reply_requested`.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

enum Frame {
    CopyBothResponse,
    Message(Message),
}

pub(super) struct WireConnection {
    stream: super::tls::WireStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

/// Which kind of session to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Session {
    /// `replication=database`: replication commands and the replication stream.
    Replication,
    /// An ordinary session: SQL, COPY.
    Sql,
}

/// Session settings that make the text format of values unambiguous for `text_format`.
pub(super) const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "iso_8601"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

impl WireConnection {
    /// Caps the socket's receive buffer at `bytes` (TCP only; the kernel keeps twice that for
    /// its own bookkeeping, as it does for any size set).
    pub(super) fn limit_receive_buffer(&self, bytes: usize) -> Result<(), PostgresError> {
        match self.stream.tcp() {
            Some(tcp) => socket2::SockRef::from(tcp)
                .set_recv_buffer_size(bytes)
                .map_err(PostgresError::Io),
            None => Ok(()),
        }
    }

    /// Connects in logical replication mode (`replication=database`) and authenticates.
    pub(super) async fn connect(params: &ConnectParams) -> Result<WireConnection, PostgresError> {
        WireConnection::open(params, Session::Replication).await
    }

    /// Connects and authenticates.
    pub(super) async fn open(
        params: &ConnectParams,
        session: Session,
    ) -> Result<WireConnection, PostgresError> {
        let timed_out = |address: &str| PostgresError::Connect {
            address: address.to_owned(),
            source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        };
        let stream = match &params.unix_socket {
            Some(path) => {
                let address = path.display().to_string();
                let connect = tokio::net::UnixStream::connect(path);
                let stream = tokio::time::timeout(params.connect_timeout, connect)
                    .await
                    .map_err(|_| timed_out(&address))?
                    .map_err(|source| PostgresError::Connect { address, source })?;
                super::tls::WireStream::Unix(stream)
            }
            None => {
                let address = format!("{}:{}", params.host, params.port);
                let connect = TcpStream::connect(&address);
                let stream = tokio::time::timeout(params.connect_timeout, connect)
                    .await
                    .map_err(|_| timed_out(&address))?
                    .map_err(|source| PostgresError::Connect {
                        address: address.clone(),
                        source,
                    })?;
                stream.set_nodelay(true).map_err(PostgresError::Io)?;
                super::tls::negotiate(stream, params.tls.as_ref(), &address).await?
            }
        };
        let mut conn = WireConnection {
            stream,
            read_buf: BytesMut::with_capacity(256 * 1024),
            write_buf: BytesMut::with_capacity(1024),
        };
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", &params.user),
            ("database", &params.dbname),
            ("application_name", "sluice"),
        ];
        if session == Session::Replication {
            startup.push(("replication", "database"));
        }
        startup.extend_from_slice(SESSION_SETTINGS);
        frontend::startup_message(startup.iter().copied(), &mut conn.write_buf)
            .map_err(PostgresError::Io)?;
        conn.flush().await?;
        conn.authenticate(params).await?;
        loop {
            match conn.next_message().await? {
                Message::ReadyForQuery(_) => return Ok(conn),
                Message::ErrorResponse(body) => {
                    return Err(PostgresError::Server(ServerError::from_fields(
                        body.fields(),
                    )))
                }
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, params: &ConnectParams) -> Result<(), PostgresError> {
        let password = || {
            params.password.clone().ok_or_else(|| PostgresError::Auth {
                user: params.user.clone(),
                reason: "the server asks for a password and none is configured (add it to the url or set password_file)".into(),
            })
        };
        loop {
            match self.next_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password()?, &mut self.write_buf).map_err(PostgresError::Io)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(params.user.as_bytes(), &password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf).map_err(PostgresError::Io)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(mechanism) = mechanisms.next().map_err(PostgresError::Io)? {
                        scram_offered |= mechanism == SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(PostgresError::Auth {
                            user: params.user.clone(),
                            reason: "the server offers no SASL mechanism sluice supports (SCRAM-SHA-256)".into(),
                        });
                    }
                    let mut scram = ScramSha256::new(&password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.write_buf).map_err(PostgresError::Io)?;
                    self.flush().await?;
                    match self.next_message().await? {
                        Message::AuthenticationSaslContinue(body) => scram.update(body.data()).map_err(PostgresError::Io)?,
                        Message::ErrorResponse(body) => return Err(auth_error(params, body)),
                        _ => return Err(PostgresError::protocol("unexpected message during SCRAM")),
                    }
                    frontend::sasl_response(scram.message(), &mut self.write_buf).map_err(PostgresError::Io)?;
                    self.flush().await?;
                    match self.next_message().await? {
                        Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).map_err(PostgresError::Io)?,
                        Message::ErrorResponse(body) => return Err(auth_error(params, body)),
                        _ => return Err(PostgresError::protocol("unexpected message during SCRAM")),
                    }
                }
                Message::ErrorResponse(body) => return Err(auth_error(params, body)),
                _ => {
                    return Err(PostgresError::Auth {
                        user: params.user.clone(),
                        reason: "the server asks for an authentication method sluice does not support (use scram-sha-256, md5, password or trust)".into(),
                    })
                }
            }
        }
    }

    /// Runs a replication command or query with the simple protocol; returns its rows as text.
    pub(super) async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, PostgresError> {
        frontend::query(sql, &mut self.write_buf).map_err(PostgresError::Io)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next_message().await? {
                Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(range) = ranges.next().map_err(PostgresError::Io)? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => {
                    error = Some(ServerError::from_fields(body.fields()))
                }
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(error) => Err(PostgresError::Server(error)),
            None => Ok(rows),
        }
    }

    /// Sends `COPY … TO STDOUT` and waits for the server to start sending rows, which
    /// `copy_out_data` then hands out.
    pub(super) async fn copy_out(&mut self, sql: &str) -> Result<(), PostgresError> {
        frontend::query(sql, &mut self.write_buf).map_err(PostgresError::Io)?;
        self.flush().await?;
        loop {
            match self.next_message().await? {
                Message::CopyOutResponse(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    let error = ServerError::from_fields(body.fields());
                    while !matches!(self.next_message().await?, Message::ReadyForQuery(_)) {}
                    return Err(PostgresError::Server(error));
                }
                _ => {}
            }
        }
    }

    /// Hands the payload of every whole CopyData message in the read buffer to `each`, in
    /// place; reads from the socket only when nothing is buffered. Returns false once the COPY
    /// has ended and the session is ready for the next query.
    pub(super) async fn copy_out_data(
        &mut self,
        mut each: impl FnMut(&[u8]) -> Result<(), PostgresError>,
    ) -> Result<bool, PostgresError> {
        loop {
            let mut at = 0;
            let mut handled = false;
            // CopyData ('d') messages are framed here, without a `Message` per row.
            while self.read_buf.len() - at >= 5 && self.read_buf[at] == b'd' {
                let len =
                    u32::from_be_bytes(self.read_buf[at + 1..at + 5].try_into().expect("4 bytes"))
                        as usize;
                if len < 4 {
                    return Err(PostgresError::protocol("a CopyData message is too short"));
                }
                if self.read_buf.len() - at < len + 1 {
                    break;
                }
                each(&self.read_buf[at + 5..at + 1 + len])?;
                at += len + 1;
                handled = true;
            }
            self.read_buf.advance(at);
            if handled {
                return Ok(true);
            }
            match self.buffered_frame()? {
                Some(Frame::Message(Message::CopyDone | Message::CommandComplete(_))) => {}
                Some(Frame::Message(Message::ReadyForQuery(_))) => return Ok(false),
                Some(Frame::Message(Message::ErrorResponse(body))) => {
                    let error = ServerError::from_fields(body.fields());
                    while !matches!(self.next_message().await?, Message::ReadyForQuery(_)) {}
                    return Err(PostgresError::Server(error));
                }
                Some(Frame::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_))) => {}
                Some(_) => {
                    return Err(PostgresError::protocol("unexpected message in COPY output"))
                }
                None => self.fill().await?,
            }
        }
    }

    /// Sends `START_REPLICATION` and waits for the server to enter COPY BOTH mode.
    pub(super) async fn start_replication(&mut self, command: &str) -> Result<(), PostgresError> {
        frontend::query(command, &mut self.write_buf).map_err(PostgresError::Io)?;
        self.flush().await?;
        loop {
            let message = match self.next_frame().await? {
                Frame::CopyBothResponse => return Ok(()),
                Frame::Message(message) => message,
            };
            if let Message::ErrorResponse(body) = message {
                let error = ServerError::from_fields(body.fields());
                // Drain to ReadyForQuery so the connection stays usable.
                while !matches!(self.next_message().await?, Message::ReadyForQuery(_)) {}
                return Err(PostgresError::Server(error));
            }
        }
    }

    /// The next message of the replication stream. Cancel-safe.
    pub(super) async fn recv(&mut self) -> Result<ReplicationMessage, PostgresError> {
        loop {
            if let Some(message) = self.try_recv()? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    /// The next replication message if one is already buffered, without waiting.
    pub(super) fn try_recv(&mut self) -> Result<Option<ReplicationMessage>, PostgresError> {
        loop {
            let message = match self.buffered_frame()? {
                None => return Ok(None),
                Some(Frame::CopyBothResponse) => {
                    return Err(PostgresError::protocol("unexpected CopyBothResponse"))
                }
                Some(Frame::Message(message)) => message,
            };
            match message {
                Message::CopyData(body) => return decode_copy_data(body.into_bytes()).map(Some),
                // A walsender that stops (the server shuts down) ends the COPY with
                // CommandComplete once its client has confirmed everything it was sent.
                Message::CopyDone | Message::CommandComplete(_) | Message::ReadyForQuery(_) => {
                    return Err(PostgresError::StreamEnded)
                }
                Message::ErrorResponse(body) => {
                    return Err(PostgresError::Server(ServerError::from_fields(
                        body.fields(),
                    )))
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                _ => {
                    return Err(PostgresError::protocol(
                        "unexpected message in the replication stream",
                    ))
                }
            }
        }
    }

    /// Sends a standby status update: `write` is what was received, `flush` what is durable in
    /// the log (the server keeps WAL from `flush` on and reports it as `confirmed_flush_lsn`).
    pub(super) async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        reply_requested: bool,
    ) -> Result<(), PostgresError> {
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(write.0);
        body.put_u64(flush.0);
        body.put_u64(flush.0); // apply: sluice applies nothing itself; durable is applied
        body.put_i64(pg_now_us());
        body.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(body.freeze())
            .map_err(PostgresError::Io)?
            .write(&mut self.write_buf);
        self.flush().await
    }

    /// Ends the stream politely: CopyDone, then Terminate.
    pub(super) async fn close(mut self) {
        frontend::copy_done(&mut self.write_buf);
        frontend::terminate(&mut self.write_buf);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
    }

    /// Writes out the write buffer. Cancel-safe: bytes leave the buffer only once written, so
    /// a message cut off by cancellation is completed by the next flush.
    async fn flush(&mut self) -> Result<(), PostgresError> {
        while !self.write_buf.is_empty() {
            let written = self
                .stream
                .write(&self.write_buf)
                .await
                .map_err(PostgresError::Io)?;
            if written == 0 {
                return Err(PostgresError::Io(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the server stopped reading",
                )));
            }
            self.write_buf.advance(written);
        }
        // TLS keeps encrypted bytes in its own buffer until flushed (plain TCP: a no-op).
        self.stream.flush().await.map_err(PostgresError::Io)
    }

    async fn next_message(&mut self) -> Result<Message, PostgresError> {
        match self.next_frame().await? {
            Frame::Message(message) => Ok(message),
            Frame::CopyBothResponse => Err(PostgresError::protocol("unexpected CopyBothResponse")),
        }
    }

    /// Reads the next whole backend message.
    async fn next_frame(&mut self) -> Result<Frame, PostgresError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Takes one whole message out of the read buffer, if there is one. `postgres-protocol`
    /// does not know CopyBothResponse ('W'), which only replication connections receive, so
    /// that one is framed here.
    fn buffered_frame(&mut self) -> Result<Option<Frame>, PostgresError> {
        if self.read_buf.len() >= 5 && self.read_buf[0] == b'W' {
            let len = u32::from_be_bytes(self.read_buf[1..5].try_into().expect("4 bytes")) as usize;
            if self.read_buf.len() > len {
                self.read_buf.advance(len + 1);
                return Ok(Some(Frame::CopyBothResponse));
            }
            return Ok(None);
        }
        Ok(Message::parse(&mut self.read_buf)
            .map_err(PostgresError::Io)?
            .map(Frame::Message))
    }

    /// Reads more bytes from the socket. Cancel-safe.
    async fn fill(&mut self) -> Result<(), PostgresError> {
        // Asking for less than the buffer's size lets `reserve` move the unread bytes to the
        // front of the same allocation; asking for its whole size would allocate (and, at this
        // size, mmap) a new buffer on every refill.
        if self.read_buf.capacity() - self.read_buf.len() < 64 * 1024 {
            self.read_buf.reserve(128 * 1024);
        }
        let read = self
            .stream
            .read_buf(&mut self.read_buf)
            .await
            .map_err(PostgresError::Io)?;
        if read == 0 {
            return Err(PostgresError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }
}

fn decode_copy_data(mut data: Bytes) -> Result<ReplicationMessage, PostgresError> {
    if data.is_empty() {
        return Err(PostgresError::protocol("empty CopyData message"));
    }
    match data.get_u8() {
        b'w' if data.len() >= 24 => {
            let wal_start = Lsn(data.get_u64());
            let _wal_end = data.get_u64();
            let _send_time = data.get_i64();
            Ok(ReplicationMessage::XLogData { wal_start, data })
        }
        b'k' if data.len() >= 17 => {
            let wal_end = Lsn(data.get_u64());
            let _send_time = data.get_i64();
            let reply_requested = data.get_u8() == 1;
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
            })
        }
        other => Err(PostgresError::protocol(format!(
            "unknown replication message tag {other:#x}"
        ))),
    }
}

fn auth_error(
    params: &ConnectParams,
    body: postgres_protocol::message::backend::ErrorResponseBody,
) -> PostgresError {
    let error = ServerError::from_fields(body.fields());
    PostgresError::Auth {
        user: params.user.clone(),
        reason: error.to_string(),
    }
}

fn pg_now_us() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix - PG_EPOCH_OFFSET_US
}

/// Quotes an identifier for SQL and replication commands.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
