//! Loki tenant ids, sent as `X-Scope-OrgID`.
//!
//! Loki accepts an id of 1 to 150 characters out of `[a-zA-Z0-9!-_.*'()]`, other than `.` and
//! `..` (the rules of Grafana's `dskit/tenant`). An id taken from a record is checked against
//! them before it picks where entries go, since Loki would refuse the whole push otherwise.

/// Longest tenant id Loki accepts.
const MAX_TENANT_ID_BYTES: usize = 150;

/// Whether Loki accepts `id` as a tenant id.
pub fn is_valid_tenant_id(id: &str) -> bool {
    let allowed = |c: u8| c.is_ascii_alphanumeric() || b"!-_.*'()".contains(&c);
    (1..=MAX_TENANT_ID_BYTES).contains(&id.len())
        && id.bytes().all(allowed)
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_lokis_rules() {
        for valid in ["team-a", "fake", "a.b_c!*'()", "0", &"x".repeat(150)] {
            assert!(is_valid_tenant_id(valid), "{valid:?}");
        }
        for invalid in ["", ".", "..", "a|b", "a b", "ü", "a/b", &"x".repeat(151)] {
            assert!(!is_valid_tenant_id(invalid), "{invalid:?}");
        }
    }
}
