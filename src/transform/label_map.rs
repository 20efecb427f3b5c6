//! Finding a value in a nested record by a dotted path, for `label_map`.
//!
//! A path such as `kubernetes.labels.app` names a key at each level of nested maps. Record keys
//! may contain dots themselves (`app.kubernetes.io/name`, `com.example.team`), so a path is not
//! simply split at its dots: at each level the longest key that matches the start of what is
//! left of the path is taken, and the rest of the path is looked up inside its value.

use std::ops::Range;

use crate::forward::decode::DecodeError;
use crate::msgpack::{Reader, Value};

/// The byte range in `record` of the value at `path`, or `None` when the path leads nowhere
/// (a key is missing, or a value on the way is not a map).
///
/// # Errors
///
/// [`DecodeError`] when the record is not well-formed msgpack.
pub fn find(record: &[u8], path: &[u8]) -> Result<Option<Range<usize>>, DecodeError> {
    let mut map_start = 0;
    let mut rest = path;
    loop {
        let mut reader = Reader::new(&record[map_start..]);
        let Value::Map(pairs) = reader.read()? else {
            return Ok(None);
        };
        let offset = |reader: &Reader<'_>| record.len() - reader.remaining().len();
        // The longest matching key so far: its length and its value's range.
        let mut found: Option<(usize, Range<usize>)> = None;
        for _ in 0..pairs {
            let key = reader.read_raw()?;
            let value_start = offset(&reader);
            reader.read_raw()?;
            let Ok(Value::Str(name) | Value::Bin(name)) = Reader::new(key).read() else {
                continue;
            };
            let longer = found.as_ref().is_none_or(|(len, _)| name.len() > *len);
            if longer && starts_segment(rest, name) {
                found = Some((name.len(), value_start..offset(&reader)));
            }
        }
        let Some((len, value)) = found else {
            return Ok(None);
        };
        if len == rest.len() {
            return Ok(Some(value));
        }
        rest = &rest[len + 1..];
        map_start = value.start;
    }
}

/// Whether `name` is the whole of `path` or its start up to a dot.
fn starts_segment(path: &[u8], name: &[u8]) -> bool {
    path.starts_with(name) && (path.len() == name.len() || path[name.len()] == b'.')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::msgpack::value_len;

    fn value_at(record: &serde_json::Value, path: &str) -> Option<serde_json::Value> {
        let bytes = rmp_serde::to_vec(record).unwrap();
        let range = find(&bytes, path.as_bytes()).unwrap()?;
        assert_eq!(value_len(&bytes[range.clone()]), Some(range.len()), "a whole value");
        Some(rmp_serde::from_slice(&bytes[range]).unwrap())
    }

    #[test]
    fn follows_nested_maps() {
        let record = json!({"log": "x", "kubernetes": {"labels": {"app": "web"}, "pod": "p-1"}});
        assert_eq!(value_at(&record, "kubernetes.labels.app"), Some(json!("web")));
        assert_eq!(value_at(&record, "kubernetes.pod"), Some(json!("p-1")));
        assert_eq!(value_at(&record, "kubernetes.labels"), Some(json!({"app": "web"})));
        assert_eq!(value_at(&record, "log"), Some(json!("x")));
    }

    #[test]
    fn finds_keys_that_contain_dots() {
        let record = json!({
            "attrs": {"com.example.team": "web", "com": {"other": 1}},
            "kubernetes": {"labels": {"app.kubernetes.io/name": "shop", "app": "short"}},
        });
        assert_eq!(value_at(&record, "attrs.com.example.team"), Some(json!("web")));
        assert_eq!(value_at(&record, "attrs.com.other"), Some(json!(1)));
        assert_eq!(
            value_at(&record, "kubernetes.labels.app.kubernetes.io/name"),
            Some(json!("shop"))
        );
        assert_eq!(value_at(&record, "kubernetes.labels.app"), Some(json!("short")));
    }

    #[test]
    fn a_path_that_leads_nowhere_finds_nothing() {
        let record = json!({"a": {"b": "leaf"}, "ab": 1});
        assert_eq!(value_at(&record, "a.c"), None);
        assert_eq!(value_at(&record, "a.b.c"), None, "a string is not a map");
        assert_eq!(value_at(&record, "a.bc"), None);
        assert_eq!(value_at(&record, "x"), None);
        assert_eq!(value_at(&record, "a"), Some(json!({"b": "leaf"})));
    }
}
