//! Rendering msgpack values as JSON or logfmt text, straight from the raw bytes.

use std::borrow::Cow;

use crate::msgpack::{ReadError, Reader, Value};

/// Why a value could not be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The value is not valid msgpack.
    #[error(transparent)]
    Msgpack(#[from] ReadError),
    /// A map key is itself an array or a map, which JSON cannot express.
    #[error("map key is an array or a map")]
    ContainerKey,
}

/// Appends the JSON text of the msgpack value `raw` to `out`.
///
/// Strings and binaries become JSON strings (invalid UTF-8 replaced by U+FFFD), non-finite floats
/// become `null`, an EventTime becomes its seconds as a decimal number and other extensions a
/// hex string. Nesting is handled with an explicit stack, so any depth is safe.
///
/// # Errors
///
/// [`RenderError`] for malformed msgpack or a map keyed by a container.
pub fn write_json(raw: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    /// A container being written: how many items it holds and how many were written.
    struct Open {
        is_map: bool,
        items: u64,
        written: u64,
    }

    let mut reader = Reader::new(raw);
    let mut stack: Vec<Open> = Vec::new();
    loop {
        let mut is_key = false;
        if let Some(open) = stack.last_mut() {
            if open.written > 0 {
                let after_key = open.is_map && open.written % 2 == 1;
                out.push(if after_key { b':' } else { b',' });
            }
            is_key = open.is_map && open.written % 2 == 0;
            open.written += 1;
        }

        match reader.read()? {
            Value::Array(_) | Value::Map(_) if is_key => return Err(RenderError::ContainerKey),
            Value::Array(0) => out.extend_from_slice(b"[]"),
            Value::Map(0) => out.extend_from_slice(b"{}"),
            Value::Array(len) => {
                out.push(b'[');
                stack.push(Open { is_map: false, items: len.into(), written: 0 });
            }
            Value::Map(len) => {
                out.push(b'{');
                stack.push(Open { is_map: true, items: 2 * u64::from(len), written: 0 });
            }
            Value::Str(bytes) | Value::Bin(bytes) => write_json_string(&utf8_lossy(bytes), out),
            // JSON keys are strings: quote the scalar's text.
            scalar if is_key => write_quoted_scalar(&scalar, out),
            scalar => write_scalar(&scalar, out),
        }

        while let Some(open) = stack.last() {
            if open.written < open.items {
                break;
            }
            out.push(if open.is_map { b'}' } else { b']' });
            stack.pop();
        }
        if stack.is_empty() {
            return Ok(());
        }
    }
}

/// Appends a map key as a JSON string: a string as itself, a scalar as its quoted text.
///
/// # Errors
///
/// [`RenderError::ContainerKey`] for an array or map, or a malformed key.
pub fn write_json_key(raw: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    match Reader::new(raw).read()? {
        Value::Str(bytes) | Value::Bin(bytes) => write_json_string(&utf8_lossy(bytes), out),
        Value::Array(_) | Value::Map(_) => return Err(RenderError::ContainerKey),
        scalar => write_quoted_scalar(&scalar, out),
    }
    Ok(())
}

/// Appends a msgpack value as a logfmt value: a string as is when it needs no quoting, anything
/// else as its JSON text, quoted when it holds a space, `=`, a quote or a control character.
///
/// # Errors
///
/// As [`write_json`].
pub fn write_logfmt_value(raw: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    let text = match Reader::new(raw).read()? {
        Value::Str(bytes) | Value::Bin(bytes) => utf8_lossy(bytes),
        _ => {
            let mut json = Vec::new();
            write_json(raw, &mut json)?;
            Cow::Owned(String::from_utf8(json).expect("JSON text is UTF-8"))
        }
    };
    let needs_quotes =
        text.is_empty() || text.bytes().any(|b| b <= b' ' || b == b'=' || b == b'"' || b == 0x7f);
    if needs_quotes {
        write_json_string(&text, out);
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    Ok(())
}

/// Appends the plain text of a string value, or the JSON text of any other value.
///
/// # Errors
///
/// As [`write_json`].
pub fn write_plain(raw: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    match Reader::new(raw).read()? {
        Value::Str(bytes) | Value::Bin(bytes) => {
            out.extend_from_slice(utf8_lossy(bytes).as_bytes());
            Ok(())
        }
        _ => write_json(raw, out),
    }
}

/// The string for `bytes`, with invalid UTF-8 sequences replaced by U+FFFD.
pub fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    // The strict check is much faster than the lossy one on valid text, which is nearly all
    // text, and simdutf8's is several times faster than the standard library's on log lines;
    // the lossy one runs only to repair the rest.
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Appends `text` as a quoted, escaped JSON string.
pub fn write_json_string(text: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(out, text).expect("writing to a Vec cannot fail");
}

/// Appends the JSON text of a scalar item as a JSON string.
fn write_quoted_scalar(value: &Value<'_>, out: &mut Vec<u8>) {
    let mut text = Vec::new();
    write_scalar(value, &mut text);
    write_json_string(&String::from_utf8_lossy(&text), out);
}

/// Appends the JSON text of a scalar item.
fn write_scalar(value: &Value<'_>, out: &mut Vec<u8>) {
    match *value {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::UInt(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        Value::Float(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
        }
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Ext(0, &[s0, s1, s2, s3, n0, n1, n2, n3]) => {
            let secs = u32::from_be_bytes([s0, s1, s2, s3]);
            let nanos = u32::from_be_bytes([n0, n1, n2, n3]);
            out.extend_from_slice(format!("{secs}.{nanos:09}").as_bytes());
        }
        Value::Ext(_, data) => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            write_json_string(&hex, out);
        }
        Value::Str(_) | Value::Bin(_) | Value::Array(_) | Value::Map(_) => {
            unreachable!("write_json handles strings and containers")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(value: &serde_json::Value) -> String {
        let raw = rmp_serde::to_vec(value).expect("json values encode");
        let mut out = Vec::new();
        write_json(&raw, &mut out).expect("valid msgpack renders");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    #[test]
    fn json_round_trips_through_msgpack() {
        let value = serde_json::json!({
            "log": "say \"hi\"\n\ttab \u{1} é",
            "n": [1, -2, 3.25, null, true, false, [], {}],
            "nested": {"a": {"b": [{"c": "d"}]}},
        });
        let rendered: serde_json::Value =
            serde_json::from_str(&json_of(&value)).expect("rendered text is JSON");
        assert_eq!(rendered, value);
    }

    #[test]
    fn keeps_the_order_of_map_keys() {
        let raw = [0x82, 0xa1, b'z', 0x01, 0xa1, b'a', 0x02];
        let mut out = Vec::new();
        write_json(&raw, &mut out).unwrap();
        assert_eq!(out, br#"{"z":1,"a":2}"#);
    }

    #[test]
    fn renders_non_string_keys_binaries_and_event_times() {
        // {1: bin "x", "t": EventTime(1, 5)}
        let raw = [0x82, 0x01, 0xc4, 0x01, b'x', 0xa1, b't', 0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 5];
        let mut out = Vec::new();
        write_json(&raw, &mut out).unwrap();
        assert_eq!(out, br#"{"1":"x","t":1.000000005}"#);
    }

    #[test]
    fn refuses_container_keys_and_survives_deep_nesting() {
        let mut out = Vec::new();
        assert_eq!(write_json(&[0x81, 0x90, 0x01], &mut out), Err(RenderError::ContainerKey));

        let mut deep = vec![0x91; 200_000];
        deep.push(0x01);
        out.clear();
        write_json(&deep, &mut out).expect("deep nesting renders");
        assert_eq!(out.len(), 400_001);
    }

    #[test]
    fn logfmt_quotes_only_when_needed() {
        let render = |value: serde_json::Value| {
            let mut out = Vec::new();
            write_logfmt_value(&rmp_serde::to_vec(&value).unwrap(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(render(serde_json::json!("plain")), "plain");
        assert_eq!(render(serde_json::json!("two words")), r#""two words""#);
        assert_eq!(render(serde_json::json!("")), r#""""#);
        assert_eq!(render(serde_json::json!(42)), "42");
        assert_eq!(render(serde_json::json!({"a": 1})), r#""{\"a\":1}""#);
    }
}
