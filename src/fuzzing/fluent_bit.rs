//! Converting a fluent-bit classic configuration file, as `fwd2loki config convert` and
//! `--fluent-bit-config` do.

use std::path::Path;

use crate::config::Config;
use crate::fluentbit;

/// Where the fuzzed file claims to live: a directory that does not exist, so that an
/// `@INCLUDE` of a plain file name finds nothing.
const CONF_PATH: &str = "/nonexistent-fwd2loki-fuzz/fluent-bit.conf";

/// Converts `data` as a fluent-bit.conf in which no `${NAME}` is set in the environment.
///
/// Checks that converting is deterministic, that a converted file is TOML, that fwd2loki's
/// loader accepts or refuses it without panicking, and that warnings and notes print. Files
/// with an `@INCLUDE` and a `/` anywhere are skipped: the path could reach this machine's own
/// files (directly or through `@SET`), and reading those is not what is being tested.
pub fn fluent_bit_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.to_ascii_lowercase().contains("@include") && text.contains('/') {
        return;
    }
    let convert = || fluentbit::convert(text, Path::new(CONF_PATH), &|_| None);
    match (convert(), convert()) {
        (Ok(conversion), Ok(again)) => {
            assert_eq!(conversion.toml, again.toml, "the same file converts the same way");
            if let Err(error) = conversion.toml.parse::<toml::Table>() {
                panic!("the converted file is not TOML: {error}\n{}", conversion.toml);
            }
            // Values fluent-bit takes may still be out of fwd2loki's range: refusing them,
            // with the key named, is the loader's job.
            let _ = Config::from_toml(&conversion.toml);
            for remark in conversion.warnings.iter().chain(&conversion.notes) {
                assert!(!remark.to_string().is_empty(), "a remark says something");
            }
        }
        (Err(error), Err(again)) => {
            assert_eq!(error.to_string(), again.to_string(), "the same file fails the same way");
            assert!(!error.to_string().is_empty(), "an error says something");
        }
        (first, second) => panic!("converting twice gave {first:?} and then {second:?}"),
    }
}
