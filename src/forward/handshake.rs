//! The forward protocol's authentication handshake (HELO, PING, PONG).
//!
//! When a shared key is configured, the server speaks first: HELO carries a random nonce (and a
//! salt for user authentication). The client answers PING with
//! `sha512_hex(salt + client_hostname + nonce + shared_key)` and, when users are configured,
//! `sha512_hex(auth_salt + username + password)`. The server checks both and answers PONG with
//! its own digest, `sha512_hex(salt + server_hostname + nonce + shared_key)`, or with the
//! reason for refusing, and then closes the connection. See the spec's "Handshake Messages":
//! <https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1#handshake-messages>.

use std::time::Duration;

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::msgpack::{Reader, Scanner, Value};

/// Longest PING accepted: six short strings.
const MAX_PING_BYTES: usize = 16 * 1024;

/// What the server checks clients against. The `Debug` form shows no secret.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// The key every client must know.
    pub shared_key: String,
    /// The name the server gives in PONG.
    pub self_hostname: String,
    /// Username and password pairs; empty for no user authentication.
    pub users: Vec<(String, String)>,
    /// Time a client has to answer HELO.
    pub timeout: Duration,
}

impl std::fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeConfig")
            .field("shared_key", &"<redacted>")
            .field("self_hostname", &self.self_hostname)
            .field("users", &self.users.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a client was not let in.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed.
    #[error("socket error during the handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not answer HELO in time.
    #[error("no PING within {0:?}")]
    Timeout(Duration),
    /// The client sent something other than a well-formed PING.
    #[error("expected PING: {0}")]
    BadPing(&'static str),
    /// The client's digest does not match the shared key.
    #[error("shared key mismatch")]
    SharedKeyMismatch,
    /// Unknown user or wrong password.
    #[error("username/password mismatch")]
    UserMismatch,
}

/// Runs the server side of the handshake. Returns the bytes the client sent after its PING,
/// which belong to the first requests.
///
/// # Errors
///
/// [`HandshakeError`] when the client is refused; a PONG with the reason has been sent then,
/// when the socket still allowed it.
pub async fn accept<S>(stream: &mut S, config: &HandshakeConfig) -> Result<Vec<u8>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce = random_bytes();
    let auth_salt = if config.users.is_empty() { Vec::new() } else { random_bytes().to_vec() };
    stream.write_all(&helo(&nonce, &auth_salt)).await?;

    let (ping, rest) = tokio::time::timeout(config.timeout, read_message(stream))
        .await
        .map_err(|_| HandshakeError::Timeout(config.timeout))??;
    let result = check_ping(&ping, &nonce, &auth_salt, config);
    let reply = match &result {
        Ok(salt) => pong(
            true,
            "",
            &config.self_hostname,
            &digest(&[salt, config.self_hostname.as_bytes(), &nonce, config.shared_key.as_bytes()]),
        ),
        Err(error) => pong(false, &error.to_string(), &config.self_hostname, ""),
    };
    stream.write_all(&reply).await?;
    result.map(|_| rest)
}

/// Checks a PING; returns the client's shared-key salt, needed for the PONG digest.
pub(crate) fn check_ping(
    ping: &[u8],
    nonce: &[u8],
    auth_salt: &[u8],
    config: &HandshakeConfig,
) -> Result<Vec<u8>, HandshakeError> {
    let mut reader = Reader::new(ping);
    let bad = HandshakeError::BadPing;
    if reader.read().map_err(|_| bad("not msgpack"))? != Value::Array(6) {
        return Err(bad("not an array of 6 elements"));
    }
    let mut fields = Vec::with_capacity(6);
    for _ in 0..6 {
        match reader.read().map_err(|_| bad("truncated"))? {
            Value::Str(bytes) | Value::Bin(bytes) => fields.push(bytes),
            _ => return Err(bad("an element is not a string")),
        }
    }
    let [kind, hostname, salt, key_digest, username, password] = fields[..] else {
        unreachable!("six fields were read");
    };
    if kind != b"PING" {
        return Err(bad("first element is not \"PING\""));
    }
    let expected = digest(&[salt, hostname, nonce, config.shared_key.as_bytes()]);
    if !bool::from(expected.as_bytes().ct_eq(key_digest)) {
        return Err(HandshakeError::SharedKeyMismatch);
    }
    if !config.users.is_empty() {
        let known = config.users.iter().find(|(name, _)| name.as_bytes() == username);
        let matches = known.is_some_and(|(name, secret)| {
            let expected = digest(&[auth_salt, name.as_bytes(), secret.as_bytes()]);
            bool::from(expected.as_bytes().ct_eq(password))
        });
        if !matches {
            return Err(HandshakeError::UserMismatch);
        }
    }
    Ok(salt.to_vec())
}

/// Reads one msgpack value; returns it and any bytes after it.
async fn read_message<S>(stream: &mut S) -> Result<(Vec<u8>, Vec<u8>), HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let mut scanner = Scanner::new(MAX_PING_BYTES);
    let mut buffer = Vec::new();
    loop {
        if let Some(len) = scanner
            .scan(&buffer)
            .map_err(|_| HandshakeError::BadPing("too large or not msgpack"))?
        {
            let rest = buffer.split_off(len);
            return Ok((buffer, rest));
        }
        let mut chunk = [0u8; 1024];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(HandshakeError::BadPing("connection closed"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// `["HELO", {"nonce": nonce, "auth": salt, "keepalive": true}]`
fn helo(nonce: &[u8], auth_salt: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let write = |out: &mut Vec<u8>| -> Result<(), rmp::encode::ValueWriteError> {
        rmp::encode::write_array_len(out, 2)?;
        rmp::encode::write_str(out, "HELO")?;
        rmp::encode::write_map_len(out, 3)?;
        rmp::encode::write_str(out, "nonce")?;
        rmp::encode::write_bin(out, nonce)?;
        rmp::encode::write_str(out, "auth")?;
        rmp::encode::write_bin(out, auth_salt)?;
        rmp::encode::write_str(out, "keepalive")?;
        rmp::encode::write_bool(out, true).map_err(rmp::encode::ValueWriteError::InvalidMarkerWrite)
    };
    write(&mut out).expect("writing to a Vec cannot fail");
    out
}

/// `["PONG", ok, reason, server_hostname, digest]`
fn pong(ok: bool, reason: &str, hostname: &str, digest: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let write = |out: &mut Vec<u8>| -> Result<(), rmp::encode::ValueWriteError> {
        rmp::encode::write_array_len(out, 5)?;
        rmp::encode::write_str(out, "PONG")?;
        rmp::encode::write_bool(out, ok)
            .map_err(rmp::encode::ValueWriteError::InvalidMarkerWrite)?;
        rmp::encode::write_str(out, reason)?;
        rmp::encode::write_str(out, hostname)?;
        rmp::encode::write_str(out, digest)
    };
    write(&mut out).expect("writing to a Vec cannot fail");
    out
}

/// Lowercase hex SHA-512 of the concatenated parts.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha512::new();
    for part in parts {
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    bytes
}
