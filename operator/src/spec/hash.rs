//! The spec hash: sha256 over the canonical JSON of everything that shapes the container, like Docker
//! Compose's `config-hash` label. Equal hashes mean no recreate is needed.
//!
//! Secret values (env read from `valueFrom.file`) enter the hash only as a keyed digest
//! ([`SpecHashKey::digest`], HMAC-SHA256 under a random per-install key kept in the state directory), so
//! someone who can read container labels cannot confirm a guess of a secret from the label. A spec
//! without secret values hashes exactly as before the key existed.

use std::fmt;
use std::io::Read;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Hex sha256 of the canonical JSON of `shape` (first 16 bytes: 32 hex digits, enough to tell specs apart).
pub fn spec_hash(shape: &impl Serialize) -> String {
    let json = serde_json::to_vec(shape).unwrap_or_default();
    let digest = Sha256::digest(&json);
    hex::encode(&digest[..16])
}

/// The name of the key's file in the state directory (mode 0600).
pub const KEY_FILE: &str = "spec-hash.key";

/// The per-install key secret values are digested with before they enter the spec hash. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SpecHashKey([u8; 32]);

impl fmt::Debug for SpecHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpecHashKey(***)")
    }
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No randomness from the system.
    #[error("cannot read /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
    /// The key file's text is not 64 hex digits.
    #[error("the spec-hash key is not 64 hex digits")]
    Malformed,
}

impl SpecHashKey {
    /// A key of these bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new random key from the system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// The key as the text of its file: 64 hex digits and a newline.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    /// Parses the text of a key file.
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Malformed)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| KeyError::Malformed)
    }

    /// `hmac-sha256:HEX` of `value` under this key: what the spec hash carries instead of a secret.
    pub fn digest(&self, value: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            // HMAC takes keys of any length; this branch is never taken.
            Err(_) => return String::new(),
        };
        mac.update(value.as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// What a secret value is hashed as: its keyed digest, or (no key yet: a read-only command before the
/// first `apply`/`run` made one) a placeholder no container carries, so the plan says it will change.
pub fn secret_for_hash(key: Option<&SpecHashKey>, value: &str) -> String {
    key.map_or_else(
        || "<secret: no spec-hash key yet>".to_owned(),
        |k| k.digest(value),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_sensitive() {
        assert_eq!(spec_hash(&("a", 1)), spec_hash(&("a", 1)));
        assert_ne!(spec_hash(&("a", 1)), spec_hash(&("a", 2)));
        assert_eq!(spec_hash(&"x").len(), 32);
    }

    #[test]
    fn keyed_digest_depends_on_key_and_value_and_hides_both() {
        let a = SpecHashKey::from_bytes([1; 32]);
        let b = SpecHashKey::from_bytes([2; 32]);
        assert_eq!(a.digest("hunter2"), a.digest("hunter2"));
        assert_ne!(a.digest("hunter2"), a.digest("hunter3"));
        assert_ne!(a.digest("hunter2"), b.digest("hunter2"));
        assert!(a.digest("hunter2").starts_with("hmac-sha256:"));
        assert!(!a.digest("hunter2").contains("hunter2"));
        assert_eq!(format!("{a:?}"), "SpecHashKey(***)");
        let text = a.to_file_text();
        assert_eq!(SpecHashKey::from_file_text(&text).unwrap(), a);
        assert!(SpecHashKey::from_file_text("abc").is_err());
        assert_ne!(
            SpecHashKey::generate().unwrap(),
            SpecHashKey::generate().unwrap()
        );
        assert_ne!(secret_for_hash(None, "x"), secret_for_hash(Some(&a), "x"));
    }
}
