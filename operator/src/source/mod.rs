//! Where desired state comes from: a file/directory watcher ([`mod@file`]) or a git follower ([`git`]). Each
//! runs as its own task and hands the controller a complete [`DesiredState`] whenever what is in force
//! changes; an invalid input never replaces a valid one (the previous objects stay in force and are
//! reported `SpecInvalid`).

pub mod file;
pub mod git;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::spec::Container;
use crate::spec::load::Diagnostic;
use crate::telemetry::Metrics;

/// Error lines quoted in a `SpecInvalid` condition message.
const MAX_QUOTED_ERRORS: usize = 5;

/// What a source wants in force now.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredState {
    /// Revision: a git commit SHA, or a short content hash of the files.
    pub revision: String,
    /// The objects in force (for invalid inputs: the last valid version of the affected objects).
    pub objects: Vec<Container>,
    /// Objects held at their last valid version because their input is invalid: name -> the errors.
    pub invalid: BTreeMap<String, String>,
    /// Every input was valid: an object absent from `objects` was really removed from the source. When
    /// false, nothing is orphaned or pruned (an unreadable file must not look like a deletion).
    pub complete: bool,
}

impl DesiredState {
    /// True when no object is held back.
    pub fn is_valid(&self) -> bool {
        self.invalid.is_empty() && self.complete
    }
}

/// The first 12 hex digits of the SHA-256 of `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(digest).chars().take(12).collect()
}

/// The error diagnostics, one per line (at most a few, then a count).
pub fn summarize<'a>(errors: impl IntoIterator<Item = &'a Diagnostic>) -> String {
    let all: Vec<&Diagnostic> = errors.into_iter().collect();
    let mut out = String::new();
    for d in all.iter().take(MAX_QUOTED_ERRORS) {
        if !out.is_empty() {
            out.push('\n');
        }
        // The first line (file:line:col: field: problem); the fix stays in the log.
        let _ = write!(out, "{}", d.to_string().lines().next().unwrap_or_default());
    }
    if all.len() > MAX_QUOTED_ERRORS {
        let _ = write!(out, "\n(and {} more)", all.len() - MAX_QUOTED_ERRORS);
    }
    out
}

/// Logs the diagnostics of one read of `source` (a change, never a resync): the first
/// [`MAX_QUOTED_ERRORS`] whole (with their fixes) as warnings, then one warning with the count of the
/// others, which go to debug. A hostile file of 100,000 mistakes costs a handful of lines per change.
pub fn log_diagnostics(source: &str, revision: &str, diagnostics: &[Diagnostic]) {
    for d in diagnostics.iter().take(MAX_QUOTED_ERRORS) {
        tracing::warn!(source, revision, "{d}");
    }
    let rest = diagnostics.get(MAX_QUOTED_ERRORS..).unwrap_or_default();
    if rest.is_empty() {
        return;
    }
    tracing::warn!(
        source,
        revision,
        "and {} more problem(s) (`dockop validate` lists them all; -vv logs them)",
        rest.len()
    );
    for d in rest {
        tracing::debug!(source, revision, "{d}");
    }
}

/// Counts one refused input in `dockop_spec_invalid_total{source}`.
pub fn count_invalid(metrics: &Metrics, source: &str) {
    metrics
        .spec_invalid_total
        .get_or_create(&vec![("source", source.to_owned())])
        .inc();
}

/// The `source` label of a set of paths.
pub fn files_label(paths: &[impl AsRef<Path>]) -> String {
    let parts: Vec<String> = paths
        .iter()
        .map(|p| p.as_ref().display().to_string())
        .collect();
    parts.join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::spec::load::Severity;
    use std::path::PathBuf;

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(short_hash(b"abc"), "ba7816bf8f01");
    }

    #[test]
    fn summary_is_bounded() {
        let d = |i: usize| Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from("a.yaml"),
            line: i,
            column: 1,
            field: "spec.image".into(),
            problem: "bad".into(),
            fix: Some("fix it".into()),
        };
        let all: Vec<Diagnostic> = (1..=7).map(d).collect();
        let s = summarize(&all);
        assert!(s.starts_with("a.yaml:1:1: spec.image: bad\n"), "{s}");
        assert!(!s.contains("fix it"));
        assert!(s.ends_with("(and 2 more)"), "{s}");
    }
}
