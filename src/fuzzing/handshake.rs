//! The server's check of a client's PING in the forward protocol's handshake.

use std::time::Duration;

use crate::forward::handshake::{HandshakeConfig, check_ping, digest};
use crate::msgpack::{Reader, Value};

/// The nonce of the HELO the fuzzed PINGs answer.
pub const HANDSHAKE_NONCE: &[u8] = b"fuzz-nonce-0123456789";
/// The user-authentication salt of that HELO.
pub const HANDSHAKE_AUTH_SALT: &[u8] = b"fuzz-auth-salt";
/// The server's shared key.
pub const HANDSHAKE_SHARED_KEY: &str = "fuzz shared key";
/// The one user the server knows, and its password.
pub const HANDSHAKE_USER: (&str, &str) = ("fluent", "fuzz password");

/// Checks `data` as a PING, against a server with a shared key only and against one that also
/// knows a user.
///
/// Checks that a PING is let in only when it is an array of six strings starting with "PING"
/// whose shared-key digest was made from the key, and, when users are configured, whose user
/// and password digest match the known user.
pub fn handshake_ping(data: &[u8]) {
    let key_only = config(Vec::new());
    let with_user = config(vec![(HANDSHAKE_USER.0.to_owned(), HANDSHAKE_USER.1.to_owned())]);
    for (server, auth_salt) in [(&key_only, &b""[..]), (&with_user, HANDSHAKE_AUTH_SALT)] {
        let Ok(salt) = check_ping(data, HANDSHAKE_NONCE, auth_salt, server) else {
            continue;
        };
        let fields = ping_fields(data).expect("an accepted PING is six strings");
        let [kind, hostname, ping_salt, key_digest, username, password] = fields[..] else {
            panic!("an accepted PING has {} fields", fields.len());
        };
        assert_eq!(kind, b"PING");
        assert_eq!(salt, ping_salt, "the PONG must use the client's salt");
        let expected =
            digest(&[ping_salt, hostname, HANDSHAKE_NONCE, HANDSHAKE_SHARED_KEY.as_bytes()]);
        assert_eq!(key_digest, expected.as_bytes(), "accepted without the shared key");
        if !server.users.is_empty() {
            let (user, secret) = HANDSHAKE_USER;
            assert_eq!(username, user.as_bytes(), "accepted an unknown user");
            let expected = digest(&[auth_salt, user.as_bytes(), secret.as_bytes()]);
            assert_eq!(password, expected.as_bytes(), "accepted a wrong password");
        }
    }
}

/// A PING that the server built by [`handshake_ping`] accepts, for seeds: its user fields are
/// empty when `with_user` is false.
pub fn valid_ping(hostname: &str, salt: &str, with_user: bool) -> Vec<u8> {
    let key_digest = digest(&[
        salt.as_bytes(),
        hostname.as_bytes(),
        HANDSHAKE_NONCE,
        HANDSHAKE_SHARED_KEY.as_bytes(),
    ]);
    let (user, password) = if with_user {
        let (user, secret) = HANDSHAKE_USER;
        (user.to_owned(), digest(&[HANDSHAKE_AUTH_SALT, user.as_bytes(), secret.as_bytes()]))
    } else {
        (String::new(), String::new())
    };
    rmp_serde::to_vec(&("PING", hostname, salt, key_digest, user, password))
        .expect("strings always encode")
}

fn config(users: Vec<(String, String)>) -> HandshakeConfig {
    HandshakeConfig {
        shared_key: HANDSHAKE_SHARED_KEY.to_owned(),
        self_hostname: "fuzz-server".to_owned(),
        users,
        timeout: Duration::from_secs(1),
    }
}

/// The elements of a PING that is an array of strings (or binaries), read independently of
/// the check under test.
fn ping_fields(data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut reader = Reader::new(data);
    let Ok(Value::Array(len)) = reader.read() else {
        return None;
    };
    (0..len)
        .map(|_| match reader.read() {
            Ok(Value::Str(bytes) | Value::Bin(bytes)) => Some(bytes),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target's checks only run on accepted PINGs: the seeds must hold some.
    #[test]
    fn an_honest_ping_is_accepted_and_a_changed_one_is_not() {
        let with_user = config(vec![(HANDSHAKE_USER.0.to_owned(), HANDSHAKE_USER.1.to_owned())]);
        let good = valid_ping("client", "salt", true);
        let check =
            |ping: &[u8]| check_ping(ping, HANDSHAKE_NONCE, HANDSHAKE_AUTH_SALT, &with_user);
        assert_eq!(check(&good).unwrap(), b"salt");
        let key_only = valid_ping("client", "salt", false);
        assert!(check_ping(&key_only, HANDSHAKE_NONCE, b"", &config(Vec::new())).is_ok());
        assert!(
            check(&key_only).is_err(),
            "a PING without the user is refused by a server with users"
        );
        let mut changed = good.clone();
        *changed.last_mut().unwrap() ^= 0x01;
        assert!(check(&changed).is_err());
        handshake_ping(&good);
        handshake_ping(&key_only);
    }
}
