//! The sink used when no Loki URL is configured: every entry that would be pushed is printed
//! to standard output as one JSON object per line.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use tokio::io::{AsyncWriteExt, Stdout};

use crate::loki::batch::Batch;

/// One printed entry.
#[derive(Serialize)]
struct PrintedEntry<'a> {
    /// The tenant taken from the record, left out when it is the configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    labels: BTreeMap<&'a str, &'a str>,
    /// Nanoseconds since the epoch, as a string like in Loki's JSON push format.
    timestamp: String,
    line: Cow<'a, str>,
    /// Left out when there is none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    structured_metadata: BTreeMap<&'a str, &'a str>,
}

/// Prints batches to standard output.
#[derive(Debug)]
pub struct StdoutPrinter {
    out: Stdout,
}

impl Default for StdoutPrinter {
    fn default() -> Self {
        Self { out: tokio::io::stdout() }
    }
}

impl StdoutPrinter {
    /// Writes every entry of `batch`, stream by stream.
    ///
    /// # Errors
    ///
    /// When standard output cannot be written.
    pub async fn print(&mut self, batch: &Batch) -> std::io::Result<()> {
        let text = render(batch);
        self.out.write_all(&text).await?;
        self.out.flush().await
    }
}

/// The JSON lines for `batch`.
pub fn render(batch: &Batch) -> Vec<u8> {
    let mut text = Vec::with_capacity(batch.line_bytes() * 2);
    let tenant = batch.tenant().map(|tenant| &**tenant);
    for stream in batch.streams() {
        let labels: BTreeMap<&str, &str> = stream.labels.pairs().collect();
        let structured_metadata: BTreeMap<&str, &str> =
            stream.labels.structured_metadata().collect();
        for (timestamp_ns, line) in &stream.entries {
            let entry = PrintedEntry {
                tenant,
                labels: labels.clone(),
                timestamp: timestamp_ns.to_string(),
                line: line.to_text(),
                structured_metadata: structured_metadata.clone(),
            };
            serde_json::to_writer(&mut text, &entry).expect("writing to a Vec cannot fail");
            text.push(b'\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use tokio::time::Instant;

    use super::*;
    use crate::buffer::MemoryCharge;
    use crate::loki::batch::Batcher;
    use crate::loki::labels::StreamLabels;
    use crate::transform::Entry;

    #[test]
    fn prints_the_tenant_and_structured_metadata_only_when_there_are_some() {
        let plain = Arc::new(StreamLabels::new([("job", "a")]));
        let detailed = Arc::new(
            StreamLabels::new([("job", "a")])
                .with_tenant(Some("team-a".into()))
                .with_structured_metadata([("container_id", "0f3c")]),
        );
        let mut batcher = Batcher::new(1000, Duration::from_secs(1), Duration::ZERO);
        for (stream, line) in [(plain, "plain"), (detailed, "detailed")] {
            let entry = Entry { stream, timestamp_ns: 5, line: line.into() };
            batcher.add(entry, MemoryCharge::default(), Instant::now());
        }
        let mut printed = Vec::new();
        while let Some(batch) = batcher.take() {
            let text = String::from_utf8(render(&batch)).unwrap();
            printed.extend(text.lines().map(|line| serde_json::from_str(line).unwrap()));
        }
        printed.sort_by_key(|entry: &serde_json::Value| entry["line"].to_string());
        assert_eq!(
            printed,
            [
                json!({
                    "tenant": "team-a",
                    "labels": {"job": "a"},
                    "timestamp": "5",
                    "line": "detailed",
                    "structured_metadata": {"container_id": "0f3c"},
                }),
                json!({"labels": {"job": "a"}, "timestamp": "5", "line": "plain"}),
            ]
        );
    }
}
