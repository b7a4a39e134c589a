//! Where the engine is, read like the Docker CLI reads it: `--docker-host` / `DOCKER_HOST` (`unix://`,
//! `tcp://`), TLS from `--tlsverify --tlscacert --tlscert --tlskey` or `DOCKER_TLS_VERIFY` /
//! `DOCKER_CERT_PATH`; plain `tcp://` to another machine is refused unless `--insecure-engine`.
//!
//! `ssh://` is left out: bollard's `ssh` feature pulls in the `openssh` crate (driving the `ssh` program
//! through a control socket), which is not in this workspace's lock file or local crate cache and was not
//! tried; use an SSH tunnel to the remote socket (`ssh -L`) or TLS meanwhile.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Client certificate files for a TLS engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA that signed the engine's certificate.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir` (the Docker CLI's `DOCKER_CERT_PATH` layout).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// The TLS settings as given on the command line or in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// `--tlsverify` / `DOCKER_TLS_VERIFY`.
    pub verify: bool,
    /// `DOCKER_CERT_PATH`, else `~/.docker`.
    pub cert_dir: Option<PathBuf>,
    /// `--tlscacert`.
    pub ca: Option<PathBuf>,
    /// `--tlscert`.
    pub cert: Option<PathBuf>,
    /// `--tlskey`.
    pub key: Option<PathBuf>,
}

impl TlsFlags {
    /// The files to use, `None` without TLS (no `--tlsverify` and no file flag).
    fn files(&self) -> Option<TlsFiles> {
        if !self.verify && self.ca.is_none() && self.cert.is_none() && self.key.is_none() {
            return None;
        }
        let dir = self.cert_dir.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".docker"))
                .unwrap_or_else(|| PathBuf::from(".docker"))
        });
        let base = TlsFiles::in_dir(&dir);
        Some(TlsFiles {
            ca: self.ca.clone().unwrap_or(base.ca),
            cert: self.cert.clone().unwrap_or(base.cert),
            key: self.key.clone().unwrap_or(base.key),
        })
    }
}

/// Where and how to reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The local default (`unix:///var/run/docker.sock`).
    LocalDefault,
    /// A unix socket (`unix:///path`).
    Unix(String),
    /// Plain HTTP over TCP (`tcp://host:port`): loopback, or another machine with `--insecure-engine`.
    Plain {
        /// `tcp://host:port` as given.
        address: String,
        /// The host part.
        host: String,
    },
    /// TLS over TCP with client certificates.
    Tls {
        /// `tcp://host:port` as given.
        address: String,
        /// The host part.
        host: String,
        /// Certificates.
        files: TlsFiles,
    },
}

/// Why an engine address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not `unix://` or `tcp://`.
    #[error(
        "unsupported Docker host {0:?}: use unix:///path or tcp://HOST:PORT (ssh:// is not supported: tunnel the socket with `ssh -L` or use TLS)"
    )]
    Unsupported(String),
    /// `tcp://` without a host.
    #[error("Docker host {0:?} has no host part: use tcp://HOST:PORT")]
    NoHost(String),
    /// Plain TCP to another machine: anyone on the path can run containers as root there.
    #[error(
        "refusing plain (unencrypted, unauthenticated) tcp:// to the remote engine {0:?}\n  fix: protect the engine with TLS and pass --tlsverify (with DOCKER_CERT_PATH or --tlscacert/--tlscert/--tlskey), or pass --insecure-engine if the network is trusted"
    )]
    InsecureRemote(String),
}

impl Endpoint {
    /// Reads `host` (`None`: the local default) with the TLS flags; `insecure` allows plain TCP to
    /// another machine.
    pub fn parse(
        host: Option<&str>,
        tls: &TlsFlags,
        insecure: bool,
    ) -> Result<Self, EndpointError> {
        let Some(h) = host.map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(Endpoint::LocalDefault);
        };
        if h.starts_with("unix://") {
            return Ok(Endpoint::Unix(h.to_owned()));
        }
        let rest = h
            .strip_prefix("tcp://")
            .or_else(|| h.strip_prefix("https://"))
            .or_else(|| h.strip_prefix("http://"))
            .ok_or_else(|| EndpointError::Unsupported(h.to_owned()))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let hostpart = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(a, _)| a),
        };
        if hostpart.is_empty() {
            return Err(EndpointError::NoHost(h.to_owned()));
        }
        let address = format!("tcp://{authority}");
        let host = hostpart.to_owned();
        match tls.files() {
            Some(files) => Ok(Endpoint::Tls {
                address,
                host,
                files,
            }),
            None if is_loopback(&host) || insecure => Ok(Endpoint::Plain { address, host }),
            None => Err(EndpointError::InsecureRemote(h.to_owned())),
        }
    }

    /// The engine's host when it runs on another machine (health probes then go to the published ports
    /// there); `None` for a local socket or loopback.
    pub fn remote_host(&self) -> Option<&str> {
        match self {
            Endpoint::LocalDefault | Endpoint::Unix(_) => None,
            Endpoint::Plain { host, .. } | Endpoint::Tls { host, .. } => {
                (!is_loopback(host)).then_some(host.as_str())
            }
        }
    }
}

/// `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> TlsFlags {
        TlsFlags {
            verify: true,
            cert_dir: Some(PathBuf::from("/certs")),
            ..Default::default()
        }
    }

    #[test]
    fn addresses_like_the_docker_cli() {
        let none = TlsFlags::default();
        assert_eq!(
            Endpoint::parse(None, &none, false),
            Ok(Endpoint::LocalDefault)
        );
        assert_eq!(
            Endpoint::parse(Some("unix:///run/d.sock"), &none, false),
            Ok(Endpoint::Unix("unix:///run/d.sock".into()))
        );
        let local = Endpoint::parse(Some("tcp://127.0.0.1:2375"), &none, false).expect("loopback");
        assert_eq!(local.remote_host(), None);
        let e = Endpoint::parse(Some("tcp://10.0.0.5:2376"), &tls(), false).expect("tls");
        assert_eq!(
            e,
            Endpoint::Tls {
                address: "tcp://10.0.0.5:2376".into(),
                host: "10.0.0.5".into(),
                files: TlsFiles::in_dir(Path::new("/certs")),
            }
        );
        assert_eq!(e.remote_host(), Some("10.0.0.5"));
        let mut own = tls();
        own.ca = Some(PathBuf::from("/x/ca.pem"));
        let Ok(Endpoint::Tls { files, .. }) = Endpoint::parse(Some("tcp://h:2376"), &own, false)
        else {
            panic!("tls");
        };
        assert_eq!(files.ca, PathBuf::from("/x/ca.pem"));
        assert_eq!(files.key, PathBuf::from("/certs/key.pem"));
        assert!(matches!(
            Endpoint::parse(Some("ssh://u@h"), &none, false),
            Err(EndpointError::Unsupported(_))
        ));
    }

    #[test]
    fn plain_tcp_to_another_machine_needs_insecure_engine() {
        let none = TlsFlags::default();
        let err = Endpoint::parse(Some("tcp://10.0.0.5:2375"), &none, false).expect_err("refused");
        assert!(err.to_string().contains("--insecure-engine"), "{err}");
        assert!(err.to_string().contains("--tlsverify"), "{err}");
        let ok = Endpoint::parse(Some("tcp://10.0.0.5:2375"), &none, true).expect("allowed");
        assert_eq!(ok.remote_host(), Some("10.0.0.5"));
        assert!(Endpoint::parse(Some("tcp://[::1]:2375"), &none, false).is_ok());
        assert!(Endpoint::parse(Some("tcp://localhost:2375"), &none, false).is_ok());
    }
}
