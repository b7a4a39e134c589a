//! Registry credentials as the Docker CLI finds them: `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`), its `auths` entries, `credHelpers` per registry and the default `credsStore`.
//! Without `$HOME` (a systemd system service has none), `~` is the current user's home directory in
//! `/etc/passwd` (`$DOCKOP_PASSWD_FILE` replaces that file, for tests).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use secrecy::SecretString;
use serde::Deserialize;

use super::Credentials;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The config file exists but is not valid JSON.
    #[error("cannot read Docker config {path}: {message}")]
    Config {
        /// File.
        path: PathBuf,
        /// Detail.
        message: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} failed for {server}: {message}")]
    Helper {
        /// Helper name.
        helper: String,
        /// Registry.
        server: String,
        /// Detail (never the secret).
        message: String,
    },
}

fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(passwd_home)?;
    Some(home.join(".docker").join("config.json"))
}

/// The home directory of the current user from the passwd file, without `unsafe` (no getpwuid): the
/// real uid from `/proc/self/status`, then its line in `/etc/passwd` (or `$DOCKOP_PASSWD_FILE`).
fn passwd_home() -> Option<PathBuf> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = uid_from_status(&status)?;
    let file = std::env::var_os("DOCKOP_PASSWD_FILE")
        .filter(|f| !f.is_empty())
        .map_or_else(|| PathBuf::from("/etc/passwd"), PathBuf::from);
    home_from_passwd(&std::fs::read_to_string(file).ok()?, uid)
}

/// The real uid on the `Uid:` line of `/proc/self/status` (real, effective, saved, filesystem).
fn uid_from_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The home field of the first passwd entry (`name:pw:uid:gid:gecos:home:shell`) with this uid.
fn home_from_passwd(passwd: &str, uid: u32) -> Option<PathBuf> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [_, _, u, _, _, home, ..] if u.parse() == Ok(uid) && !home.is_empty() => {
                Some(PathBuf::from(home))
            }
            _ => None,
        }
    })
}

/// Credentials for the registry `host` (`HOST[:PORT]`, `docker.io` for Docker Hub), or `None` for
/// anonymous access.
pub fn credentials_for_host(host: &str) -> Result<Option<Credentials>, AuthError> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AuthError::Config {
                path,
                message: e.to_string(),
            });
        }
    };
    let config: ConfigFile = serde_json::from_str(&text).map_err(|e| AuthError::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let keys: Vec<String> = if host == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            host.to_owned(),
            format!("https://{host}"),
            format!("http://{host}"),
            format!("https://{host}/v1/"),
        ]
    };
    if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
        return run_helper(helper, &keys[0]).map(Some);
    }
    for k in &keys {
        if let Some(c) = config
            .auths
            .get(k)
            .and_then(|entry| decode_entry(entry, host))
        {
            return Ok(Some(c));
        }
    }
    if let Some(store) = &config.creds_store {
        return match run_helper(store, &keys[0]) {
            Ok(c) => Ok(Some(c)),
            // A store without an entry for this registry means anonymous access.
            Err(AuthError::Helper { .. }) => Ok(None),
            Err(e) => Err(e),
        };
    }
    Ok(None)
}

fn decode_entry(entry: &AuthEntry, host: &str) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Some(Credentials {
            username: u.clone(),
            secret: SecretString::from(p.clone()),
            server: host.to_owned(),
        });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_deref()?.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials {
        username: u.to_owned(),
        secret: SecretString::from(p.to_owned()),
        server: host.to_owned(),
    })
}

fn run_helper(helper: &str, server: &str) -> Result<Credentials, AuthError> {
    let err = |message: String| AuthError::Helper {
        helper: helper.to_owned(),
        server: server.to_owned(),
        message,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stdout).trim().to_owned()));
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out.stdout).map_err(|e| err(format!("bad answer: {e}")))?;
    Ok(Credentials {
        username: answer.username,
        secret: SecretString::from(answer.secret),
        server: server.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_from_proc_status_and_passwd() {
        let status =
            "Name:\tdockop\nUmask:\t0022\nUid:\t1001\t1001\t1001\t1001\nGid:\t0\t0\t0\t0\n";
        assert_eq!(uid_from_status(status), Some(1001));
        assert_eq!(uid_from_status("Name: x\n"), None);
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken\nbob:x:1001:1001::/home/bob:/bin/sh\n";
        assert_eq!(home_from_passwd(passwd, 0), Some(PathBuf::from("/root")));
        assert_eq!(
            home_from_passwd(passwd, 1001),
            Some(PathBuf::from("/home/bob"))
        );
        assert_eq!(home_from_passwd(passwd, 7), None);
    }

    #[test]
    fn decodes_basic_auth_entry() {
        let e = AuthEntry {
            auth: Some("dXNlcjpwYTpzcw==".into()),
            ..Default::default()
        };
        let c = decode_entry(&e, "r:5001").expect("decodes");
        assert_eq!(c.username, "user");
        use secrecy::ExposeSecret;
        assert_eq!(c.secret.expose_secret(), "pa:ss");
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}
