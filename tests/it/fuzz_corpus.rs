//! Replays the fuzz corpus, `fuzz/corpus/<target>/`, through the entry points the fuzz targets
//! call, so that every seed and every minimized crasher (`crash-*`) runs in `cargo test`.
//!
//! The generated seeds are checked by `seed_corpus_is_up_to_date` below, which writes them
//! instead when run with `FWD2LOKI_WRITE_SEEDS=1`.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat, encode_requests};
use fwd2loki::forward::decode::{self, Body, Request};
use fwd2loki::msgpack::Scanner;
use serde_json::json;

/// A fuzz target's entry point.
type EntryPoint = fn(&[u8]);

/// Each fuzz target, by the name of its corpus directory, with its entry point.
const TARGETS: [(&str, EntryPoint); 6] = [
    ("forward_stream", fwd2loki::fuzzing::forward_stream),
    ("compressed_entries", fwd2loki::fuzzing::compressed_entries),
    ("config", fwd2loki::fuzzing::config),
    ("disk_segment", fwd2loki::fuzzing::disk_segment),
    ("handshake_ping", fwd2loki::fuzzing::handshake_ping),
    ("fluent_bit_config", fwd2loki::fuzzing::fluent_bit_config),
];

/// Seeds stay small so that the fuzzers' default input size (4 KiB) covers them.
const MAX_SEED_BYTES: usize = 4096;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// The corpus files of `target`, by name. Hidden files are a local fuzz run's leftovers.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{dir:?}: {error}"));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_has_a_corpus_replayed_here() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{dir:?}: {error}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let mut replayed: Vec<&str> = TARGETS.iter().map(|(target, _)| *target).collect();
    replayed.sort();
    assert_eq!(targets, replayed, "fuzz/fuzz_targets/ and the targets replayed here");
}

#[test]
fn every_corpus_file_runs_through_its_fuzz_target() {
    for (target, run) in TARGETS {
        let files = corpus_files(target);
        assert!(files.len() >= 10, "{target}: only {} corpus files", files.len());
        let mut failures = Vec::new();
        let mut ran = 0;
        for file in &files {
            let data = std::fs::read(file).unwrap();
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(file.file_name().unwrap().to_string_lossy().into_owned());
            }
            ran += 1;
        }
        assert_eq!(ran, files.len(), "{target}: every file ran");
        assert!(failures.is_empty(), "{target}: the target panicked on {failures:?}");
    }
}

#[test]
fn forward_seeds_hold_every_mode() {
    let mut seen = std::collections::BTreeSet::new();
    for file in corpus_files("forward_stream") {
        let data = std::fs::read(&file).unwrap();
        let mut start = 0;
        while let Ok(Some(len)) = Scanner::new(1 << 20).scan(&data[start..]) {
            let bytes = &data[start..start + len];
            start += len;
            let Ok(request) = decode::parse(bytes) else {
                continue;
            };
            let kind = match &request {
                Request::Heartbeat => "heartbeat",
                Request::Events { body: Body::Message(_), .. } => "message",
                Request::Events { body: Body::Forward { .. }, .. } => "forward",
                Request::Events { body: Body::Packed(_), .. } => "packed",
                Request::Events { body: Body::CompressedPacked(_), .. } => "compressed",
            };
            let events = request
                .for_each_event(&mut Vec::new(), 1 << 20, |_| Ok::<_, decode::DecodeError>(()));
            if kind == "heartbeat" || events.is_ok_and(|count| count > 0) {
                seen.insert(kind);
            }
        }
    }
    let modes = ["heartbeat", "message", "forward", "packed", "compressed"];
    assert_eq!(seen, modes.into_iter().collect(), "requests with events in the seeds");
}

/// Checks that the checked-in seeds are the ones generated here, so that a change to the
/// request encoding or the README's configs cannot leave the corpus stale. With
/// `FWD2LOKI_WRITE_SEEDS=1` it writes them instead. Hand-picked crashers and other files in
/// `fuzz/corpus/` are left alone.
#[test]
fn seed_corpus_is_up_to_date() {
    let write = std::env::var_os("FWD2LOKI_WRITE_SEEDS").is_some();
    let mut seeds = forward_stream_seeds();
    seeds.extend(compressed_entries_seeds());
    seeds.extend(config_seeds());
    seeds.extend(disk_segment_seeds());
    seeds.extend(handshake_ping_seeds());
    seeds.extend(fluent_bit_config_seeds());
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds {
        assert!(bytes.len() <= MAX_SEED_BYTES, "{target}/{name}: {} bytes", bytes.len());
        let path = corpus_dir(target).join(&name);
        if write {
            std::fs::create_dir_all(corpus_dir(target)).unwrap();
            std::fs::write(&path, bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(format!("{target}/{name}"));
        }
    }
    assert!(stale.is_empty(), "stale seeds (rewrite with FWD2LOKI_WRITE_SEEDS=1): {stale:?}");
}

/// A seed: its target, its file name and its bytes.
type Seed = (&'static str, String, Vec<u8>);

/// 2025-11-24T16:00:00.123456789Z
const TIME_NS: i64 = 1_764_000_000_123_456_789;
const SECS: u32 = 1_764_000_000;
const NANOS: u32 = 123_456_789;

fn docker_record(line: &str) -> serde_json::Value {
    json!({
        "container_id": "0f3c9a2b7d1e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a",
        "container_name": "/wiki-js",
        "source": "stdout",
        "log": line,
    })
}

fn requests(mode: Mode, time: TimeFormat, records: &[serde_json::Value], chunk: bool) -> Vec<u8> {
    let events: Vec<OutgoingEvent> = records
        .iter()
        .enumerate()
        .map(|(index, record)| OutgoingEvent::from_json(TIME_NS + index as i64, record))
        .collect();
    let mut out = Vec::new();
    encode_requests("docker.wiki", mode, time, &events, chunk.then_some("c2VlZA=="), &mut out);
    out
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    rmp::encode::write_str(out, text).unwrap();
}

/// A Docker record in message mode with the time as given: encodings the client does not make.
fn message_with_time(time: &[u8]) -> Vec<u8> {
    let mut out = vec![0x94];
    write_str(&mut out, "docker.wiki");
    out.extend_from_slice(time);
    out.extend(rmp_serde::to_vec_named(&docker_record("GET /wiki/home 200")).unwrap());
    out.push(0x80);
    out
}

/// The parts, one after the other.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn event_time_fixext8() -> Vec<u8> {
    cat(&[&[0xd7, 0x00], &SECS.to_be_bytes(), &NANOS.to_be_bytes()])
}

fn event_time_ext8() -> Vec<u8> {
    cat(&[&[0xc7, 0x08, 0x00], &SECS.to_be_bytes(), &NANOS.to_be_bytes()])
}

/// A record with every kind of msgpack value, keys of several types included.
fn odd_record() -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, 14).unwrap();
    write_str(&mut out, "log");
    write_str(&mut out, "say \"hi\"=\tthere \u{1} é ✓");
    write_str(&mut out, "container_name");
    out.push(0xc0); // a nil label value adds no label
    rmp::encode::write_bin(&mut out, b"bin key").unwrap();
    rmp::encode::write_bin(&mut out, &[0xff, 0xfe, b'a']).unwrap();
    write_str(&mut out, "bad utf-8");
    out.extend_from_slice(&[0xa3, 0xc3, 0x28, b'x']);
    rmp::encode::write_uint(&mut out, 7).unwrap();
    rmp::encode::write_sint(&mut out, i64::MIN).unwrap();
    out.push(0xc3); // true as a key
    rmp::encode::write_u64(&mut out, u64::MAX).unwrap();
    rmp::encode::write_f32(&mut out, 1.5).unwrap();
    rmp::encode::write_f64(&mut out, f64::NAN).unwrap();
    write_str(&mut out, "inf");
    rmp::encode::write_f64(&mut out, f64::NEG_INFINITY).unwrap();
    write_str(&mut out, "when");
    out.extend(event_time_fixext8());
    write_str(&mut out, "ext");
    out.extend_from_slice(&[0xd5, 0x05, 0xab, 0xcd]);
    write_str(&mut out, "nested");
    out.extend(rmp_serde::to_vec(&json!({"a": [1, -2, {"b": null}], "c": {}})).unwrap());
    write_str(&mut out, "empty");
    out.extend_from_slice(&[0x90]);
    write_str(&mut out, "1.odd key");
    write_str(&mut out, "label from an odd key");
    write_str(&mut out, "source");
    write_str(&mut out, "stderr");
    out
}

/// `[tag, [entry, ...], options]` in forward mode; without options, a two-element array.
fn forward_with_entries(entries: &[Vec<u8>], options: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![if options.is_some() { 0x93 } else { 0x92 }];
    write_str(&mut out, "app");
    rmp::encode::write_array_len(&mut out, entries.len() as u32).unwrap();
    for entry in entries {
        out.extend_from_slice(entry);
    }
    out.extend_from_slice(options.unwrap_or_default());
    out
}

/// `[time, record]`.
fn entry(time: &[u8], record: &[u8]) -> Vec<u8> {
    cat(&[&[0x92], time, record])
}

/// A part of a line Docker split: `partial_ordinal` counts from 1, the last part says so.
fn docker_part(id: &str, ordinal: u32, last: bool, text: &str) -> serde_json::Value {
    json!({
        "container_name": "/wiki-js",
        "source": "stdout",
        "log": text,
        "partial_message": "true",
        "partial_id": id,
        "partial_ordinal": ordinal.to_string(),
        "partial_last": last.to_string(),
    })
}

fn plain_record(line: &str) -> Vec<u8> {
    rmp_serde::to_vec_named(&json!({"log": line})).unwrap()
}

fn forward_stream_seeds() -> Vec<Seed> {
    use Mode::*;
    use TimeFormat::*;
    let docker = [docker_record("GET /wiki/home 200")];
    let three = [
        docker_record("first"),
        json!({"log": "second", "level": "info", "n": 2}),
        json!({"message": "no log key"}),
    ];
    let long_line = "0123456789abcdef é ".repeat(30);
    let deep = {
        let mut record = vec![0x81, 0xa3, b'd', b'e', b'p'];
        record.extend(std::iter::repeat_n(0x91, 200));
        record.push(0x01);
        record
    };
    let mut options_size = Vec::new();
    rmp::encode::write_map_len(&mut options_size, 3).unwrap();
    for (key, value) in [("chunk", "Y2h1bms="), ("compressed", "text")] {
        write_str(&mut options_size, key);
        write_str(&mut options_size, value);
    }
    write_str(&mut options_size, "size");
    options_size.push(0x02);
    let two_entries =
        [entry(&[0x01], &plain_record("a")), entry(&event_time_ext8(), &plain_record("b"))];

    let mut mixed = vec![0xc0];
    mixed.extend(requests(Message, EventTime, &docker, true));
    mixed.extend(requests(Forward, Integer, &three, false));
    mixed.extend(requests(Packed, Float, &three, true));
    mixed.extend(requests(Compressed, EventTime, &three, false));
    mixed.push(0xc0);

    let mut two_members = Vec::new();
    for record in &three[..2] {
        let record = rmp_serde::to_vec_named(record).unwrap();
        two_members.extend(gzip(&entry(&event_time_fixext8(), &record), Compression::fast()));
    }
    let mut multi_gzip = vec![0x93];
    write_str(&mut multi_gzip, "multi");
    rmp::encode::write_bin(&mut multi_gzip, &two_members).unwrap();
    rmp::encode::write_map_len(&mut multi_gzip, 1).unwrap();
    write_str(&mut multi_gzip, "compressed");
    write_str(&mut multi_gzip, "gzip");

    let mut packed_str = vec![0x92];
    write_str(&mut packed_str, "app");
    let entries = two_entries.concat();
    rmp::encode::write_str_len(&mut packed_str, entries.len() as u32).unwrap();
    packed_str.extend_from_slice(&entries);

    let fluent_bit_metadata = forward_with_entries(
        &[cat(&[
            &[0x92, 0x92],
            &event_time_fixext8(),
            &[0x81, 0xa1, b'k', 0x01],
            &plain_record("fb"),
        ])],
        None,
    );

    let split_line = [
        docker_part("a1", 1, false, "first third, "),
        docker_part("a1", 2, false, "second third, "),
        docker_part("a1", 3, true, "last third"),
    ];
    // Two lines at once, parts out of order, one part sent twice, one line never finished.
    let interleaved = [
        docker_part("out", 2, false, "é-end "),
        docker_part("err", 1, false, "error starts "),
        docker_part("out", 1, false, "out starts "),
        docker_part("out", 1, false, "out starts "),
        json!({"log": "an ordinary line between parts"}),
        docker_part("out", 3, true, "out ends"),
        docker_part("open", 1, false, "never finished"),
    ];
    let routed = [
        json!({
            "log": "routed",
            "tenant": "team-a",
            "container_id": "0f3c",
            "kubernetes": {"labels": {"app": "wiki", "app.kubernetes.io/name": "wiki"}},
            "a.b": "dotted key",
            "a": {"b": "nested key"},
        }),
        json!({"log": "bad tenant", "tenant": "no spaces allowed", "kubernetes": "not a map"}),
    ];

    let seeds = [
        ("heartbeat", vec![0xc0]),
        ("message-event-time-ack", requests(Message, EventTime, &docker, true)),
        ("message-event-time-ext8", message_with_time(&event_time_ext8())),
        ("message-int32-docker", message_with_time(&cat(&[&[0xd2], &SECS.to_be_bytes()]))),
        ("message-int64", message_with_time(&cat(&[&[0xd3], &u64::from(SECS).to_be_bytes()]))),
        ("message-uint32", requests(Message, Integer, &docker, false)),
        ("message-float", requests(Message, Float, &docker, false)),
        ("message-odd-record", message_with_time_record(&[0x01], &odd_record())),
        ("message-long-line", requests(Message, EventTime, &[json!({"log": long_line})], false)),
        ("message-deep-nesting", message_with_time_record(&[0x05], &deep)),
        ("forward-three", requests(Forward, EventTime, &three, true)),
        ("forward-size-option", forward_with_entries(&two_entries, Some(&options_size))),
        ("forward-fluent-bit-metadata", fluent_bit_metadata),
        ("message-docker-split-line", requests(Message, Integer, &split_line, false)),
        ("forward-split-lines-interleaved", requests(Forward, EventTime, &interleaved, false)),
        ("forward-tenant-label-map", requests(Forward, EventTime, &routed, false)),
        ("packed-three", requests(Packed, Integer, &three, false)),
        ("packed-str-entries", packed_str),
        ("compressed-three", requests(Compressed, EventTime, &three, true)),
        ("compressed-two-gzip-members", multi_gzip),
        ("connection-every-mode", mixed),
        ("error-negative-time", message_with_time(&[0xff])),
        ("error-record-not-map", cat(&[&[0x93, 0xa1, b't', 0x01], &[0x91, 0x01]])),
        ("error-size-mismatch", forward_with_entries(&two_entries[..1], Some(&options_size))),
        ("error-reserved-marker", vec![0x93, 0xa1, b't', 0x01, 0xc1]),
        ("error-announced-too-large", vec![0x93, 0xa1, b't', 0xc6, 0x7f, 0xff, 0xff, 0xff]),
        ("error-unknown-compression", {
            let mut request = requests(Compressed, EventTime, &docker, false);
            let at = request.len() - 4;
            request[at..].copy_from_slice(b"zstd");
            request
        }),
    ];
    seeds.into_iter().map(|(name, bytes)| ("forward_stream", name.to_owned(), bytes)).collect()
}

/// `[tag, time, record]`: message mode without options.
fn message_with_time_record(time: &[u8], record: &[u8]) -> Vec<u8> {
    let mut out = vec![0x93];
    write_str(&mut out, "app");
    out.extend_from_slice(time);
    out.extend_from_slice(record);
    out
}

fn gzip(data: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), level);
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Seeds of two kinds: packed entries (which the target also gzips) and gzip data (which it
/// also inflates).
fn compressed_entries_seeds() -> Vec<Seed> {
    let record = |value: serde_json::Value| rmp_serde::to_vec_named(&value).unwrap();
    let docker: Vec<u8> = ["first", "second", "third"]
        .into_iter()
        .flat_map(|line| entry(&event_time_fixext8(), &record(docker_record(line))))
        .collect();
    let mixed_times = cat(&[
        &entry(&cat(&[&[0xd2], &SECS.to_be_bytes()]), &plain_record("int32")),
        &entry(&cat(&[&[0xce], &SECS.to_be_bytes()]), &plain_record("uint32")),
        &entry(&[0xcb, 0x41, 0xda, 0x49, 0x6e, 0x40, 0x07, 0xe6, 0xb7], &plain_record("float")),
        &entry(&event_time_ext8(), &plain_record("ext8")),
        &entry(&[0x00], &plain_record("zero")),
    ]);
    let metadata = entry(
        &cat(&[&[0x92], &event_time_fixext8(), &[0x81, 0xa1, b'k', 0x01]]),
        &plain_record("fluent-bit 2.x"),
    );
    let long_line = entry(&[0x01], &record(json!({"log": "x y=\"z\" ".repeat(100)})));
    let split_line: Vec<u8> = [(1, false, "part one "), (3, true, "three"), (2, false, "two ")]
        .into_iter()
        .flat_map(|(ordinal, last, text)| {
            entry(&event_time_fixext8(), &record(docker_part("p", ordinal, last, text)))
        })
        .collect();
    let with_header = {
        let mut encoder = GzBuilder::new()
            .filename("entries.msgpack")
            .comment("seed")
            .extra(vec![b'f', b'z', 2, 0, 1, 2])
            .mtime(SECS)
            .write(Vec::new(), Compression::default());
        encoder.write_all(&docker).unwrap();
        encoder.finish().unwrap()
    };
    let fast = gzip(&docker, Compression::fast());
    let mut truncated = fast.clone();
    truncated.truncate(fast.len() / 2);
    let mut bad_crc = fast.clone();
    let at = bad_crc.len() - 8;
    bad_crc[at] ^= 0xff;
    let mut trailing = fast.clone();
    trailing.extend_from_slice(b"junk");

    let seeds = [
        ("entries-docker-event-time", docker.clone()),
        ("entries-time-encodings", mixed_times.clone()),
        ("entries-fluent-bit-metadata", metadata),
        ("entries-odd-record", entry(&[0x01], &odd_record())),
        ("entries-long-line", long_line.clone()),
        ("entries-docker-split-line", split_line.clone()),
        ("entries-truncated", docker[..docker.len() - 3].to_vec()),
        ("entries-not-an-array", plain_record("not an entry")),
        ("gzip-docker", fast.clone()),
        ("gzip-time-encodings", gzip(&mixed_times, Compression::best())),
        ("gzip-stored", gzip(&docker, Compression::none())),
        ("gzip-long-line", gzip(&long_line, Compression::best())),
        ("gzip-docker-split-line", gzip(&split_line, Compression::fast())),
        ("gzip-two-members", cat(&[&fast, &gzip(&mixed_times, Compression::fast())])),
        ("gzip-header-fields", with_header),
        ("gzip-empty", gzip(&[], Compression::default())),
        ("gzip-truncated", truncated),
        ("gzip-bad-crc", bad_crc),
        ("gzip-trailing-junk", trailing),
    ];
    seeds.into_iter().map(|(name, bytes)| ("compressed_entries", name.to_owned(), bytes)).collect()
}

/// The README's TOML examples, and configurations that reach every option and error.
fn config_seeds() -> Vec<Seed> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // Indentation, in the README's lists and in the code below, is not part of the files.
    let dedent = |text: &str| -> String {
        text.trim().lines().map(|line| format!("{}\n", line.trim())).collect()
    };
    let examples: Vec<&str> =
        readme.split("```toml\n").skip(1).map(|block| block.split("```").next().unwrap()).collect();
    assert!(examples.len() >= 3, "the README's TOML examples");
    let mut seeds: Vec<Seed> = (1..)
        .zip(&examples)
        .map(|(number, text)| {
            ("config", format!("readme-{number}.toml"), dedent(text).into_bytes())
        })
        .collect();
    let others = [
        (
            "disk-buffer-unix.toml",
            r#"
            shutdown_timeout = "30s"
            [input]
            listen = ["unix:///run/fwd2loki.sock", "tcp://127.0.0.1:24224", "[::1]:24224"]
            max_message_bytes = 1048576
            max_decompressed_bytes = "16 MB"
            [buffer]
            type = "disk"
            path = "/var/lib/fwd2loki"
            max_bytes = "1GiB"
            memory_bytes = "8MiB"
            "#,
        ),
        (
            "formats.toml",
            r#"
            [loki]
            url = "https://logs.example.com/loki/api/v1/push"
            tenant_id = "team-a"
            line_format = "key_value"
            line_key = "message"
            drop_single_key = false
            oversized_lines = "drop"
            max_line_bytes = "1KiB"
            max_concurrent_pushes = 4
            label_keys = ["container.name", "1abc", "__meta", "ünï", ""]
            remove_keys = []
            labels = {}
            [log]
            level = "info,fwd2loki=debug"
            format = "json"
            "#,
        ),
        (
            "raw-durations.toml",
            r#"
            [loki]
            line_format = "raw"
            batch_wait = "2m 30s"
            ack_batch_wait = "1ms"
            timeout = "1h"
            min_backoff = "100ms"
            max_backoff = "5m"
            batch_size = 1
            "#,
        ),
        (
            "routing.toml",
            r#"
            [loki]
            tenant_key = "tenant"
            structured_metadata_keys = ["container_id", "trace.id"]
            reassemble_partials = true
            partial_timeout = "250ms"
            max_partial_bytes = "64KiB"
            keep_arrival_order = false
            order_window = "2s"
            max_streams = 10
            label_map = { "kubernetes.labels.app" = "app", kubernetes = { namespace = "ns" } }
            [server]
            listen = ""
            "#,
        ),
        ("empty.toml", ""),
        ("error-tenant-key-is-label.toml", "[loki]\ntenant_key = \"container_name\""),
        ("error-label-map.toml", "[loki]\nlabel_map = { \"\" = \"app\", \"a..b\" = \"1x\" }"),
        ("error-duration.toml", "[loki]\nbatch_wait = \"1x\""),
        ("error-size.toml", "[input]\nmax_message_bytes = \"12 parsecs\""),
        ("error-label-name.toml", "[loki]\nlabels = { \"1abc\" = \"x\", __y = \"z\" }"),
        ("error-unknown-key.toml", "[loki]\nbatch_wate = \"1s\""),
        ("error-syntax.toml", "[loki\nurl = \"http://x"),
        ("error-disk-no-path.toml", "[buffer]\ntype = \"disk\""),
        ("error-memory-below-batch.toml", "[buffer]\nmax_bytes = \"1KiB\""),
        ("error-url-scheme.toml", "[loki]\nurl = \"ftp://loki:3100/\""),
        ("error-listen.toml", "[input]\nlisten = [\"unix:relative.sock\", \"24224\"]"),
        ("error-no-labels.toml", "[loki]\nlabels = {}\nlabel_keys = []"),
        ("error-backoff.toml", "[loki]\nmin_backoff = \"10s\"\nmax_backoff = \"1s\""),
    ];
    let others = others.map(|(name, text)| ("config", name.to_owned(), dedent(text).into_bytes()));
    seeds.extend(others);
    seeds
}

/// Segments as the disk buffer writes them, and as a crash or a bad disk leaves them.
fn disk_segment_seeds() -> Vec<Seed> {
    use fwd2loki::fuzzing::disk_record;

    let web: &[(&str, &str)] = &[("job", "docker"), ("container_name", "/web")];
    let db: &[(&str, &str)] = &[("job", "docker"), ("container_name", "/db")];
    let plain = disk_record(&[
        (web, None, &[], TIME_NS, "GET / 200"),
        (db, None, &[], TIME_NS + 1, "checkpoint complete"),
        (web, None, &[], TIME_NS - 5, "late line, earlier time"),
    ]);
    let detailed = disk_record(&[
        (web, Some("team-a"), &[("trace_id", "abc123")], TIME_NS, "with tenant and metadata"),
        (web, Some("team-b"), &[], -1, "another tenant, a time before 1970"),
        (db, None, &[("pod", "db-0"), ("zone", "é")], 0, "ünïcödé ✓ and \"quotes\""),
    ]);
    let empty = disk_record(&[]);
    let mut bad_checksum = plain.clone();
    bad_checksum[8] ^= 0xff;
    let mut bad_payload = detailed.clone();
    let last = bad_payload.len() - 1;
    bad_payload[last] ^= 0x01;
    // A record whose payload is not a stored group, with a checksum that matches it.
    let not_a_group = {
        let payload = [0x93, 0x01, 0x02, 0x03];
        let mut bytes = b"F2LR".to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    };
    let seeds = [
        ("one-record", plain.clone()),
        ("details", detailed.clone()),
        ("empty-group", empty),
        ("two-records", cat(&[&plain, &detailed])),
        ("torn-last-write", cat(&[&plain, &detailed[..detailed.len() / 2]])),
        ("torn-header", cat(&[&plain, &detailed[..7]])),
        ("bad-checksum-then-good", cat(&[&bad_checksum, &detailed])),
        ("bad-payload-then-good", cat(&[&bad_payload, &plain])),
        ("junk-between", cat(&[&plain, b"junk F2L F2", &detailed])),
        ("not-a-group", cat(&[&not_a_group, &plain])),
        ("magic-only", b"F2LR".to_vec()),
    ];
    seeds.into_iter().map(|(name, bytes)| ("disk_segment", name.to_owned(), bytes)).collect()
}

/// PINGs an honest client sends, and the ways a PING can be wrong.
fn handshake_ping_seeds() -> Vec<Seed> {
    use fwd2loki::fuzzing::valid_ping;

    let ping = |fields: &[&str]| {
        let mut bytes = vec![0x90 | fields.len() as u8];
        for field in fields {
            write_str(&mut bytes, field);
        }
        bytes
    };
    let good = valid_ping("client-host", "client salt", true);
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"\x93\xa3tag");
    let mut flipped_digest = good.clone();
    let middle = good.len() / 2;
    flipped_digest[middle] ^= 0x01;
    let seeds = [
        ("key-and-user", good.clone()),
        ("key-only", valid_ping("client-host", "", false)),
        ("then-a-request", trailing),
        ("flipped-digest", flipped_digest),
        ("truncated", good[..good.len() - 10].to_vec()),
        ("wrong-key", ping(&["PING", "h", "s", "0123", "fluent", "x"])),
        ("helo-not-ping", ping(&["HELO", "h", "s", "d", "u", "p"])),
        ("five-fields", ping(&["PING", "h", "s", "d", "u"])),
        ("number-field", vec![0x96, 0xa4, b'P', b'I', b'N', b'G', 0x01, 0xa0, 0xa0, 0xa0, 0xa0]),
        ("not-an-array", b"\xa4PING".to_vec()),
        ("reserved-marker", vec![0x96, 0xc1]),
    ];
    seeds.into_iter().map(|(name, bytes)| ("handshake_ping", name.to_owned(), bytes)).collect()
}

/// The test fixtures (the reference deployment's file and one with fluent-bit's own `loki`
/// output, their Loki port filled in), and small files for the reader's other paths: `@SET` and `${NAME}`, an `@INCLUDE`
/// that finds nothing, keys outside a section, a section left open, unknown plugins.
fn fluent_bit_config_seeds() -> Vec<Seed> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fluent-bit");
    let mut seeds: Vec<Seed> = ["reference.conf", "native.conf"]
        .into_iter()
        .map(|name| {
            // The tests point the fixtures at their stand-in Loki; here, at a real port.
            let text = std::fs::read_to_string(fixtures.join(name)).unwrap();
            ("fluent_bit_config", format!("fixture-{name}"), text.replace("PORT", "3100").into())
        })
        .collect();
    let small = [
        (
            "set-and-variables.conf",
            "@SET JOB=wiki\n[SERVICE]\n    Flush 1\n[INPUT]\n    Name forward\n    \
             Port 24224\n[OUTPUT]\n    Name loki\n    Match *\n    Host loki.example\n    \
             Labels job=${JOB}, host=${HOSTNAME}\n    Label_keys $container_name\n",
        ),
        (
            "include-nothing.conf",
            "@INCLUDE extra-*.conf\n@INCLUDE missing.conf\n[INPUT]\n    Name forward\n",
        ),
        ("key-outside-section.conf", "Name forward\n[INPUT]\n    Name forward\n"),
        ("open-section.conf", "[INPUT\n    Name forward\n"),
        (
            "loki-output-options.conf",
            "[INPUT]\n    Name forward\n[OUTPUT]\n    Name loki\n    Match docker.*\n    \
             Host loki.example\n    Port 3100\n    tls on\n    tls.verify off\n    \
             line_format json\n    structured_metadata trace_id=$trace_id\n    \
             auto_kubernetes_labels off\n    Retry_Limit False\n    workers 2\n",
        ),
        (
            "two-outputs-comments.conf",
            "# comment\n[INPUT]\n\tName forward # not a comment\n\n[OUTPUT]\n    Name loki\n    \
             Match a\n[OUTPUT]\n    Name loki\n    Match b\n",
        ),
        (
            "grafana-loki-plugin.conf",
            "[INPUT]\n    Name forward\n[OUTPUT]\n    Name grafana-loki\n    Match *\n    \
             Url http:loki:3100\n    BatchWait 1s\n    BatchSize 1048576\n    \
             Labels {job=\"fluent-bit\"}\n    LabelKeys container_name\n    \
             RemoveKeys source,container_id\n    LineFormat json\n    DropSingleKey true\n",
        ),
        ("empty.conf", ""),
        (
            "unknown-plugins.conf",
            "[INPUT]\n    Name tail\n[FILTER]\n    Name grep\n[OUTPUT]\n    Name es\n",
        ),
    ];
    seeds.extend(
        small
            .into_iter()
            .map(|(name, text)| ("fluent_bit_config", name.to_owned(), text.as_bytes().to_vec())),
    );
    seeds
}
