//! `fwd2loki send`: a forward client for quick checks and demos.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::cli::SendArgs;
use fwd2loki::config::ListenAddr;
use fwd2loki::forward::client::{OutgoingEvent, encode_requests, send_requests};

pub(crate) async fn run(args: SendArgs) -> ExitCode {
    match send(&args).await {
        Ok(count) => {
            let acked = if args.ack { ", acknowledged" } else { "" };
            eprintln!("sent {count} records to {}{acked}", args.address);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("fwd2loki send: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn send(args: &SendArgs) -> Result<usize, String> {
    let records = if args.record.is_empty() { read_stdin()? } else { parse_args(&args.record)? };
    let events: Vec<OutgoingEvent> =
        records.iter().map(|record| OutgoingEvent::from_json(now_ns(), record)).collect();
    let chunk = args.ack.then(chunk_id);
    let mut requests = Vec::new();
    let chunks =
        encode_requests(&args.tag, args.mode, args.time, &events, chunk.as_deref(), &mut requests);

    let address =
        ListenAddr::parse(&args.address).map_err(|error| format!("--address: {error}"))?;
    let result = match address {
        ListenAddr::Tcp(address) => {
            let mut stream = TcpStream::connect(&address).await.map_err(connect_error(&address))?;
            exchange(&mut stream, &requests, &chunks).await
        }
        ListenAddr::Unix(path) => {
            let display = path.display().to_string();
            let mut stream = UnixStream::connect(&path).await.map_err(connect_error(&display))?;
            exchange(&mut stream, &requests, &chunks).await
        }
    };
    result.map(|()| events.len())
}

async fn exchange<S>(stream: &mut S, requests: &[u8], chunks: &[String]) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_requests(stream, requests, chunks)
        .await
        .map_err(|error| format!("sending failed: {error}"))
}

fn connect_error(address: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |error| format!("cannot connect to {address}: {error}")
}

fn parse_args(records: &[String]) -> Result<Vec<serde_json::Value>, String> {
    records
        .iter()
        .map(|text| match serde_json::from_str::<serde_json::Value>(text) {
            Ok(record @ serde_json::Value::Object(_)) => Ok(record),
            Ok(_) | Err(_) => Err(format!("--record {text:?} is not a JSON object")),
        })
        .collect()
}

/// Reads one record per line: a JSON object as it is, any other text as `{"log": line}`.
fn read_stdin() -> Result<Vec<serde_json::Value>, String> {
    let mut records = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|error| format!("cannot read stdin: {error}"))?;
        let record = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(record @ serde_json::Value::Object(_)) => record,
            _ => serde_json::json!({ "log": line }),
        };
        records.push(record);
    }
    Ok(records)
}

fn now_ns() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

/// A chunk id unique enough for one client: the time and the process id, base64-encoded like
/// the 128-bit ids of other clients.
fn chunk_id() -> String {
    use base64::Engine;
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&now_ns().to_le_bytes());
    id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    id[12..].copy_from_slice(&fastrand::u32(..).to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(id)
}
