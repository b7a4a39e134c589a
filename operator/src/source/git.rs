//! The git source: `--git URL --branch B --path P`. Runs the `git` program against a bare mirror under
//! `<state-dir>/git/` (no work tree): fetch the branch, list the `*.yaml`/`*.yml` blobs under the path at
//! the fetched commit, read them, validate them together. The commit SHA is the revision. A revision with
//! any invalid file is rejected whole; the previous one stays in force.
//!
//! Every git call runs with `GIT_TERMINAL_PROMPT=0` and under a timeout; ssh keys and credential helpers
//! work as they do for git itself (the environment is otherwise left alone).

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use super::{DesiredState, count_invalid, summarize};
use crate::spec::load::{Diagnostic, Loaded, load_paths};

/// Limit for a fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Limit for local calls (rev-parse, ls-tree, cat-file).
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A git call that failed, naming the command.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GitError {
    /// The program could not be started.
    #[error("cannot run `git {command}`: {message} (is git installed and on PATH?)")]
    Spawn {
        /// Arguments.
        command: String,
        /// Detail.
        message: String,
    },
    /// It did not finish in time (killed).
    #[error("`git {command}` timed out after {seconds} s")]
    Timeout {
        /// Arguments.
        command: String,
        /// Limit.
        seconds: u64,
    },
    /// It exited non-zero.
    #[error("`git {command}` failed: {stderr}")]
    Failed {
        /// Arguments.
        command: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Local files (mirror, staging).
    #[error("git source: {0}")]
    Io(String),
}

/// Settings of the git source.
#[derive(Debug, Clone)]
pub struct GitConfig {
    /// Repository URL (anything `git fetch` takes).
    pub url: String,
    /// Branch to follow.
    pub branch: String,
    /// Directory inside the repository (`.` for the root).
    pub path: String,
    /// Where the mirror lives (`<state-dir>/git`).
    pub dir: PathBuf,
    /// Seconds between fetches.
    pub poll: Duration,
}

/// The git follower. [`GitSource::sync`] is one fetch-and-read step; [`GitSource::run`] drives it.
#[derive(Debug)]
pub struct GitSource {
    cfg: GitConfig,
    label: String,
    /// Last commit looked at (applied or rejected).
    seen: Option<String>,
    /// The revision in force.
    applied: Option<DesiredState>,
}

impl GitSource {
    /// A source for `cfg`.
    pub fn new(cfg: GitConfig) -> Self {
        Self {
            label: redact_url(&cfg.url),
            cfg,
            seen: None,
            applied: None,
        }
    }

    /// The `source` metric label (the URL without credentials).
    pub fn label(&self) -> &str {
        &self.label
    }

    fn mirror(&self) -> PathBuf {
        self.cfg.dir.join("mirror.git")
    }

    async fn git(&self, args: &[&str], limit: Duration) -> Result<Vec<u8>, GitError> {
        let command = args.join(" ");
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(self.mirror())
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| GitError::Spawn {
            command: command.clone(),
            message: e.to_string(),
        })?;
        let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Err(_) => {
                return Err(GitError::Timeout {
                    command,
                    seconds: limit.as_secs(),
                });
            }
            Ok(Err(e)) => {
                return Err(GitError::Spawn {
                    command,
                    message: e.to_string(),
                });
            }
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            return Err(GitError::Failed {
                command: redact_url(&command),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// Creates the bare mirror when missing.
    async fn ensure_mirror(&self) -> Result<(), GitError> {
        if self.mirror().join("HEAD").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.cfg.dir).map_err(|e| GitError::Io(e.to_string()))?;
        let mut cmd = Command::new("git");
        cmd.args(["init", "--quiet", "--bare"])
            .arg(self.mirror())
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let status = tokio::time::timeout(LOCAL_TIMEOUT, cmd.output())
            .await
            .map_err(|_| GitError::Timeout {
                command: "init --bare".into(),
                seconds: LOCAL_TIMEOUT.as_secs(),
            })?
            .map_err(|e| GitError::Spawn {
                command: "init --bare".into(),
                message: e.to_string(),
            })?;
        if !status.status.success() {
            return Err(GitError::Failed {
                command: "init --bare".into(),
                stderr: String::from_utf8_lossy(&status.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// Fetches the branch; returns the commit it points to.
    pub async fn fetch(&self) -> Result<String, GitError> {
        self.ensure_mirror().await?;
        let refspec = format!(
            "+refs/heads/{b}:refs/remotes/origin/{b}",
            b = self.cfg.branch
        );
        self.git(
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--no-tags",
                "--",
                &self.cfg.url,
                &refspec,
            ],
            FETCH_TIMEOUT,
        )
        .await?;
        let rev = format!("refs/remotes/origin/{}^{{commit}}", self.cfg.branch);
        let out = self
            .git(&["rev-parse", "--verify", "--quiet", &rev], LOCAL_TIMEOUT)
            .await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Reads and validates the desired-state files of `commit`.
    pub async fn read(&self, commit: &str) -> Result<Loaded, GitError> {
        let path = normalize(&self.cfg.path);
        let mut args = vec!["ls-tree", "-r", "--name-only", "--full-tree", commit];
        if let Some(p) = path.as_deref() {
            args.extend(["--", p]);
        }
        let listing = self.git(&args, LOCAL_TIMEOUT).await?;
        let names: Vec<String> = String::from_utf8_lossy(&listing)
            .lines()
            .filter(|l| l.ends_with(".yaml") || l.ends_with(".yml"))
            .map(str::to_owned)
            .collect();
        // Validate every file of the revision together (names and host ports are checked across files):
        // stage the blobs, load them as files, and report them by their path in the repository.
        let stage = self.cfg.dir.join("tree");
        let _ = std::fs::remove_dir_all(&stage);
        let mut files = Vec::new();
        for name in &names {
            let rel = Path::new(name);
            if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                continue;
            }
            let blob = self
                .git(
                    &["cat-file", "blob", &format!("{commit}:{name}")],
                    LOCAL_TIMEOUT,
                )
                .await?;
            let dest = stage.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| GitError::Io(e.to_string()))?;
            }
            std::fs::write(&dest, blob).map_err(|e| GitError::Io(e.to_string()))?;
            files.push(dest);
        }
        let mut loaded = if files.is_empty() {
            Loaded {
                objects: Vec::new(),
                diagnostics: vec![
                    Diagnostic::file_error(
                        Path::new(path.as_deref().unwrap_or(".")),
                        1,
                        1,
                        format!(
                            "no *.yaml or *.yml files under {:?} at {}",
                            path.as_deref().unwrap_or("."),
                            short(commit)
                        ),
                    )
                    .with_fix("check --path and --branch"),
                ],
            }
        } else {
            load_paths(&files)
        };
        let _ = std::fs::remove_dir_all(&stage);
        let unstage = |p: &mut PathBuf| {
            if let Ok(rel) = p.strip_prefix(&stage) {
                *p = rel.to_path_buf();
            }
        };
        for d in &mut loaded.diagnostics {
            unstage(&mut d.file);
        }
        for o in &mut loaded.objects {
            unstage(&mut o.file);
        }
        Ok(loaded)
    }

    /// One step: fetch, and when the branch moved, read the new commit. `Some` when what is in force
    /// changes (a new valid revision) or a revision is rejected (the previous one, with its objects
    /// reported `SpecInvalid`).
    pub async fn sync(&mut self) -> Result<Option<DesiredState>, GitError> {
        let commit = self.fetch().await?;
        if self.seen.as_deref() == Some(commit.as_str()) {
            return Ok(None);
        }
        let loaded = self.read(&commit).await?;
        self.seen = Some(commit.clone());
        for d in &loaded.diagnostics {
            tracing::warn!(source = %self.label, revision = %short(&commit), "{d}");
        }
        if loaded.is_valid() {
            tracing::info!(source = %self.label, revision = %commit, objects = loaded.objects.len(), "new revision");
            let state = DesiredState {
                revision: commit,
                objects: loaded.objects.into_iter().map(|o| o.object).collect(),
                invalid: Default::default(),
                complete: true,
            };
            self.applied = Some(state.clone());
            return Ok(Some(state));
        }
        count_invalid(&self.label);
        let errors = summarize(loaded.errors());
        tracing::warn!(
            source = %self.label,
            rejected = %commit,
            in_force = %self.applied.as_ref().map_or("none", |a| a.revision.as_str()),
            "revision rejected: {} problem(s); the previous revision stays in force",
            loaded.errors().count()
        );
        let message = format!("revision {} rejected:\n{errors}", short(&commit));
        let mut held = self.applied.clone().unwrap_or_else(|| DesiredState {
            revision: String::new(),
            objects: Vec::new(),
            invalid: Default::default(),
            complete: false,
        });
        held.complete = false;
        held.invalid = held
            .objects
            .iter()
            .map(|o| (o.metadata.name.clone(), message.clone()))
            .collect();
        Ok(Some(held))
    }

    /// Fetches every poll period and on `now` (webhook), sending each new state to `tx`, until `tx` closes.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<DesiredState>,
        mut now: mpsc::UnboundedReceiver<()>,
    ) {
        let mut failures = crate::controller::backoff::Backoff::new(
            Duration::from_secs(1),
            self.cfg.poll.max(Duration::from_secs(1)),
            0.2,
        );
        loop {
            let wait = match self.sync().await {
                Ok(Some(state)) => {
                    failures.reset();
                    if tx.send(state).await.is_err() {
                        return;
                    }
                    self.cfg.poll
                }
                Ok(None) => {
                    failures.reset();
                    self.cfg.poll
                }
                Err(e) => {
                    tracing::warn!(source = %self.label, error = %e, "git fetch failed; the revision in force stays");
                    failures.next().unwrap_or(self.cfg.poll).min(self.cfg.poll)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(crate::controller::backoff::jitter(wait, 0.1)) => {}
                got = now.recv() => {
                    if got.is_none() { return; }
                    while now.try_recv().is_ok() {}
                }
            }
        }
    }
}

/// `P` without `./` and trailing `/`; `None` for the repository root.
fn normalize(path: &str) -> Option<String> {
    let p = path.trim().trim_start_matches("./").trim_end_matches('/');
    (!p.is_empty() && p != ".").then(|| p.to_owned())
}

/// The first 12 characters of a SHA.
fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// `scheme://user:secret@host/...` without the user info.
pub fn redact_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_owned();
    };
    let rest = &s[scheme_end + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{}{}", &s[..scheme_end + 3], &rest[at + 1..]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn obj(name: &str, image: &str) -> String {
        format!(
            "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  image: {image}\n"
        )
    }

    #[test]
    fn url_credentials_are_redacted() {
        assert_eq!(
            redact_url("https://u:tok@example.com/a.git"),
            "https://example.com/a.git"
        );
        assert_eq!(redact_url("git@host:a.git"), "git@host:a.git");
        assert_eq!(normalize("./deploy/"), Some("deploy".into()));
        assert_eq!(normalize("."), None);
    }

    #[tokio::test]
    async fn follows_commits_and_rejects_bad_ones() {
        let tmp = tempfile::tempdir().expect("tmp");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(work.join("deploy")).expect("mkdir");
        sh(tmp.path(), &["init", "-q", "-b", "main", "work"]);
        std::fs::write(
            work.join("deploy/web.yaml"),
            obj("web", "127.0.0.1:5000/web:v1"),
        )
        .expect("write");
        std::fs::write(work.join("README.md"), "not yaml").expect("write");
        sh(&work, &["add", "."]);
        sh(&work, &["commit", "-qm", "one"]);
        let c1 = sh(&work, &["rev-parse", "HEAD"]);
        let mut src = GitSource::new(GitConfig {
            url: work.display().to_string(),
            branch: "main".into(),
            path: "deploy".into(),
            dir: tmp.path().join("state/git"),
            poll: Duration::from_secs(60),
        });
        let s = src.sync().await.expect("sync").expect("first");
        assert_eq!(s.revision, c1);
        assert!(s.is_valid());
        assert_eq!(s.objects[0].spec.image, "127.0.0.1:5000/web:v1");
        assert_eq!(src.sync().await.expect("sync"), None, "unchanged");

        // A bad commit: rejected whole, the previous revision stays, objects reported.
        std::fs::write(
            work.join("deploy/web.yaml"),
            obj("web", "127.0.0.1:5000/web:v2"),
        )
        .expect("write");
        std::fs::write(work.join("deploy/bad.yaml"), obj("Bad_Name", "x")).expect("write");
        sh(&work, &["add", "."]);
        sh(&work, &["commit", "-qm", "bad"]);
        let s = src.sync().await.expect("sync").expect("rejected");
        assert_eq!(s.revision, c1);
        assert!(!s.complete);
        assert_eq!(s.objects[0].spec.image, "127.0.0.1:5000/web:v1");
        let msg = &s.invalid["web"];
        assert!(msg.contains("deploy/bad.yaml:"), "{msg}");
        assert_eq!(src.sync().await.expect("sync"), None, "rejected once");

        // Fixed.
        sh(&work, &["rm", "-q", "deploy/bad.yaml"]);
        sh(&work, &["commit", "-qm", "fix"]);
        let c3 = sh(&work, &["rev-parse", "HEAD"]);
        let s = src.sync().await.expect("sync").expect("new");
        assert_eq!(s.revision, c3);
        assert_eq!(s.objects[0].spec.image, "127.0.0.1:5000/web:v2");
    }

    #[tokio::test]
    async fn unreachable_repository_is_an_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut src = GitSource::new(GitConfig {
            url: tmp.path().join("nope").display().to_string(),
            branch: "main".into(),
            path: ".".into(),
            dir: tmp.path().join("git"),
            poll: Duration::from_secs(60),
        });
        let e = src.sync().await.expect_err("fails");
        assert!(matches!(e, GitError::Failed { .. }), "{e}");
    }
}
