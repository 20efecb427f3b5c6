//! Reading secrets (keys, passwords, tokens) from files or the environment.
//!
//! Secrets never appear in logs, errors or metrics: errors name the config key and the file,
//! never the content, and the types holding secrets redact them in `Debug`.

use std::path::{Path, PathBuf};

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot read {path}: {source}")]
pub struct SecretError {
    /// The config key naming the file.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Reads the secret in `path`, without the trailing line break editors and templates add.
///
/// # Errors
///
/// [`SecretError`] naming `key` and the file.
pub fn read_secret_file(key: &'static str, path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError {
        key,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// The secret in the environment variable `name`, if it is set and not empty.
pub fn secret_from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}
