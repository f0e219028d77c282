//! The snapshot's own MySQL connection: the client protocol from the handshake to binary result
//! rows, which are read where they lie in the read buffer.
//!
//! Why not mysql_async here: for every row it reads the packet into a pooled buffer, tries it as
//! an OK and as an ERR packet (allocating an `io::Error` for each failed try), reads the clock,
//! and builds a `Row` (a `Vec` of values and a shared column list) that the snapshot then
//! unpacks. On a 1,000,000-row table that was a quarter of sluice's CPU time. The packet
//! structures (handshake, auth data, column definitions, statement execution, binary values)
//! come from mysql_common, the protocol crate under mysql_async; this module adds the framing
//! and the command sequences. Its errors are mysql_async's, so callers classify them one way.
//!
//! Covered: TCP, with TLS as the URL's `ssl-mode` asks (`crate::mysql::tls`);
//! mysql_native_password and caching_sha2_password (fast auth, and full auth: the password
//! over TLS, else encrypted with the server's RSA key), also through an auth switch. Other
//! plugins get an error that names them. Not covered: compression, which the MySQL source does
//! not use anywhere.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use mysql_async::{Error, Opts, Value as My};
use mysql_common::constants::{CapabilityFlags, ColumnFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, Column, ComStmtExecuteRequestBuilder, ErrPacket,
    HandshakePacket, HandshakeResponse, SslRequest, StmtPacket,
};
use mysql_common::proto::MySerialize;
use mysql_common::value::{BinValue, ValueDeserializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::{SslMode, WireStream, WireTls};

type Result<T> = std::result::Result<T, Error>;

/// A packet carries at most this much payload; a longer payload continues in the next packets.
const MAX_PAYLOAD: usize = 0xff_ffff;
/// The read buffer's size; refills ask for half of it, so that it compacts in place.
const READ_BUFFER: usize = 256 * 1024;
/// How long connecting and logging in may take: a server that accepts the connection but never
/// answers (overloaded, or a firewall that drops packets) is reported instead of waited for.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The collation the SSLRequest names (utf8mb4_general_ci); the login sets the session's.
const UTF8MB4_GENERAL_CI: u8 = 45;

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;

/// What the client asks for; the server's handshake may offer less.
fn wanted_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_TRANSACTIONS
}

/// Column types and flags of a result set.
type Columns = Arc<[(ColumnType, ColumnFlags)]>;

pub(super) struct WireConn {
    stream: WireStream,
    buf: BytesMut,
    /// Bytes of the packet handed out last, dropped from `buf` at the next read.
    consumed: usize,
    /// A payload longer than one packet, joined.
    joined: Vec<u8>,
    /// Sequence number of the next packet this side writes.
    seq: u8,
    capabilities: CapabilityFlags,
    /// Prepared statements by their text.
    statements: HashMap<String, u32>,
}

impl WireConn {
    /// Connects (over TLS when `tls` is given and, under `PREFERRED`, the server offers it),
    /// authenticates and runs the options' init statements.
    pub(super) async fn connect(opts: &Opts, tls: Option<&WireTls>) -> Result<WireConn> {
        Self::connect_within(opts, tls, CONNECT_TIMEOUT).await
    }

    async fn connect_within(
        opts: &Opts,
        tls: Option<&WireTls>,
        limit: std::time::Duration,
    ) -> Result<WireConn> {
        match tokio::time::timeout(limit, Self::connect_now(opts, tls)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Io(
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}:{} did not complete the login within {:?}",
                        opts.ip_or_hostname(),
                        opts.tcp_port(),
                        limit
                    ),
                )
                .into(),
            )),
        }
    }

    async fn connect_now(opts: &Opts, tls: Option<&WireTls>) -> Result<WireConn> {
        let stream = TcpStream::connect((opts.ip_or_hostname(), opts.tcp_port())).await?;
        stream.set_nodelay(true)?;
        let mut conn = WireConn {
            stream: WireStream::Plain(stream),
            buf: BytesMut::with_capacity(READ_BUFFER),
            consumed: 0,
            joined: Vec::new(),
            seq: 0,
            capabilities: CapabilityFlags::empty(),
            statements: HashMap::new(),
        };
        let handshake = conn.handshake().await?;
        conn.capabilities = handshake.capabilities() & wanted_capabilities();
        if let Some(tls) = tls {
            conn = conn.secure(tls, &handshake).await?;
        }
        conn.authenticate(opts, handshake).await?;
        for statement in opts.init() {
            conn.query_drop(statement).await?;
        }
        Ok(conn)
    }

    /// The server's greeting.
    async fn handshake(&mut self) -> Result<HandshakePacket<'static>> {
        let payload = self.payload().await?;
        if payload.first() == Some(&0xff) {
            // Refused before the handshake (too many connections, host blocked).
            return Err(server_error(payload, CapabilityFlags::empty()));
        }
        Ok(ParseBuf(payload).parse::<HandshakePacket>(())?.into_owned())
    }

    /// Asks for TLS (an SSLRequest: the login's first fields, with CLIENT_SSL) and shakes
    /// hands; the login continues over TLS. A server without TLS is an error unless the mode
    /// is `PREFERRED`, which stays plain. A certificate that fails its check comes back as the
    /// handshake's I/O error, which `crate::mysql::tls::failure` explains.
    async fn secure(mut self, tls: &WireTls, handshake: &HandshakePacket<'_>) -> Result<WireConn> {
        if !handshake
            .capabilities()
            .contains(CapabilityFlags::CLIENT_SSL)
        {
            return match tls.mode {
                SslMode::Prefer => Ok(self),
                _ => Err(mysql_async::DriverError::NoClientSslFlagFromServer.into()),
            };
        }
        self.capabilities |= CapabilityFlags::CLIENT_SSL;
        let request = SslRequest::new(self.capabilities, MAX_PAYLOAD as u32, UTF8MB4_GENERAL_CI);
        let mut body = Vec::new();
        request.serialize(&mut body);
        self.write_packet(&body).await?;
        let WireStream::Plain(tcp) = self.stream else {
            return Ok(self);
        };
        Ok(WireConn {
            stream: tls.connect(tcp).await?,
            // The server says nothing more until the login, so nothing is left unread here.
            buf: BytesMut::with_capacity(READ_BUFFER),
            consumed: 0,
            ..self
        })
    }

    async fn authenticate(&mut self, opts: &Opts, handshake: HandshakePacket<'_>) -> Result<()> {
        let pass = opts.pass();
        let mut nonce = handshake.scramble_1_ref().to_vec();
        nonce.extend_from_slice(handshake.scramble_2_ref().unwrap_or_default());
        nonce.resize(20, 0);
        let version = handshake
            .maria_db_server_version_parsed()
            .or_else(|| handshake.server_version_parsed())
            .unwrap_or((0, 0, 0));
        // The other plugins arrive as an auth switch.
        let mut plugin = match handshake.auth_plugin() {
            Some(AuthPlugin::CachingSha2Password) => AuthPlugin::CachingSha2Password,
            _ => AuthPlugin::MysqlNativePassword,
        };
        let data = plugin.gen_data(pass, &nonce);
        let response = HandshakeResponse::new(
            data.as_deref(),
            version,
            opts.user().map(str::as_bytes),
            None::<&[u8]>,
            Some(plugin.clone()),
            self.capabilities,
            None,
            MAX_PAYLOAD as u32,
        );
        let mut body = Vec::new();
        response.serialize(&mut body);
        self.write_packet(&body).await?;

        let mut switched = false;
        loop {
            let payload = self.payload().await?.to_vec();
            match payload.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(server_error(&payload, self.capabilities)),
                Some(0xfe) if !switched => {
                    switched = true;
                    let switch: AuthSwitchRequest = ParseBuf(&payload).parse(())?;
                    plugin = switch.auth_plugin().into_owned();
                    if !matches!(
                        plugin,
                        AuthPlugin::MysqlNativePassword | AuthPlugin::CachingSha2Password
                    ) {
                        return Err(unsupported(format!(
                            "the server asks for the auth plugin {}, which sluice's snapshot connection does not speak; give the sluice user mysql_native_password or caching_sha2_password",
                            String::from_utf8_lossy(plugin.as_bytes())
                        )));
                    }
                    nonce = switch.plugin_data().to_vec();
                    let mut body = Vec::new();
                    if let Some(data) = plugin.gen_data(pass, &nonce) {
                        data.serialize(&mut body);
                    }
                    self.write_packet(&body).await?;
                }
                // caching_sha2_password: 3 = the cached fast path worked (OK follows),
                // 4 = full authentication, with the password encrypted by the server's key.
                Some(0x01) if matches!(plugin, AuthPlugin::CachingSha2Password) => {
                    match payload.get(1) {
                        Some(0x03) => {}
                        Some(0x04) if self.stream.is_tls() => {
                            let mut secret = pass.unwrap_or_default().as_bytes().to_vec();
                            secret.push(0);
                            self.write_packet(&secret).await?;
                        }
                        Some(0x04) => {
                            self.write_packet(&[0x02]).await?;
                            let key = self.payload().await?.get(1..).unwrap_or_default().to_vec();
                            let mut secret = pass.unwrap_or_default().as_bytes().to_vec();
                            secret.push(0);
                            for (i, byte) in secret.iter_mut().enumerate() {
                                *byte ^= nonce[i % nonce.len()];
                            }
                            let encrypted = mysql_common::crypto::encrypt(&secret, &key);
                            self.write_packet(&encrypted).await?;
                        }
                        _ => return Err(unexpected(&payload)),
                    }
                }
                _ => return Err(unexpected(&payload)),
            }
        }
    }

    /// Runs a statement and drops whatever it returns.
    pub(super) async fn query_drop(&mut self, sql: &str) -> Result<()> {
        self.query_text(sql).await.map(drop)
    }

    /// Runs a statement over the text protocol; its rows, each value as text (`None` for NULL).
    pub(super) async fn query_text(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.command(COM_QUERY, sql.as_bytes()).await?;
        let Some(count) = self.result_header().await? else {
            return Ok(Vec::new());
        };
        for _ in 0..count {
            self.payload().await?;
        }
        self.expect_eof().await?;
        let mut rows = Vec::new();
        loop {
            let capabilities = self.capabilities;
            let payload = self.payload().await?;
            match payload.first() {
                Some(0xfe) if payload.len() < 9 => return Ok(rows),
                Some(0xff) => return Err(server_error(payload, capabilities)),
                _ => {}
            }
            let mut cells = ParseBuf(payload);
            let mut row = Vec::with_capacity(count);
            for _ in 0..count {
                if cells.0.first() == Some(&0xfb) {
                    cells.skip(1);
                    row.push(None);
                    continue;
                }
                let Some(text) = cells.checked_eat_lenenc_str() else {
                    return Err(unexpected(payload));
                };
                row.push(Some(String::from_utf8_lossy(text).into_owned()));
            }
            rows.push(row);
        }
    }

    /// Executes `sql` as a prepared statement (prepared once per connection) with `params`;
    /// its rows are read one by one from the returned [`Rows`].
    pub(super) async fn exec(&mut self, sql: &str, params: &[My]) -> Result<Rows<'_>> {
        let id = self.prepare(sql).await?;
        let (request, as_long_data) = ComStmtExecuteRequestBuilder::new(id).build(params);
        if as_long_data {
            return Err(unsupported(
                "a statement parameter is too large to send inline".to_owned(),
            ));
        }
        let mut body = Vec::new();
        request.serialize(&mut body);
        self.seq = 0;
        self.write_packet(&body).await?;
        let columns = match self.result_header().await? {
            Some(count) => {
                let columns = self.column_definitions(count).await?;
                self.expect_eof().await?;
                columns
            }
            None => Arc::from(Vec::new()),
        };
        let done = columns.is_empty();
        Ok(Rows {
            conn: self,
            columns,
            done,
        })
    }

    /// Ends the session politely, so that the server does not count an aborted connection.
    pub(super) async fn close(mut self) {
        if self.command(COM_QUIT, &[]).await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }

    async fn prepare(&mut self, sql: &str) -> Result<u32> {
        if let Some(id) = self.statements.get(sql) {
            return Ok(*id);
        }
        self.command(COM_STMT_PREPARE, sql.as_bytes()).await?;
        let capabilities = self.capabilities;
        let payload = self.payload().await?;
        if payload.first() == Some(&0xff) {
            return Err(server_error(payload, capabilities));
        }
        let prepared: StmtPacket = ParseBuf(payload).parse(())?;
        let (id, params, columns) = (
            prepared.statement_id(),
            prepared.num_params(),
            prepared.num_columns(),
        );
        for count in [params, columns] {
            if count > 0 {
                for _ in 0..count {
                    self.payload().await?;
                }
                self.expect_eof().await?;
            }
        }
        self.statements.insert(sql.to_owned(), id);
        Ok(id)
    }

    async fn column_definitions(&mut self, count: usize) -> Result<Columns> {
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let column: Column = ParseBuf(self.payload().await?).parse(())?;
            columns.push((column.column_type(), column.flags()));
        }
        Ok(columns.into())
    }

    /// The first packet of a response: `None` for OK (no result set), else the column count.
    async fn result_header(&mut self) -> Result<Option<usize>> {
        let capabilities = self.capabilities;
        let payload = self.payload().await?;
        match payload.first() {
            Some(0x00) => Ok(None),
            Some(0xff) => Err(server_error(payload, capabilities)),
            Some(0xfb) => Err(unsupported(
                "the server asked for a LOCAL INFILE".to_owned(),
            )),
            Some(_) => {
                let mut header = ParseBuf(payload);
                match header.checked_eat_lenenc_int() {
                    Some(count) => Ok(Some(count as usize)),
                    None => Err(unexpected(payload)),
                }
            }
            None => Err(unexpected(payload)),
        }
    }

    async fn expect_eof(&mut self) -> Result<()> {
        let capabilities = self.capabilities;
        let payload = self.payload().await?;
        match payload.first() {
            Some(0xfe) if payload.len() < 9 => Ok(()),
            Some(0xff) => Err(server_error(payload, capabilities)),
            _ => Err(unexpected(payload)),
        }
    }

    async fn command(&mut self, command: u8, body: &[u8]) -> Result<()> {
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(command);
        payload.extend_from_slice(body);
        self.seq = 0;
        self.write_packet(&payload).await
    }

    async fn write_packet(&mut self, payload: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
        let mut last_len = 0;
        while let Some(chunk) = chunks.next() {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(chunk);
            last_len = chunk.len();
            if chunks.peek().is_none() {
                break;
            }
        }
        // An empty payload, or one that ends exactly on a packet boundary, ends with an empty
        // packet.
        if payload.is_empty() || last_len == MAX_PAYLOAD {
            out.extend_from_slice(&[0, 0, 0, self.seq]);
            self.seq = self.seq.wrapping_add(1);
        }
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// The next payload; valid until the next read.
    async fn payload(&mut self) -> Result<&[u8]> {
        self.buf.advance(self.consumed);
        self.consumed = 0;
        let len = self.packet_header().await?;
        if len < MAX_PAYLOAD {
            self.fill(4 + len).await?;
            self.consumed = 4 + len;
            return Ok(&self.buf[4..4 + len]);
        }
        self.joined.clear();
        let mut len = len;
        loop {
            self.fill(4 + len).await?;
            self.joined.extend_from_slice(&self.buf[4..4 + len]);
            self.buf.advance(4 + len);
            if len < MAX_PAYLOAD {
                return Ok(&self.joined);
            }
            len = self.packet_header().await?;
        }
    }

    /// Reads a packet header; returns its payload length.
    async fn packet_header(&mut self) -> Result<usize> {
        self.fill(4).await?;
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], 0]) as usize;
        self.seq = self.buf[3].wrapping_add(1);
        Ok(len)
    }

    async fn fill(&mut self, want: usize) -> Result<()> {
        while self.buf.len() < want {
            self.buf
                .reserve((READ_BUFFER / 2).max(want - self.buf.len()));
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )
                .into());
            }
        }
        Ok(())
    }
}

/// The rows of an executed statement.
pub(super) struct Rows<'a> {
    conn: &'a mut WireConn,
    columns: Columns,
    done: bool,
}

impl Rows<'_> {
    /// The next row, or `None` after the last.
    pub(super) async fn next(&mut self) -> Result<Option<BinaryRow<'_>>> {
        if self.done {
            return Ok(None);
        }
        let capabilities = self.conn.capabilities;
        let payload = self.conn.payload().await?;
        match payload.first() {
            Some(0x00) => BinaryRow::new(&self.columns, payload).map(Some),
            Some(0xfe) if payload.len() < 9 => {
                self.done = true;
                Ok(None)
            }
            Some(0xff) => {
                self.done = true;
                Err(server_error(payload, capabilities))
            }
            _ => Err(unexpected(payload)),
        }
    }
}

/// One row of the binary protocol; values are taken in column order.
pub(super) struct BinaryRow<'a> {
    columns: &'a [(ColumnType, ColumnFlags)],
    nulls: &'a [u8],
    values: ParseBuf<'a>,
    next: usize,
}

impl<'a> BinaryRow<'a> {
    fn new(columns: &'a [(ColumnType, ColumnFlags)], payload: &'a [u8]) -> Result<BinaryRow<'a>> {
        // A header byte, then a NULL bitmap whose first two bits are unused.
        let bitmap = (columns.len() + 7 + 2) / 8;
        if payload.len() < 1 + bitmap {
            return Err(unexpected(payload));
        }
        Ok(BinaryRow {
            columns,
            nulls: &payload[1..1 + bitmap],
            values: ParseBuf(&payload[1 + bitmap..]),
            next: 0,
        })
    }

    /// The next column's value, with strings (text, decimals, blobs, JSON) borrowed from the
    /// buffer rather than copied into a value of their own.
    pub(super) fn next_cell(&mut self) -> Result<Cell<'a>> {
        let Some(&(column_type, _)) = self.columns.get(self.next) else {
            return self.next_value().map(Cell::Value);
        };
        if !is_string(column_type) || self.is_null(self.next) {
            return self.next_value().map(Cell::Value);
        }
        self.next += 1;
        match self.values.checked_eat_lenenc_str() {
            Some(bytes) => Ok(Cell::Bytes(bytes)),
            None => Err(unexpected(self.values.0)),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        let bit = i + 2;
        self.nulls[bit / 8] & (1 << (bit % 8)) != 0
    }

    /// The next column's value.
    pub(super) fn next_value(&mut self) -> Result<My> {
        let i = self.next;
        let Some(&(column_type, flags)) = self.columns.get(i) else {
            return Err(unsupported(format!(
                "a row has {} columns; value {} was asked for",
                self.columns.len(),
                i + 1
            )));
        };
        self.next += 1;
        if self.is_null(i) {
            return Ok(My::NULL);
        }
        let value: ValueDeserializer<BinValue> = self.values.parse((column_type, flags))?;
        Ok(value.0)
    }
}

/// A value of a binary row: strings as they lie in the buffer, the rest decoded.
pub(super) enum Cell<'a> {
    Bytes(&'a [u8]),
    Value(My),
}

/// Types the binary protocol sends as a length-prefixed string.
fn is_string(column_type: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        column_type,
        MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_SET
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_BIT
            | MYSQL_TYPE_GEOMETRY
            | MYSQL_TYPE_JSON
    )
}

fn server_error(payload: &[u8], capabilities: CapabilityFlags) -> Error {
    match ParseBuf(payload).parse::<ErrPacket>(capabilities) {
        Ok(ErrPacket::Error(error)) => error.into(),
        Ok(ErrPacket::Progress(_)) => unexpected(payload),
        Err(err) => err.into(),
    }
}

fn unexpected(payload: &[u8]) -> Error {
    mysql_async::DriverError::UnexpectedPacket {
        payload: payload.iter().take(64).copied().collect(),
    }
    .into()
}

fn unsupported(message: String) -> Error {
    Error::Other(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_never_answers_the_login_is_reported_not_waited_for() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Accepts the connection and then says nothing, as a hung server would.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let held = sluice_core::task::spawn_in_span(async move { listener.accept().await });
            let opts = Opts::from_url(&format!("mysql://root@127.0.0.1:{port}")).unwrap();
            let started = std::time::Instant::now();
            let err = WireConn::connect_within(&opts, None, std::time::Duration::from_millis(300))
                .await
                .err()
                .expect("the login cannot succeed");
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "127.0.0.1:{port} did not complete the login within"
                )),
                "{text}"
            );
            drop(held);
        });
    }
}
