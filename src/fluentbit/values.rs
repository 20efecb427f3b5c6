//! The value syntaxes of fluent-bit and of Grafana's Go plugin: booleans, sizes, durations,
//! comma lists, record accessors and LogQL label sets.
//!
//! Each parser returns a lowercase message naming the offending text, for the caller to place.

use std::time::Duration;

/// A boolean as either side accepts it: fluent-bit's `on`/`off`/`yes`/`no`/`true`/`false` and
/// Go's `1`/`0`/`t`/`f`/`true`/`false`, in any case.
pub(crate) fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "t" | "1" => Ok(true),
        "off" | "no" | "false" | "f" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (on or off)")),
    }
}

/// A size as fluent-bit writes it: a number of bytes with an optional `K`, `KB`, `M`, `MB`,
/// `G` or `GB` (any case), each a power of 1000 as in current fluent-bit.
pub(crate) fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let multiplier: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" => 1.0,
        "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        _ => return Err(format!("invalid size {text:?}: the unit must be K, M or G")),
    };
    match number.parse::<f64>() {
        // The product of a short decimal and a power of ten is exact enough to round.
        Ok(value) => Ok((value * multiplier).round() as u64),
        Err(_) => Err(format!("invalid size {text:?}")),
    }
}

/// A number of seconds, possibly fractional, as fluent-bit's `Flush` and `Grace` take it.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let value: Option<f64> = text.trim().parse().ok();
    value
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| format!("invalid number of seconds {text:?}"))
}

/// Whole seconds, or else a Go duration: how the Go plugin reads `BatchWait`.
pub(crate) fn seconds_or_go_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => go_duration(text),
    }
}

/// A Go duration such as `500ms`, `1.5h` or `1h30m`.
pub(crate) fn go_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.starts_with('-') {
        return Err(invalid("it is negative"));
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut nanos = 0.0_f64;
    while !rest.is_empty() {
        let number_end =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid("expected a number"))?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = go_unit_nanos(&rest[..unit_end])
            .ok_or_else(|| invalid("units are ns, us, ms, s, m and h"))?;
        nanos += number * unit;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

fn go_unit_nanos(unit: &str) -> Option<f64> {
    match unit {
        "ns" => Some(1.0),
        "us" | "\u{b5}s" | "\u{3bc}s" => Some(1e3),
        "ms" => Some(1e6),
        "s" => Some(1e9),
        "m" => Some(60e9),
        "h" => Some(3600e9),
        _ => None,
    }
}

/// A comma-separated list, each item trimmed, empty items left out.
pub(crate) fn list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
}

/// A record accessor such as `$container_name` or `$kubernetes['labels']['app']`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accessor {
    /// The top-level record key.
    pub(crate) key: String,
    /// Whether it reaches into a nested map, which fwd2loki's `label_keys` cannot.
    pub(crate) nested: bool,
}

/// Reads a record accessor; the `$` is optional, as in fluent-bit's `remove_keys`.
pub(crate) fn accessor(text: &str) -> Result<Accessor, String> {
    let path = text.trim();
    let path = path.strip_prefix('$').unwrap_or(path);
    let (key, nested) = match path.find('[') {
        Some(bracket) => (&path[..bracket], true),
        None => (path, false),
    };
    if key.is_empty() {
        return Err(format!("{text:?} names no record key"));
    }
    Ok(Accessor { key: key.to_owned(), nested })
}

/// One item of the native output's `labels`: `name=value`, `name=$key` or `$key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NativeLabel {
    /// A label with a fixed value.
    Static {
        /// The label name.
        name: String,
        /// The value.
        value: String,
    },
    /// A label whose value is read from the record.
    FromRecord {
        /// The label name; the accessor's key when the item was a bare `$key`.
        name: String,
        /// Where the value is read.
        accessor: Accessor,
    },
}

/// Reads the native output's `labels`: a comma list of `name=value`, `name=$key` and `$key`.
pub(crate) fn native_labels(text: &str) -> Result<Vec<NativeLabel>, String> {
    list(text).into_iter().map(|item| native_label(&item)).collect()
}

fn native_label(item: &str) -> Result<NativeLabel, String> {
    if item.starts_with('$') {
        let accessor = accessor(item)?;
        return Ok(NativeLabel::FromRecord { name: accessor.key.clone(), accessor });
    }
    let Some((name, value)) = item.split_once('=') else {
        return Err(format!("{item:?} is neither name=value nor $key"));
    };
    let (name, value) = (name.trim().to_owned(), value.trim());
    if value.starts_with('$') {
        Ok(NativeLabel::FromRecord { name, accessor: accessor(value)? })
    } else {
        Ok(NativeLabel::Static { name, value: value.to_owned() })
    }
}

/// Reads a LogQL label set such as `{job="fluent-bit", hostname="node-1"}`, as the Go plugin's
/// `Labels` takes it. Values are quoted with `"`, `'` (both with backslash escapes) or `` ` ``.
pub(crate) fn logql_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let inner = text.trim().strip_prefix('{').and_then(|rest| rest.strip_suffix('}'));
    let Some(inner) = inner else {
        return Err(format!("{text:?} is not a label set in braces, like {{job=\"fluent-bit\"}}"));
    };
    let mut cursor = Cursor { rest: inner };
    let mut labels = Vec::new();
    loop {
        cursor.skip_spaces();
        if cursor.rest.is_empty() {
            return Ok(labels);
        }
        let name = cursor.label_name().ok_or_else(|| cursor.unexpected("a label name"))?;
        cursor.skip_spaces();
        if !cursor.eat('=') || cursor.rest.starts_with('~') {
            return Err(cursor.unexpected(&format!("= after {name} (only equality is possible)")));
        }
        cursor.skip_spaces();
        let value = cursor.quoted().ok_or_else(|| cursor.unexpected("a quoted value"))?;
        labels.push((name, value));
        cursor.skip_spaces();
        if !cursor.eat(',') && !cursor.rest.is_empty() {
            return Err(cursor.unexpected("\",\" or the end of the label set"));
        }
    }
}

/// The unread part of a LogQL label set.
struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, expected: char) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn label_name(&mut self) -> Option<String> {
        if !self.rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return None;
        }
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(name.to_owned())
    }

    fn quoted(&mut self) -> Option<String> {
        let quote = self.rest.chars().next().filter(|c| matches!(c, '"' | '\'' | '`'))?;
        let mut value = String::new();
        let mut chars = self.rest[1..].char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                _ if c == quote => {
                    self.rest = &self.rest[1 + index + 1..];
                    return Some(value);
                }
                '\\' if quote != '`' => value.push(unescape(chars.next()?.1)),
                _ => value.push(c),
            }
        }
        None
    }

    fn unexpected(&self, expected: &str) -> String {
        let found: String = self.rest.chars().take(20).collect();
        if found.is_empty() {
            format!("expected {expected} at the end")
        } else {
            format!("expected {expected} at {found:?}")
        }
    }
}

fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_of_both_worlds() {
        for yes in ["on", "On", "true", "yes", "1", "t"] {
            assert_eq!(boolean(yes), Ok(true), "{yes}");
        }
        for no in ["off", "FALSE", "no", "0", "f"] {
            assert_eq!(boolean(no), Ok(false), "{no}");
        }
        assert!(boolean("maybe").unwrap_err().contains("\"maybe\""));
    }

    #[test]
    fn sizes_in_decimal_units() {
        assert_eq!(size("6144000"), Ok(6_144_000));
        assert_eq!(size("6M"), Ok(6_000_000));
        assert_eq!(size("512kb"), Ok(512_000));
        assert_eq!(size("1.5G"), Ok(1_500_000_000));
        assert!(size("6X").unwrap_err().contains("\"6X\""));
        assert!(size("big").is_err());
    }

    #[test]
    fn go_durations_and_plain_seconds() {
        assert_eq!(go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(go_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert!(go_duration("5").unwrap_err().contains("units"));
        assert!(go_duration("-1s").unwrap_err().contains("negative"));
        assert!(go_duration("soon").unwrap_err().contains("\"soon\""));
        assert_eq!(seconds_or_go_duration("1"), Ok(Duration::from_secs(1)));
        assert_eq!(seconds_or_go_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(seconds("-1").is_err());
    }

    #[test]
    fn lists_and_accessors() {
        assert_eq!(list(" source, container_id ,,"), ["source", "container_id"]);
        assert_eq!(
            accessor("$container_name"),
            Ok(Accessor { key: "container_name".into(), nested: false })
        );
        assert_eq!(accessor("log"), Ok(Accessor { key: "log".into(), nested: false }));
        assert_eq!(accessor("$kubernetes['labels']['app']").map(|a| a.nested), Ok(true));
        assert!(accessor("$").is_err());
    }

    #[test]
    fn native_labels_mix_static_values_and_accessors() {
        let labels = native_labels("job=fluent-bit, $container_name, app=$kubernetes['app']");
        let container = Accessor { key: "container_name".into(), nested: false };
        let app = Accessor { key: "kubernetes".into(), nested: true };
        assert_eq!(
            labels,
            Ok(vec![
                NativeLabel::Static { name: "job".into(), value: "fluent-bit".into() },
                NativeLabel::FromRecord { name: "container_name".into(), accessor: container },
                NativeLabel::FromRecord { name: "app".into(), accessor: app },
            ])
        );
        assert!(native_labels("job").unwrap_err().contains("\"job\""));
    }

    #[test]
    fn logql_label_sets() {
        let labels = logql_labels(r#"{job="fluent-bit", hostname="node-1"}"#).unwrap();
        assert_eq!(
            labels,
            [("job".into(), "fluent-bit".into()), ("hostname".into(), "node-1".into())]
        );
        let labels = logql_labels(r#" { a = 'it\'s' , b=`raw\n`, c="q\"uote", } "#).unwrap();
        assert_eq!(labels[0].1, "it's");
        assert_eq!(labels[1].1, "raw\\n");
        assert_eq!(labels[2].1, "q\"uote");
        assert_eq!(logql_labels("{}"), Ok(vec![]));

        assert!(logql_labels("job=\"x\"").unwrap_err().contains("braces"));
        assert!(logql_labels("{job=~\"x\"}").unwrap_err().contains("only equality"));
        assert!(logql_labels("{job=x}").unwrap_err().contains("a quoted value"));
        assert!(logql_labels("{job=\"x\" env=\"y\"}").unwrap_err().contains("\",\""));
        assert!(logql_labels("{1job=\"x\"}").unwrap_err().contains("a label name"));
        // What Nomad's template syntax leaves when it is not rendered: quotes inside quotes.
        let unrendered = r#"{hostname="{{ env "attr.unique.hostname" }}"}"#;
        assert!(logql_labels(unrendered).is_err());
    }
}
