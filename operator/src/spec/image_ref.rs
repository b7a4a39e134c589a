//! Image references in Docker's grammar, `[HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST]`: the one parser
//! of them (validation, the desired container and the registry host for credentials all use it).
//!
//! Docker's rules: the first path component is a registry host only when there is a `/` after it and it
//! contains `.` or `:`, is `localhost`, or has an upper-case letter; otherwise the image is on Docker Hub
//! (`docker.io`), where a one-component path such as `nginx` means `library/nginx`.

use std::fmt;

/// Docker Hub's registry host, as Docker keys credentials for it.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference, its parts as written (nothing normalized, so [`fmt::Display`] gives back the
/// text it was parsed from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry `HOST[:PORT]` (`127.0.0.1:5000`, `[::1]:5000`, `ghcr.io`); `None` for Docker Hub.
    pub registry: Option<String>,
    /// Path below the registry (`web`, `library/nginx`, `owner/repo/sub`).
    pub repository: String,
    /// Tag after the last `:` of the path (`v1`), if any.
    pub tag: Option<String>,
    /// `sha256:<64 hex>` after `@`, if any.
    pub digest: Option<String>,
}

/// Why a text is not an image reference; the messages end up in validation findings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// Spaces, tabs or newlines anywhere.
    #[error("it contains whitespace")]
    Whitespace,
    /// The part after `@` is not a sha256 digest.
    #[error("the part after @ must be sha256: followed by 64 lowercase hex digits")]
    Digest,
    /// The tag breaks Docker's tag grammar.
    #[error(
        "the tag \"{0}\" must be 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
    )]
    Tag(String),
    /// Nothing before the tag or digest.
    #[error("the repository name is empty")]
    EmptyName,
    /// Docker limits the name (registry and path) to 255 characters.
    #[error("the repository name is longer than 255 characters")]
    NameTooLong,
    /// The first component looks like a host but is not a valid `HOST[:PORT]`.
    #[error("the registry \"{0}\" is not a valid HOST[:PORT]")]
    Registry(String),
    /// Two slashes in a row (or a leading or trailing slash).
    #[error("it has an empty path component (//)")]
    EmptyComponent,
    /// An upper-case letter in the path.
    #[error("repository names must be lowercase")]
    Uppercase,
    /// A path component with separators Docker does not allow.
    #[error(
        "the path component \"{0}\" must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    Component(String),
}

impl ImageRef {
    /// Parses `text` by Docker's reference grammar.
    pub fn parse(text: &str) -> Result<Self, ImageRefError> {
        if text.chars().any(char::is_whitespace) {
            return Err(ImageRefError::Whitespace);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (text, None),
        };
        if let Some(d) = digest
            && !is_sha256_digest(d)
        {
            return Err(ImageRefError::Digest);
        }
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest.get(last_slash..).and_then(|tail| tail.rfind(':')) {
            Some(colon) => {
                let split = last_slash + colon;
                (rest.get(..split).unwrap_or(rest), rest.get(split + 1..))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(ImageRefError::Tag(tag.to_owned()));
        }
        if name.is_empty() {
            return Err(ImageRefError::EmptyName);
        }
        if name.len() > 255 {
            return Err(ImageRefError::NameTooLong);
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                check_registry_host(first)?;
                (Some(first), path)
            }
            _ => (None, name),
        };
        for c in path.split('/') {
            if c.is_empty() {
                return Err(ImageRefError::EmptyComponent);
            }
            if c.chars().any(|ch| ch.is_ascii_uppercase()) {
                return Err(ImageRefError::Uppercase);
            }
            if !is_path_component(c) {
                return Err(ImageRefError::Component(c.to_owned()));
            }
        }
        Ok(Self {
            registry: registry.map(str::to_owned),
            repository: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// The registry host as Docker keys credentials: the one written, else [`DOCKER_HUB`].
    pub fn registry_host(&self) -> &str {
        self.registry.as_deref().unwrap_or(DOCKER_HUB)
    }

    /// `[HOST[:PORT]/]PATH` as written, without tag or digest (`127.0.0.1:5000/web`): what a digest is
    /// appended to.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The name with its tag, without any digest (`127.0.0.1:5000/web:v1`): what the registry is asked
    /// about.
    pub fn tag_reference(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name()),
            None => self.name(),
        }
    }

    /// `name@digest`: the reference pinned to `digest`, whatever tag or digest was written.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag_reference())?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// 1-128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`.
fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Lowercase letters and digits, separated by `.`, `_`, `__` or runs of `-`.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i).is_some_and(alnum) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !bytes.get(i).is_some_and(alnum) {
            i += 1;
        }
        let sep = c.get(start..i).unwrap_or_default();
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `HOST[:PORT]` with a DNS-style host or a bracketed IPv6 address, and a port of 1-65535.
fn check_registry_host(host: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::Registry(host.to_owned());
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (None, port)
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(p) = port
        && !(p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0))
    {
        return Err(bad());
    }
    if let Some(h) = h {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !h.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(
        text: &str,
    ) -> (
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        String,
    ) {
        let r = ImageRef::parse(text).expect(text);
        assert_eq!(r.to_string(), text, "Display gives back the text");
        let host = r.registry_host().to_owned();
        (r.registry, r.repository, r.tag, r.digest, host)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn docker_hub_is_the_default_registry() {
        assert_eq!(
            parts("nginx"),
            (None, "nginx".into(), None, None, "docker.io".into())
        );
        assert_eq!(
            parts("nginx:1.27"),
            (None, "nginx".into(), s("1.27"), None, "docker.io".into())
        );
        // A first component without '.', ':' or "localhost" is a Hub namespace, not a host.
        assert_eq!(
            parts("library/nginx:latest"),
            (
                None,
                "library/nginx".into(),
                s("latest"),
                None,
                "docker.io".into()
            )
        );
        assert_eq!(
            ImageRef::parse("owner/repo").unwrap().registry_host(),
            DOCKER_HUB
        );
    }

    #[test]
    fn hosts_with_ports_localhost_and_ipv6() {
        assert_eq!(
            parts("localhost:5000/x"),
            (
                s("localhost:5000"),
                "x".into(),
                None,
                None,
                "localhost:5000".into()
            )
        );
        assert_eq!(
            parts("localhost/web"),
            (s("localhost"), "web".into(), None, None, "localhost".into())
        );
        assert_eq!(
            parts("[::1]:5000/x:v1"),
            (
                s("[::1]:5000"),
                "x".into(),
                s("v1"),
                None,
                "[::1]:5000".into()
            )
        );
        assert_eq!(
            parts("127.0.0.1:5000/opencode:1.18.34"),
            (
                s("127.0.0.1:5000"),
                "opencode".into(),
                s("1.18.34"),
                None,
                "127.0.0.1:5000".into()
            )
        );
        assert_eq!(
            parts("ghcr.io/owner/repo_name/sub-part:v1.2_3").0,
            s("ghcr.io")
        );
        // The port's colon is not a tag.
        let r = ImageRef::parse("registry.example.com:443/a/b/c").unwrap();
        assert_eq!(
            (r.registry_host(), r.tag.as_deref()),
            ("registry.example.com:443", None)
        );
    }

    #[test]
    fn digests_and_tags() {
        let with_digest = format!("127.0.0.1:5000/web@{DIGEST}");
        assert_eq!(
            parts(&with_digest),
            (
                s("127.0.0.1:5000"),
                "web".into(),
                None,
                s(DIGEST),
                "127.0.0.1:5000".into()
            )
        );
        let both = format!("127.0.0.1:5000/web:v1@{DIGEST}");
        let r = ImageRef::parse(&both).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.name(), "127.0.0.1:5000/web");
        assert_eq!(r.tag_reference(), "127.0.0.1:5000/web:v1");
        assert_eq!(r.pinned("sha256:ff"), "127.0.0.1:5000/web@sha256:ff");
        assert_eq!(r.to_string(), both);
        assert_eq!(ImageRef::parse("nginx").unwrap().tag_reference(), "nginx");
    }

    #[test]
    fn bad_references_name_the_problem() {
        for (bad, want) in [
            ("Nginx", ImageRefError::Uppercase),
            ("web:", ImageRefError::Tag(String::new())),
            ("web:-x", ImageRefError::Tag("-x".into())),
            ("web@sha256:abc", ImageRefError::Digest),
            ("a//b", ImageRefError::EmptyComponent),
            ("a/_b", ImageRefError::Component("_b".into())),
            ("a/b..c", ImageRefError::Component("b..c".into())),
            (
                "exa_mple.com/web",
                ImageRefError::Registry("exa_mple.com".into()),
            ),
            (
                "127.0.0.1:99999/web",
                ImageRefError::Registry("127.0.0.1:99999".into()),
            ),
            ("[::1/web", ImageRefError::Registry("[::1".into())),
            ("we b", ImageRefError::Whitespace),
            (":tag", ImageRefError::EmptyName),
        ] {
            assert_eq!(ImageRef::parse(bad), Err(want), "{bad}");
        }
        let long = "a".repeat(256);
        assert_eq!(ImageRef::parse(&long), Err(ImageRefError::NameTooLong));
    }
}
