//! Credentials for Loki: a bearer token or basic auth, from a file or the environment.
//!
//! A file is checked before every push and read again when it changed, so a token that Vault
//! or a Nomad template rotates is used from the next push on, without a restart. If a rotated
//! file cannot be read for a moment, the last value read is kept.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine;
use reqwest::header::HeaderValue;
use tracing::warn;

use crate::secrets::{SecretError, read_secret_file};

/// A secret that may change while fwd2loki runs.
#[derive(Debug)]
pub enum Secret {
    /// A fixed value, from the environment. `Debug` shows no value.
    Fixed(Redacted),
    /// A file, read again when it changes.
    File(WatchedFile),
}

/// A string whose `Debug` form hides it.
pub struct Redacted(String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Redacted {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }
}

/// A secret file and the value last read from it.
#[derive(Debug)]
pub struct WatchedFile {
    key: &'static str,
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    /// What identifies the version read: modification time, length and inode.
    version: Option<(SystemTime, u64, u64)>,
    value: Redacted,
}

impl WatchedFile {
    /// Reads `path` now, so that a missing or unreadable file is reported at startup.
    ///
    /// # Errors
    ///
    /// [`SecretError`] naming `key` and the file.
    pub fn open(key: &'static str, path: &Path) -> Result<Self, SecretError> {
        let version = file_version(path);
        let value = Redacted(read_secret_file(key, path)?);
        let state = Mutex::new(FileState { version, value });
        Ok(Self { key, path: path.to_owned(), state })
    }

    /// The current value: read again if the file changed since the last read.
    pub fn current(&self) -> String {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let version = file_version(&self.path);
        if version.is_some() && version != state.version {
            match read_secret_file(self.key, &self.path) {
                Ok(value) => {
                    state.value = Redacted(value);
                    state.version = version;
                }
                Err(error) => warn!(%error, "cannot read the rotated secret; keeping the last one"),
            }
        }
        state.value.0.clone()
    }
}

fn file_version(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len(), metadata.ino()))
}

impl Secret {
    fn current(&self) -> String {
        match self {
            Self::Fixed(value) => value.0.clone(),
            Self::File(file) => file.current(),
        }
    }
}

/// How pushes authenticate.
#[derive(Debug)]
pub enum Credentials {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The username, not a secret.
        user: String,
        /// The password.
        password: Secret,
    },
}

impl Credentials {
    /// The `Authorization` header for the next push, marked sensitive so that no HTTP library
    /// logs it. `None` without credentials or when the secret is not a valid header value.
    pub fn header(&self) -> Option<HeaderValue> {
        let text = match self {
            Self::None => return None,
            Self::Bearer(token) => {
                // An empty file stands for "no token yet" (a template rendered before the
                // secret exists), not for an empty token.
                let token = token.current();
                if token.is_empty() {
                    return None;
                }
                format!("Bearer {token}")
            }
            Self::Basic { user, password } => {
                let pair = format!("{user}:{}", password.current());
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
            }
        };
        let mut header = HeaderValue::from_str(&text).ok()?;
        header.set_sensitive(true);
        Some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let credentials = Credentials::Bearer(Secret::File(WatchedFile::open("k", &path).unwrap()));
        assert_eq!(credentials.header().unwrap(), "Bearer first");

        // Rotate the way templates do: write a new file and rename it over the old one.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(credentials.header().unwrap(), "Bearer second");

        std::fs::remove_file(&path).unwrap();
        assert_eq!(credentials.header().unwrap(), "Bearer second", "the last value is kept");
    }

    #[test]
    fn an_empty_token_file_sends_no_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "").unwrap();
        let credentials = Credentials::Bearer(Secret::File(WatchedFile::open("k", &path).unwrap()));
        assert_eq!(credentials.header(), None);
    }

    #[test]
    fn basic_auth_and_redaction() {
        let password = Secret::Fixed(Redacted::new("s3cret".into()));
        let credentials = Credentials::Basic { user: "fwd".into(), password };
        let header = credentials.header().unwrap();
        assert_eq!(header, "Basic ZndkOnMzY3JldA==");
        assert!(header.is_sensitive());
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }
}
