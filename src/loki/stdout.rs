//! The sink used when no Loki URL is configured: every entry that would be pushed is printed
//! to standard output as one JSON object per line.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::io::{AsyncWriteExt, Stdout};

use crate::loki::batch::Batch;

/// One printed entry.
#[derive(Serialize)]
struct PrintedEntry<'a> {
    labels: BTreeMap<&'a str, &'a str>,
    /// Nanoseconds since the epoch, as a string like in Loki's JSON push format.
    timestamp: String,
    line: &'a str,
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
    for stream in batch.streams() {
        let labels: BTreeMap<&str, &str> = stream.labels.pairs().collect();
        for (timestamp_ns, line) in &stream.entries {
            let entry =
                PrintedEntry { labels: labels.clone(), timestamp: timestamp_ns.to_string(), line };
            serde_json::to_writer(&mut text, &entry).expect("writing to a Vec cannot fail");
            text.push(b'\n');
        }
    }
    text
}
