//! The spec hash: sha256 over the canonical JSON of everything that shapes the container, like Docker
//! Compose's `config-hash` label. Equal hashes mean no recreate is needed.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Hex sha256 of the canonical JSON of `shape` (first 16 bytes: 32 hex digits, enough to tell specs apart).
pub fn spec_hash(shape: &impl Serialize) -> String {
    let json = serde_json::to_vec(shape).unwrap_or_default();
    let digest = Sha256::digest(&json);
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_sensitive() {
        assert_eq!(spec_hash(&("a", 1)), spec_hash(&("a", 1)));
        assert_ne!(spec_hash(&("a", 1)), spec_hash(&("a", 2)));
        assert_eq!(spec_hash(&"x").len(), 32);
    }
}
