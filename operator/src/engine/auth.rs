//! Registry credentials as the Docker CLI finds them: `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`), its `auths` entries, `credHelpers` per registry and the default `credsStore`.
//! Without `$HOME` (a systemd system service has none), `~` is the current user's home directory in
//! `/etc/passwd` (`$DOCKOP_PASSWD_FILE` replaces that file, for tests).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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
    /// A credential helper gave no answer in time; it was killed (with its process group).
    #[error(
        "credential helper docker-credential-{helper} gave no answer for {server} within {} s; it was killed (fix: check the helper, e.g. a locked keyring or a prompt waiting for input)",
        HELPER_LIMIT.as_secs()
    )]
    HelperTimeout {
        /// Helper name.
        helper: String,
        /// Registry.
        server: String,
    },
}

/// Time a credential helper may take before it is killed.
pub const HELPER_LIMIT: Duration = Duration::from_secs(10);

/// Largest helper answer read (a helper's JSON is a few hundred bytes).
const HELPER_MAX_BYTES: u64 = 64 * 1024;

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
/// anonymous access. The config file is read on a blocking thread ([`crate::valuefile`]: a regular file,
/// at most 1 MiB, 5 s); a credential helper runs as a child process in its own group, killed whole after
/// [`HELPER_LIMIT`]. Nothing blocks the runtime.
pub async fn credentials_for_host(host: &str) -> Result<Option<Credentials>, AuthError> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match crate::valuefile::read_async(path.clone()).await {
        Ok(t) => t,
        Err(crate::valuefile::ValueFileError::Io(e))
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
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
        return run_helper(helper, &keys[0]).await.map(Some);
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
        return match run_helper(store, &keys[0]).await {
            Ok(c) => Ok(Some(c)),
            // A store without an entry for this registry means anonymous access (a hung one is an error).
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

/// Runs `docker-credential-HELPER get` with `server` on stdin, in its own process group, under
/// [`HELPER_LIMIT`]; on timeout the whole group is killed.
async fn run_helper(helper: &str, server: &str) -> Result<Credentials, AuthError> {
    run_helper_in(helper, server, None, HELPER_LIMIT).await
}

/// [`run_helper`] with the helper looked up on `path` (instead of `$PATH`) and a time limit (tests).
async fn run_helper_in(
    helper: &str,
    server: &str,
    path: Option<&std::ffi::OsStr>,
    limit: Duration,
) -> Result<Credentials, AuthError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let err = |message: String| AuthError::Helper {
        helper: helper.to_owned(),
        server: server.to_owned(),
        message,
    };
    let mut cmd = tokio::process::Command::new(format!("docker-credential-{helper}"));
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let mut child = cmd
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    let group = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let talk = async {
        if let Some(mut stdin) = stdin {
            // A helper that exits without reading its stdin is not an error here; its answer says.
            let _ = stdin.write_all(server.as_bytes()).await;
        }
        let mut out = Vec::new();
        if let Some(stdout) = stdout {
            stdout
                .take(HELPER_MAX_BYTES)
                .read_to_end(&mut out)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        let status = child.wait().await.map_err(|e| err(e.to_string()))?;
        Ok::<_, AuthError>((status, out))
    };
    let (status, out) = match tokio::time::timeout(limit, talk).await {
        Ok(answer) => answer?,
        Err(_) => {
            // Kill the group while its leader is not yet reaped (its id cannot have been reused); the
            // dropped child is killed and reaped by kill_on_drop.
            if let Some(pid) = group
                && let Err(e) = crate::child::kill_group(pid)
            {
                tracing::warn!(helper, error = %e, "cannot kill the credential helper's process group");
            }
            return Err(AuthError::HelperTimeout {
                helper: helper.to_owned(),
                server: server.to_owned(),
            });
        }
    };
    if !status.success() {
        return Err(err(String::from_utf8_lossy(&out).trim().to_owned()));
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out).map_err(|e| err(format!("bad answer: {e}")))?;
    Ok(Credentials {
        username: answer.username,
        secret: SecretString::from(answer.secret),
        server: server.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
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

    /// `$PATH` with `dir` first: where the fake helpers are found.
    fn on_path(dir: &std::path::Path) -> std::ffi::OsString {
        let mut path = dir.as_os_str().to_owned();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        path
    }

    fn fake_helper(dir: &std::path::Path, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&file, format!("#!/bin/sh\n{script}\n")).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[tokio::test]
    async fn hung_helper_is_killed_with_its_group_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("grandchild.pid");
        // The helper starts a grandchild that also hangs (as a keyring prompt would), then hangs itself.
        fake_helper(
            dir.path(),
            "hang",
            &format!("sleep 300 & echo $! > {}\nsleep 300", pidfile.display()),
        );
        let path = &on_path(dir.path());
        let started = std::time::Instant::now();
        let got = run_helper_in(
            "hang",
            "reg.example:5000",
            Some(path.as_os_str()),
            Duration::from_millis(500),
        )
        .await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "returned after {took:?}");
        let e = got.expect_err("timed out");
        assert!(
            matches!(&e, AuthError::HelperTimeout { helper, server } if helper == "hang" && server == "reg.example:5000"),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("docker-credential-hang")
                && msg.contains("reg.example:5000")
                && msg.contains("10 s"),
            "{msg}"
        );
        // The grandchild went with the group.
        let pid = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .to_owned();
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init.
            if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "grandchild {pid} still runs");
    }

    #[tokio::test]
    async fn helper_answers_and_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_helper(
            dir.path(),
            "ok",
            r#"read server; echo "{\"Username\":\"u\",\"Secret\":\"s-$server\"}""#,
        );
        fake_helper(dir.path(), "no", "echo credentials not found; exit 1");
        let path = on_path(dir.path());
        let path = Some(path.as_os_str());
        let c = run_helper_in("ok", "r:1", path, HELPER_LIMIT)
            .await
            .expect("answer");
        use secrecy::ExposeSecret;
        assert_eq!(
            (c.username.as_str(), c.secret.expose_secret()),
            ("u", "s-r:1")
        );
        let e = run_helper_in("no", "r:1", path, HELPER_LIMIT)
            .await
            .expect_err("fails");
        assert!(matches!(e, AuthError::Helper { .. }), "{e:?}");
        assert!(e.to_string().contains("credentials not found"), "{e}");
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
