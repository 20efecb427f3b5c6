//! HTTPS to Loki: fwd2loki trusts the CA named in `loki.ca_file`, shows the client certificate
//! of `loki.cert_file` and `loki.key_file` to a Loki that asks for one, and pushes nothing to a
//! Loki it cannot verify, keeping the entries unacknowledged.

use std::time::Duration;

use fwd2loki::config::Config;
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat};
use fwd2loki::forward::tls::acceptor;
use fwd2loki::metrics::StatusLabels;
use fwd2loki::pipeline::ShutdownOutcome;

use crate::support::loki::TestLoki;
use crate::support::pki::TestPki;
use crate::support::shipper::{PATIENCE, Shipper, docker_record, send_records};

const T0: i64 = 1_764_000_000_000_000_000;

fn record(line: &str) -> Vec<OutgoingEvent> {
    vec![OutgoingEvent::from_json(T0, &docker_record("/app", line))]
}

/// A Loki serving HTTPS with the test PKI's server certificate, asking for a client
/// certificate signed by the test CA when `client_certificates` is set.
async fn https_loki(pki: &TestPki, client_certificates: bool) -> TestLoki {
    let client_ca = client_certificates.then_some(pki.ca_file.as_path());
    let tls = acceptor(&pki.server_cert_file, &pki.server_key_file, client_ca)
        .expect("the test certificates load");
    let loki = TestLoki::start_tls(tls).await;
    assert!(loki.push_url().starts_with("https://127.0.0.1:"), "{}", loki.push_url());
    loki
}

/// Sends one record without asking for an ack, which would never come.
async fn send_unacknowledged(shipper: &Shipper, line: &str) {
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &record(line), false).await;
}

/// Waits until fwd2loki has counted at least `count` pushes that failed before any answer.
async fn wait_for_failed_pushes(shipper: &Shipper, count: u64) {
    let failed =
        shipper.metrics().loki_requests.get_or_create(&StatusLabels { status: "error".to_owned() });
    tokio::time::timeout(PATIENCE, async {
        while failed.get() < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} failed pushes counted; only {}", failed.get()));
}

/// Starts fwd2loki against `loki` with `edit`, sends one record and waits for its ack, which
/// comes only once Loki took it; then checks what Loki got and that shutdown is clean.
async fn deliver_one(loki: &TestLoki, edit: impl FnOnce(&mut Config), line: &str) {
    let shipper = Shipper::start(loki, edit).await;
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &record(line), true).await;
    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(entries[0].line, line);
    assert_eq!(entries[0].labels["container_name"], "/app");
    assert_eq!(loki.tls_failures(), Vec::<String>::new());
    assert_eq!(shipper.stop(PATIENCE).await, ShutdownOutcome::Delivered);
}

#[tokio::test]
async fn pushes_reach_a_loki_whose_certificate_the_configured_ca_signed() {
    let pki = TestPki::new();
    let loki = https_loki(&pki, false).await;
    deliver_one(&loki, |config| config.loki.ca_file = Some(pki.ca_file.clone()), "over https")
        .await;
}

#[tokio::test]
async fn a_loki_asking_for_a_client_certificate_gets_the_configured_one() {
    let pki = TestPki::new();
    let loki = https_loki(&pki, true).await;
    let with_certificate = |config: &mut Config| {
        config.loki.ca_file = Some(pki.ca_file.clone());
        config.loki.cert_file = Some(pki.client_cert_file.clone());
        config.loki.key_file = Some(pki.client_key_file.clone());
    };
    deliver_one(&loki, with_certificate, "mutual").await;
}

#[tokio::test]
async fn without_a_client_certificate_nothing_is_pushed_and_nothing_acknowledged() {
    let pki = TestPki::new();
    let loki = https_loki(&pki, true).await;
    let shipper =
        Shipper::start(&loki, |config| config.loki.ca_file = Some(pki.ca_file.clone())).await;
    send_unacknowledged(&shipper, "refused").await;
    // Refused handshakes are retried like any failed push, and counted.
    loki.wait_for_tls_failures(2, PATIENCE).await;
    wait_for_failed_pushes(&shipper, 1).await;
    assert!(shipper.metrics().push_retries.get() >= 1);
    assert!(loki.entries().is_empty());
    assert_eq!(shipper.stop(Duration::from_millis(300)).await, ShutdownOutcome::Abandoned);
}

#[tokio::test]
async fn a_loki_signed_by_an_unknown_ca_gets_nothing() {
    // The system's roots do not know the test CA, and no `ca_file` names it.
    let pki = TestPki::new();
    let loki = https_loki(&pki, false).await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    send_unacknowledged(&shipper, "unverified").await;
    wait_for_failed_pushes(&shipper, 2).await;
    assert!(loki.tls_failures().len() >= 2, "{:?}", loki.tls_failures());
    assert_eq!(loki.requests(), 0, "no request reaches a server that was not verified");
    assert_eq!(shipper.stop(Duration::from_millis(300)).await, ShutdownOutcome::Abandoned);
}
