//! Loki stream labels: valid names and the selector string a push carries.
//!
//! Loki parses a stream's labels as a selector such as `{hostname="n1", job="docker"}`; names
//! must match `[a-zA-Z_][a-zA-Z0-9_]*` and must not start with `__`, which Loki reserves.
//! Structured metadata names follow the same rules.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

use crate::transform::render::write_json_string;

/// Whether `name` is a label name Loki accepts.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    valid_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__")
}

/// Turns any record key into a valid label name: every character outside `[a-zA-Z0-9_]` becomes
/// `_`, a leading digit gets a `_` in front, and a leading `__` is shortened to `_`.
///
/// `container.name` becomes `container_name` and `1abc` becomes `_1abc`.
pub fn sanitize_name(key: &str) -> String {
    let mut name: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    while name.starts_with("__") {
        name.remove(0);
    }
    name
}

/// The label set of one stream, with its selector string rendered once, and what the entries
/// that share it share besides: the tenant they are pushed to and their structured metadata.
///
/// Entries hold their set through an `Arc` shared by a connection's entries of one stream, so
/// neither the labels nor the tenant nor the structured metadata cost anything per entry.
/// Docker's record keys are the same for every line of a container, which is what makes
/// structured metadata taken from them shareable too.
///
/// Two sets are equal when their selector strings, tenants and structured metadata are; the
/// selectors are equal exactly when the names and values are, since names are kept sorted.
#[derive(Debug, Clone)]
pub struct StreamLabels {
    selector: Box<str>,
    pairs: Box<[(Box<str>, Box<str>)]>,
    /// The tenant taken from the record (`tenant_key`); `None` stands for the configured
    /// `tenant_id`, or none.
    tenant: Option<Arc<str>>,
    /// Name/value pairs sent with every entry as structured metadata, in the configured order.
    /// Empty, and then not allocated, unless `structured_metadata_keys` found something.
    structured_metadata: Box<[(Box<str>, Box<str>)]>,
    /// A hash of the selector and tenant, computed once: every entry is looked up by its
    /// stream (in its batch, and to keep its arrival order), and hashing the selector each time
    /// would cost more than the rest of the lookup.
    stream_hash: u64,
    /// A hash of the selector and tenant that is the same in every process, which picks the
    /// stream's push lane (see [`Self::lane`]).
    lane_hash: u64,
}

impl StreamLabels {
    /// Builds the set from name/value pairs; a later pair replaces an earlier one of the same
    /// name. Names must already be valid.
    pub fn new<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<Box<str>>,
        V: Into<Box<str>>,
    {
        let mut sorted: Vec<(Box<str>, Box<str>)> = Vec::new();
        for (name, value) in pairs {
            let (name, value) = (name.into(), value.into());
            debug_assert!(is_valid_name(&name), "label name {name:?} must be valid");
            match sorted.binary_search_by(|(existing, _)| existing.cmp(&name)) {
                Ok(index) => sorted[index].1 = value,
                Err(index) => sorted.insert(index, (name, value)),
            }
        }
        let selector: Box<str> = render_selector(&sorted).into();
        Self {
            stream_hash: stream_hash(&selector, None),
            lane_hash: lane_hash(&selector, None),
            selector,
            pairs: sorted.into(),
            tenant: None,
            structured_metadata: Box::default(),
        }
    }

    /// The same set for the entries of `tenant` (`None`: the configured default tenant).
    pub fn with_tenant(mut self, tenant: Option<Arc<str>>) -> Self {
        self.stream_hash = stream_hash(&self.selector, tenant.as_ref());
        self.lane_hash = lane_hash(&self.selector, tenant.as_ref());
        self.tenant = tenant;
        self
    }

    /// The same set, its entries carrying these structured metadata pairs. Names must already
    /// be valid.
    pub fn with_structured_metadata<N, V>(mut self, pairs: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<Box<str>>,
        V: Into<Box<str>>,
    {
        let pairs: Vec<(Box<str>, Box<str>)> =
            pairs.into_iter().map(|(name, value)| (name.into(), value.into())).collect();
        debug_assert!(pairs.iter().all(|(name, _)| is_valid_name(name)), "names must be valid");
        self.structured_metadata = pairs.into();
        self
    }

    /// The selector string, e.g. `{container_name="/web", job="docker"}`.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The name/value pairs, sorted by name.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(name, value)| (&**name, &**value))
    }

    /// The tenant taken from the record, if any.
    pub fn tenant(&self) -> Option<&Arc<str>> {
        self.tenant.as_ref()
    }

    /// The structured metadata of the stream's entries, in the configured order.
    pub fn structured_metadata(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        self.structured_metadata.iter().map(|(name, value)| (&**name, &**value))
    }

    /// Bytes of structured metadata names and values per entry, which Loki counts like line
    /// bytes.
    pub fn structured_metadata_bytes(&self) -> usize {
        self.structured_metadata.iter().map(|(name, value)| name.len() + value.len()).sum()
    }

    /// Whether `other` is the same Loki stream: the same tenant and labels. Structured metadata
    /// may differ, since it is not part of a stream's identity in Loki.
    pub fn same_loki_stream(&self, other: &Self) -> bool {
        // Entries of one stream share one set, so most comparisons end at the first test.
        std::ptr::eq(self, other)
            || (self.stream_hash == other.stream_hash
                && self.selector == other.selector
                && self.tenant == other.tenant)
    }

    /// Which of `lanes` push lanes carries the stream's entries. Every set of the same Loki
    /// stream gets the same lane, so the stream's pushes leave one at a time, in order.
    pub fn lane(&self, lanes: usize) -> usize {
        (self.lane_hash % lanes.max(1) as u64) as usize
    }

    /// Feeds the Loki stream identity (tenant and labels) to `state`, consistent with
    /// [`Self::same_loki_stream`].
    pub fn hash_loki_stream<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.stream_hash);
    }
}

/// The hash of a Loki stream, see [`StreamLabels::hash_loki_stream`]. Its keys are random per
/// process, as a `HashMap`'s are, so that label values cannot be chosen to collide.
fn stream_hash(selector: &str, tenant: Option<&Arc<str>>) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one((selector, tenant))
}

/// The hash behind [`StreamLabels::lane`]: fixed keys, so that a stream keeps its lane across
/// restarts (the disk buffer replays into the same lanes) and benchmarks spread the same way.
fn lane_hash(selector: &str, tenant: Option<&Arc<str>>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (selector, tenant).hash(&mut hasher);
    hasher.finish()
}

impl PartialEq for StreamLabels {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || (self.same_loki_stream(other)
                && self.structured_metadata == other.structured_metadata)
    }
}

impl Eq for StreamLabels {}

impl Hash for StreamLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash_loki_stream(state);
        self.structured_metadata.hash(state);
    }
}

impl fmt::Display for StreamLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.selector)
    }
}

/// Renders sorted pairs as `{a="x", b="y"}`. JSON string escaping is a subset of the Go string
/// literal syntax that Loki's selector parser reads, so values round-trip exactly.
fn render_selector(pairs: &[(Box<str>, Box<str>)]) -> String {
    let mut out =
        Vec::with_capacity(2 + pairs.iter().map(|(n, v)| n.len() + v.len() + 5).sum::<usize>());
    out.push(b'{');
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        write_json_string(value, &mut out);
    }
    out.push(b'}');
    String::from_utf8(out).expect("names and JSON strings are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names_loki_would_reject() {
        assert_eq!(sanitize_name("container.name"), "container_name");
        assert_eq!(sanitize_name("1abc"), "_1abc");
        assert_eq!(sanitize_name("com.example/team-name"), "com_example_team_name");
        assert_eq!(sanitize_name("__name__"), "_name__");
        assert_eq!(sanitize_name(""), "_");
        assert_eq!(sanitize_name("ünï"), "_n_");
        for key in ["container.name", "1abc", "__x", "", "a-b", "ünï"] {
            assert!(is_valid_name(&sanitize_name(key)), "{key:?}");
        }
    }

    #[test]
    fn validates_names() {
        assert!(is_valid_name("job"));
        assert!(is_valid_name("_x1"));
        assert!(!is_valid_name("1x"));
        assert!(!is_valid_name("a.b"));
        assert!(!is_valid_name("__reserved"));
        assert!(!is_valid_name(""));
    }

    #[test]
    fn renders_sorted_and_escaped_selector() {
        let labels = StreamLabels::new([
            ("job", "fluent-bit"),
            ("container_name", "/wiki-js"),
            ("hostname", "say \"hi\"\\"),
        ]);
        assert_eq!(
            labels.selector(),
            r#"{container_name="/wiki-js", hostname="say \"hi\"\\", job="fluent-bit"}"#
        );
    }

    #[test]
    fn tenant_and_structured_metadata_tell_sets_apart_but_only_tenants_loki_streams() {
        let plain = StreamLabels::new([("job", "a")]);
        let tenant_a = plain.clone().with_tenant(Some("a".into()));
        let with_metadata = plain.clone().with_structured_metadata([("container_id", "0f3c")]);
        assert_ne!(plain, tenant_a);
        assert_ne!(plain, with_metadata);
        assert!(!plain.same_loki_stream(&tenant_a));
        assert!(plain.same_loki_stream(&with_metadata));
        assert_eq!(with_metadata.selector(), r#"{job="a"}"#);
        assert_eq!(with_metadata.structured_metadata_bytes(), "container_id0f3c".len());
        assert_eq!(tenant_a.tenant().map(|tenant| &**tenant), Some("a"));
    }

    #[test]
    fn sets_of_one_loki_stream_share_a_lane() {
        let plain = StreamLabels::new([("job", "a")]);
        let with_metadata = plain.clone().with_structured_metadata([("container_id", "0f3c")]);
        assert_eq!(plain.lane(4), with_metadata.lane(4));
        assert_eq!(plain.lane(1), 0);
        let lanes: std::collections::HashSet<usize> = (0..64)
            .map(|n| StreamLabels::new([("container_name", format!("/app-{n}"))]).lane(4))
            .collect();
        assert_eq!(lanes.len(), 4, "streams spread over every lane");
    }

    #[test]
    fn later_pairs_replace_earlier_ones() {
        let labels = StreamLabels::new([("job", "a"), ("job", "b")]);
        assert_eq!(labels.selector(), r#"{job="b"}"#);
        assert_eq!(labels, StreamLabels::new([("job", "b")]));
    }
}
