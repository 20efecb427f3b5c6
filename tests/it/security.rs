//! Safe on an open network: the forward handshake, TLS, limits, bad input, and Loki
//! credentials that rotate.

use std::io::Write as _;
use std::time::Duration;

use fwd2loki::config::{ForwardTls, ForwardUser};
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat, encode_requests};
use fwd2loki::forward::handshake::digest;
use fwd2loki::msgpack::{Reader, Scanner, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::loki::{Fault, TestLoki};
use crate::support::pki::TestPki;
use crate::support::shipper::{BinaryShipper, PATIENCE, Shipper, docker_record, send_records};

const T0: i64 = 1_764_000_000_000_000_000;

fn record(line: &str) -> Vec<OutgoingEvent> {
    vec![OutgoingEvent::from_json(T0, &docker_record("/app", line))]
}

/// Reads one msgpack value from the stream.
async fn read_value<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut scanner = Scanner::new(1 << 16);
    loop {
        if let Some(len) = scanner.scan(&buffer).expect("valid msgpack") {
            buffer.truncate(len);
            return buffer;
        }
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.expect("readable"), 1, "connection closed");
        buffer.push(byte[0]);
    }
}

/// The strings and binaries of a msgpack value, in order, and its booleans.
fn scalars(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<bool>) {
    let mut reader = Reader::new(bytes);
    let (mut strings, mut bools) = (Vec::new(), Vec::new());
    while !reader.is_empty() {
        match reader.read().expect("valid msgpack") {
            Value::Str(bytes) | Value::Bin(bytes) => strings.push(bytes.to_vec()),
            Value::Bool(value) => bools.push(value),
            _ => {}
        }
    }
    (strings, bools)
}

/// Plays the client side of the handshake with `key` and, optionally, a user; returns the
/// PONG's `ok` and reason, after checking the server's digest when it accepted.
async fn client_handshake<S>(
    stream: &mut S,
    key: &str,
    user: Option<(&str, &str)>,
) -> (bool, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let helo = read_value(stream).await;
    let (strings, _) = scalars(&helo);
    // ["HELO", {"nonce": n, "auth": salt, "keepalive": true}]
    assert_eq!(strings[0], b"HELO");
    assert_eq!(strings[1], b"nonce");
    let nonce = strings[2].clone();
    assert_eq!(strings[3], b"auth");
    let auth_salt = strings[4].clone();

    let (hostname, salt) = ("client.test", "0123456789abcdef");
    let (username, password) = match user {
        Some((name, password)) => {
            (name, digest(&[&auth_salt, name.as_bytes(), password.as_bytes()]))
        }
        None => ("", String::new()),
    };
    let key_digest = digest(&[salt.as_bytes(), hostname.as_bytes(), &nonce, key.as_bytes()]);
    let mut ping = Vec::new();
    rmp::encode::write_array_len(&mut ping, 6).unwrap();
    for part in ["PING", hostname, salt, &key_digest, username, &password] {
        rmp::encode::write_str(&mut ping, part).unwrap();
    }
    stream.write_all(&ping).await.unwrap();

    let pong = read_value(stream).await;
    let (strings, bools) = scalars(&pong);
    // ["PONG", ok, reason, server_hostname, digest]
    assert_eq!(strings[0], b"PONG");
    let reason = String::from_utf8(strings[1].clone()).unwrap();
    if bools[0] {
        let expected = digest(&[salt.as_bytes(), &strings[2], &nonce, key.as_bytes()]);
        assert_eq!(strings[3], expected.as_bytes(), "the server proves it knows the key too");
    }
    (bools[0], reason)
}

fn write_secret(dir: &std::path::Path, name: &str, value: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

#[tokio::test]
async fn the_handshake_lets_in_only_clients_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_secret(dir.path(), "key", "the-shared-key");
    let password_file = write_secret(dir.path(), "password", "pw");
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.input.shared_key_file = Some(key_file.clone());
        config.input.users = vec![ForwardUser { username: "docker".into(), password_file }];
    })
    .await;

    let mut accepted = shipper.connect().await;
    let (ok, reason) =
        client_handshake(&mut accepted, "the-shared-key", Some(("docker", "pw"))).await;
    assert!(ok, "refused: {reason}");
    send_records(&mut accepted, Mode::Message, TimeFormat::EventTime, &record("after auth"), true)
        .await;
    assert_eq!(loki.wait_for_entries(1, PATIENCE).await[0].line, "after auth");

    let cases = [
        ("wrong-key", Some(("docker", "pw")), "shared key mismatch"),
        ("the-shared-key", Some(("docker", "nope")), "username/password mismatch"),
    ];
    for (key, user, expected_reason) in cases {
        let mut refused = shipper.connect().await;
        let (ok, reason) = client_handshake(&mut refused, key, user).await;
        assert!(!ok);
        assert_eq!(reason, expected_reason);
        let mut rest = Vec::new();
        assert_eq!(refused.read_to_end(&mut rest).await.unwrap_or(0), 0, "closed after PONG");
    }

    // A client that skips the handshake (like Docker's driver) is refused.
    let mut skipping = shipper.connect().await;
    let _helo = read_value(&mut skipping).await;
    let mut request = Vec::new();
    encode_requests(
        "t",
        Mode::Message,
        TimeFormat::EventTime,
        &record("no auth"),
        None,
        &mut request,
    );
    skipping.write_all(&request).await.unwrap();
    let pong = read_value(&mut skipping).await;
    assert_eq!(scalars(&pong).1, [false]);

    assert_eq!(
        shipper.metrics().input_errors.get_or_create(&reason_labels("auth_failed")).get(),
        3
    );
    assert_eq!(loki.entries().len(), 1, "nothing from refused clients");
}

fn reason_labels(reason: &'static str) -> fwd2loki::metrics::ReasonLabels {
    fwd2loki::metrics::ReasonLabels { reason }
}

#[tokio::test]
async fn tls_with_and_without_client_certificates() {
    let pki = TestPki::new();
    let loki = TestLoki::start().await;
    let tls = ForwardTls {
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: None,
    };
    let shipper = Shipper::start(&loki, |config| config.input.tls = Some(tls.clone())).await;
    let mut stream = pki.connect(shipper.tcp, false).await.expect("TLS handshake");
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &record("over TLS"), true)
        .await;
    assert_eq!(loki.wait_for_entries(1, PATIENCE).await[0].line, "over TLS");

    // Plain TCP to a TLS listener is refused and counted.
    let mut plain = shipper.connect().await;
    plain.write_all(b"\x94\xa1t\x01\x80\x80").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut rest)).await.expect("closed");

    let loki = TestLoki::start().await;
    let mutual = ForwardTls { client_ca_file: Some(pki.ca_file.clone()), ..tls };
    let shipper = Shipper::start(&loki, |config| config.input.tls = Some(mutual)).await;
    let mut with_cert = pki.connect(shipper.tcp, true).await.expect("TLS with client certificate");
    send_records(&mut with_cert, Mode::Message, TimeFormat::EventTime, &record("mutual"), true)
        .await;
    assert_eq!(loki.wait_for_entries(1, PATIENCE).await[0].line, "mutual");

    // Without a client certificate the server refuses the handshake; with TLS 1.3 the client
    // may learn it only at its first read.
    let refused = match pki.connect(shipper.tcp, false).await {
        Err(_) => true,
        Ok(mut stream) => {
            let _ = stream.write_all(b"\xc0").await;
            let mut byte = [0u8; 1];
            !matches!(stream.read(&mut byte).await, Ok(1))
        }
    };
    assert!(refused, "a client without a certificate is refused");
    let failures = shipper.metrics().input_errors.get_or_create(&reason_labels("tls_handshake"));
    while failures.get() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(loki.entries().len(), 1);
}

#[tokio::test]
async fn bad_input_closes_only_its_connection_and_is_counted() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.input.max_message_bytes = 64 * 1024;
        config.input.max_decompressed_bytes = 256 * 1024;
        config.input.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut steady = shipper.connect().await;

    let deep = {
        let mut bytes = vec![0x93, 0xa1, b't', 0x01];
        bytes.extend(std::iter::repeat_n(0x81, 30_000).flat_map(|map| [map, 0xa1, b'k']));
        bytes.push(0xc0);
        bytes
    };
    let bomb = {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&vec![0u8; 8 << 20]).unwrap();
        let payload = gzip.finish().unwrap();
        let mut bytes = vec![0x93, 0xa1, b't'];
        rmp::encode::write_bin(&mut bytes, &payload).unwrap();
        bytes.extend_from_slice(b"\x81\xaacompressed\xa4gzip");
        bytes
    };
    let oversized = {
        // A bin32 announcing 1 GiB: refused from its header, before the bytes arrive.
        vec![0x93, 0xa1, b't', 0xc6, 0x40, 0x00, 0x00, 0x00]
    };
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "unknown_shape"),
        ("reserved byte", vec![0x92, 0xc1], "invalid_msgpack"),
        ("oversized", oversized, "message_too_large"),
        ("deeply nested", deep, "message_too_large"),
        ("gzip bomb", bomb, "decompressed_too_large"),
    ];
    for (case, bytes, expected) in cases {
        let mut bad = shipper.connect().await;
        let _ = bad.write_all(&bytes).await;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(PATIENCE, bad.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{case}: the connection is closed");
        let count = shipper.metrics().input_errors.get_or_create(&reason_labels(expected)).get();
        assert!(count >= 1, "{case}: counted as {expected}");
    }

    // Truncated: the start of a request, then nothing: closed after the idle timeout.
    let mut truncated = shipper.connect().await;
    truncated.write_all(&[0x94, 0xa1, b't']).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, truncated.read_to_end(&mut rest)).await.expect("closed").ok();
    assert_eq!(
        shipper.metrics().input_errors.get_or_create(&reason_labels("idle_timeout")).get(),
        1
    );

    // The well-behaved connection, idle between requests all along, still works.
    send_records(&mut steady, Mode::Message, TimeFormat::EventTime, &record("still here"), true)
        .await;
    assert_eq!(loki.wait_for_entries(1, PATIENCE).await[0].line, "still here");
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_the_others_keep_flowing() {
    const CAP: usize = 1000;
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| config.input.max_connections = CAP).await;
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(shipper.connect().await);
    }
    let open = || {
        let labels = fwd2loki::metrics::ListenerLabels { listener: shipper.tcp.to_string() };
        shipper.metrics().connections_open.get_or_create(&labels).get()
    };
    while open() < CAP as i64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut refused = Vec::new();
    for _ in 0..10 {
        let mut extra = shipper.connect().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, extra.read_to_end(&mut rest)).await;
        refused.push(matches!(read, Ok(Ok(0)) | Ok(Err(_))));
    }
    assert!(refused.iter().all(|closed| *closed), "connections past the cap are closed");
    assert_eq!(
        shipper.metrics().input_errors.get_or_create(&reason_labels("too_many_connections")).get(),
        10
    );

    let mut first = idle.swap_remove(0);
    send_records(&mut first, Mode::Message, TimeFormat::EventTime, &record("among 1000"), true)
        .await;
    assert_eq!(loki.wait_for_entries(1, PATIENCE).await[0].line, "among 1000");
}

#[tokio::test]
async fn a_rotated_token_is_used_by_the_next_push() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_secret(dir.path(), "token", "token-one");
    let loki = TestLoki::start().await;
    let shipper =
        Shipper::start(&loki, |config| config.loki.bearer_token_file = Some(token_file.clone()))
            .await;
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &record("first"), true).await;

    let rotated = dir.path().join("token.new");
    std::fs::write(&rotated, "token-two\n").unwrap();
    std::fs::rename(&rotated, &token_file).unwrap();
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &record("second"), true).await;

    let tokens: Vec<_> = loki.pushes().into_iter().map(|push| push.authorization).collect();
    assert_eq!(tokens, [Some("Bearer token-one".to_owned()), Some("Bearer token-two".to_owned())]);
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_secret(dir.path(), "token", "tok-secret-4711");
    let loki = TestLoki::start().await;
    loki.push_faults([Fault::Status(401), Fault::Status(500)]);
    let config = format!(
        "[loki]\nurl = \"{}\"\nbearer_token_file = \"{}\"\nmin_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n",
        loki.push_url(),
        token_file.display()
    );
    let shipper = BinaryShipper::start(&config);
    let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &record("a"), true).await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &record("b"), true).await;
    let logs = shipper.logs();
    let (code, _) = tokio::task::spawn_blocking(move || shipper.terminate()).await.unwrap();
    assert_eq!(code, 0);
    assert!(logs.iter().any(|line| line.contains("loki refused a batch")), "{logs:#?}");
    assert!(logs.iter().all(|line| !line.contains("tok-secret-4711")), "{logs:#?}");
    assert!(
        loki.pushes()
            .iter()
            .all(|push| push.authorization.as_deref() == Some("Bearer tok-secret-4711"))
    );
}
