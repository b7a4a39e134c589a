//! The git source: `--git URL --branch B --path P`. Runs the `git` program against a bare mirror under
//! `<state-dir>/git/` (no work tree): fetch the branch, list the `*.yaml`/`*.yml` blobs under the path at
//! the fetched commit, read them, validate them together. The commit SHA is the revision. A revision with
//! any invalid file is rejected whole; the previous one stays in force.
//!
//! Every git call runs with `GIT_TERMINAL_PROMPT=0`, in its own process group and under a timeout (on
//! timeout the whole group is killed, so a `git-remote-https` child holding the URL's token dies too);
//! ssh keys and credential helpers work as they do for git itself (the environment is otherwise left
//! alone). File names are read NUL-separated as bytes (any name git can hold is found), each blob's size is
//! checked before it is read, and every error message has the credentials of any URL in it masked.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use super::{DesiredState, count_invalid, log_diagnostics, summarize};
use crate::spec::load::{Diagnostic, Loaded, MAX_FILE_BYTES, load_paths, too_large};
use crate::telemetry::Metrics;

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

impl GitError {
    /// The same error with the credentials of every URL in its text masked (`https://***@host/...`).
    fn redacted(self) -> Self {
        match self {
            GitError::Spawn { command, message } => GitError::Spawn {
                command: redact_url(&command),
                message: redact_url(&message),
            },
            GitError::Timeout { command, seconds } => GitError::Timeout {
                command: redact_url(&command),
                seconds,
            },
            GitError::Failed { command, stderr } => GitError::Failed {
                command: redact_url(&command),
                stderr: redact_url(&stderr),
            },
            GitError::Io(message) => GitError::Io(redact_url(&message)),
        }
    }
}

/// One `*.yaml`/`*.yml` blob of a tree listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Path in the repository (raw bytes: any name git holds).
    path: PathBuf,
    /// Blob object id.
    oid: String,
    /// Blob size in bytes.
    size: u64,
}

/// Settings of the git source.
#[derive(Debug, Clone)]
pub struct GitConfig {
    /// Repository URL (anything `git fetch` takes).
    pub url: String,
    /// Branch to follow.
    pub branch: String,
    /// Directories inside the repository (`.` for the root), read together as one desired state.
    pub paths: Vec<String>,
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
    /// Limit for a fetch ([`FETCH_TIMEOUT`]; shorter in tests).
    fetch_timeout: Duration,
    /// Where rejected revisions are counted.
    metrics: Arc<Metrics>,
}

impl GitSource {
    /// A source for `cfg`; rejected revisions are counted in `metrics`.
    pub fn new(cfg: GitConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            label: redact_url(&cfg.url),
            cfg,
            seen: None,
            applied: None,
            fetch_timeout: FETCH_TIMEOUT,
            metrics,
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
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir").arg(self.mirror()).args(args);
        run(cmd, &args.join(" "), limit).await
    }

    /// Creates the bare mirror when missing.
    async fn ensure_mirror(&self) -> Result<(), GitError> {
        if tokio::fs::try_exists(self.mirror().join("HEAD"))
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.cfg.dir)
            .await
            .map_err(|e| GitError::Io(e.to_string()).redacted())?;
        let mut cmd = Command::new("git");
        cmd.args(["init", "--quiet", "--bare"]).arg(self.mirror());
        run(cmd, "init --bare", LOCAL_TIMEOUT).await.map(drop)
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
            self.fetch_timeout,
        )
        .await?;
        let rev = format!("refs/remotes/origin/{}^{{commit}}", self.cfg.branch);
        let out = self
            .git(&["rev-parse", "--verify", "--quiet", &rev], LOCAL_TIMEOUT)
            .await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The `*.yaml`/`*.yml` blobs under the path at `commit`, with their sizes (`ls-tree -z -l`: names
    /// as raw bytes, never quoted).
    async fn list(&self, commit: &str, paths: &[String]) -> Result<Vec<Entry>, GitError> {
        let mut args = vec!["ls-tree", "-r", "-z", "-l", "--full-tree", commit];
        if !paths.is_empty() {
            args.push("--");
            args.extend(paths.iter().map(String::as_str));
        }
        let listing = self.git(&args, LOCAL_TIMEOUT).await?;
        Ok(parse_listing(&listing))
    }

    /// Reads and validates the desired-state files of `commit`. A blob over the file size limit is not
    /// read: it is reported with the file source's error, and the revision is rejected.
    pub async fn read(&self, commit: &str) -> Result<Loaded, GitError> {
        let paths = normalize_all(&self.cfg.paths);
        let entries = self.list(commit, &paths).await?;
        let mut oversized = Vec::new();
        let mut blobs = Vec::new();
        for entry in entries {
            if entry.size > MAX_FILE_BYTES {
                oversized.push(too_large(&entry.path, entry.size));
                continue;
            }
            let blob = self
                .git(&["cat-file", "blob", &entry.oid], LOCAL_TIMEOUT)
                .await?;
            // The object id names the content, so its size cannot change; checked again all the same.
            if blob.len() as u64 > MAX_FILE_BYTES {
                oversized.push(too_large(&entry.path, blob.len() as u64));
                continue;
            }
            blobs.push((entry.path, blob));
        }
        if blobs.is_empty() && oversized.is_empty() {
            let shown = if paths.is_empty() {
                ".".to_owned()
            } else {
                paths.join(", ")
            };
            return Ok(Loaded {
                objects: Vec::new(),
                diagnostics: vec![
                    Diagnostic::file_error(
                        Path::new(&shown),
                        1,
                        1,
                        format!(
                            "no *.yaml or *.yml files under {shown:?} at {}",
                            short(commit)
                        ),
                    )
                    .with_fix("check --path and --branch"),
                ],
            });
        }
        // Validate every file of the revision together (names and host ports are checked across files):
        // stage the blobs, load them as files, and report them by their path in the repository. File
        // writes and validation are blocking work.
        let stage = self.cfg.dir.join("tree");
        let mut loaded = tokio::task::spawn_blocking(move || load_staged(&stage, &blobs))
            .await
            .map_err(|e| GitError::Io(format!("staging task: {e}")))??;
        oversized.append(&mut loaded.diagnostics);
        loaded.diagnostics = oversized;
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
        log_diagnostics(&self.label, short(&commit), &loaded.diagnostics);
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
        count_invalid(&self.metrics, &self.label);
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
        let mut failures = crate::backoff::Backoff::new(
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
                _ = tokio::time::sleep(crate::backoff::jitter(wait, 0.1)) => {}
                got = now.recv() => {
                    if got.is_none() { return; }
                    while now.try_recv().is_ok() {}
                }
            }
        }
    }
}

/// Runs one git command: `GIT_TERMINAL_PROMPT=0`, no stdin, in its own process group, under `limit`.
/// On timeout the whole group is killed (git's remote helpers too). `command` names the call in errors;
/// every error is redacted.
async fn run(mut cmd: Command, command: &str, limit: Duration) -> Result<Vec<u8>, GitError> {
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let command = command.to_owned();
    let child = cmd.spawn().map_err(|e| {
        GitError::Spawn {
            command: command.clone(),
            message: e.to_string(),
        }
        .redacted()
    })?;
    let group = child.id();
    let mut output = Box::pin(child.wait_with_output());
    let out = match tokio::time::timeout(limit, &mut output).await {
        Err(_) => {
            // Kill the group while its leader is not yet reaped (so the id cannot have been reused),
            // then drop the wait (kill_on_drop reaps the leader).
            if let Some(pid) = group {
                kill_group(pid);
            }
            drop(output);
            return Err(GitError::Timeout {
                command,
                seconds: limit.as_secs(),
            }
            .redacted());
        }
        Ok(Err(e)) => {
            return Err(GitError::Spawn {
                command,
                message: e.to_string(),
            }
            .redacted());
        }
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(GitError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
        .redacted());
    }
    Ok(out.stdout)
}

/// SIGKILL to the process group `pgid` (already gone: nothing to do).
fn kill_group(pgid: u32) {
    if let Err(e) = crate::child::kill_group(pgid) {
        tracing::warn!(pgid, error = %e, "cannot kill the git process group");
    }
}

/// The `*.yaml`/`*.yml` blobs of `git ls-tree -r -z -l` output (`<mode> <type> <oid> <size>\t<path>\0`
/// per entry), skipping names that are not plain relative paths.
fn parse_listing(listing: &[u8]) -> Vec<Entry> {
    listing
        .split(|b| *b == 0)
        .filter_map(|record| {
            let tab = record.iter().position(|b| *b == b'\t')?;
            let (meta, name) = (record.get(..tab)?, record.get(tab + 1..)?);
            if !(name.ends_with(b".yaml") || name.ends_with(b".yml")) {
                return None;
            }
            let meta = std::str::from_utf8(meta).ok()?;
            let mut fields = meta.split_whitespace();
            let (_mode, kind, oid, size) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            if kind != "blob" {
                return None;
            }
            let path = PathBuf::from(OsStr::from_bytes(name));
            if path
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                return None;
            }
            Some(Entry {
                path,
                oid: oid.to_owned(),
                size: size.parse().ok()?,
            })
        })
        .collect()
}

/// Writes `blobs` under `stage`, loads them together, removes `stage`, and reports every finding and
/// object by its path in the repository. Blocking.
fn load_staged(stage: &Path, blobs: &[(PathBuf, Vec<u8>)]) -> Result<Loaded, GitError> {
    let io = |e: std::io::Error| GitError::Io(e.to_string()).redacted();
    let _ = std::fs::remove_dir_all(stage);
    let mut files = Vec::with_capacity(blobs.len());
    for (rel, blob) in blobs {
        let dest = stage.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&dest, blob).map_err(io)?;
        files.push(dest);
    }
    let mut loaded = load_paths(&files);
    let _ = std::fs::remove_dir_all(stage);
    let unstage = |p: &mut PathBuf| {
        if let Ok(rel) = p.strip_prefix(stage) {
            *p = rel.to_path_buf();
        }
    };
    // Findings that point at another file (a name or a host port used twice) name it in the text too.
    let staged_prefix = format!("{}/", stage.display());
    for d in &mut loaded.diagnostics {
        unstage(&mut d.file);
        d.problem = d.problem.replace(&staged_prefix, "");
    }
    for o in &mut loaded.objects {
        unstage(&mut o.file);
    }
    Ok(loaded)
}

/// Every `--path` normalized; empty when one of them is the repository root (then everything is read).
fn normalize_all(paths: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        match normalize(p) {
            Some(n) => out.push(n),
            None => return Vec::new(),
        }
    }
    out
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

/// `text` with the user info of every `scheme://user:secret@host` in it masked: `scheme://***@host`.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '\'' | '"' | '<' | '>'))
            .unwrap_or(tail.len());
        let (authority, after) = tail.split_at(end);
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = after;
    }
    out.push_str(rest);
    out
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
        crate::testing::object(name).image(image).yaml()
    }

    #[test]
    fn url_credentials_are_redacted() {
        assert_eq!(
            redact_url("https://u:tok@example.com/a.git"),
            "https://***@example.com/a.git"
        );
        assert_eq!(redact_url("git@host:a.git"), "git@host:a.git");
        assert_eq!(
            redact_url(
                "fatal: unable to access 'https://u:t@h:1/x': no; see http://a@b and ftp://c"
            ),
            "fatal: unable to access 'https://***@h:1/x': no; see http://***@b and ftp://c"
        );
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
        let mut src = GitSource::new(
            GitConfig {
                url: work.display().to_string(),
                branch: "main".into(),
                paths: vec!["deploy".into()],
                dir: tmp.path().join("state/git"),
                poll: Duration::from_secs(60),
            },
            Arc::default(),
        );
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

    fn source(url: &Path, dir: &Path, path: &str) -> GitSource {
        sources(url, dir, &[path])
    }

    fn sources(url: &Path, dir: &Path, paths: &[&str]) -> GitSource {
        GitSource::new(
            GitConfig {
                url: url.display().to_string(),
                branch: "main".into(),
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                dir: dir.join("state/git"),
                poll: Duration::from_secs(60),
            },
            Arc::default(),
        )
    }

    /// A work repository at `dir/work` with `files` committed on `main`, cloned bare to `dir/bare.git`.
    fn bare_repo(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let work = dir.join("work");
        sh(dir, &["init", "-q", "-b", "main", "work"]);
        for (name, bytes) in files {
            let f = work.join(name);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(f, bytes).expect("write");
        }
        sh(&work, &["add", "."]);
        sh(&work, &["commit", "-qm", "one"]);
        sh(dir, &["clone", "-q", "--bare", "work", "bare.git"]);
        dir.join("bare.git")
    }

    #[test]
    fn listing_is_read_as_bytes() {
        let listing = b"100644 blob aaaa     120\tdeploy/caf\xc3\xa9.yaml\0\
100644 blob bbbb 3\tdeploy/odd\nname.yml\0\
160000 commit cccc       -\tsub.yaml\0\
100644 blob dddd 9\tREADME.md\0\
100644 blob eeee 9\t../up.yaml\0";
        let got = parse_listing(listing);
        assert_eq!(
            got,
            vec![
                Entry {
                    path: PathBuf::from("deploy/café.yaml"),
                    oid: "aaaa".into(),
                    size: 120
                },
                Entry {
                    path: PathBuf::from("deploy/odd\nname.yml"),
                    oid: "bbbb".into(),
                    size: 3
                },
            ]
        );
    }

    #[tokio::test]
    async fn non_ascii_file_names_are_found() {
        let tmp = tempfile::tempdir().expect("tmp");
        let web = obj("web", "127.0.0.1:5000/web:v1");
        let cafe = obj("cafe", "127.0.0.1:5000/web:v1");
        let bare = bare_repo(
            tmp.path(),
            &[
                ("deploy/web.yaml", web.as_bytes()),
                ("deploy/café.yaml", cafe.as_bytes()),
                ("deploy/sub dir/ünï cödé.yml", obj("deep", "x:1").as_bytes()),
            ],
        );
        let mut src = source(&bare, tmp.path(), "deploy");
        let s = src.sync().await.expect("sync").expect("first");
        assert!(s.is_valid(), "{s:?}");
        let mut names: Vec<&str> = s.objects.iter().map(|o| o.metadata.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["cafe", "deep", "web"]);
    }

    #[tokio::test]
    async fn several_paths_are_one_desired_state_and_a_name_twice_names_both_places() {
        let tmp = tempfile::tempdir().expect("tmp");
        let shared = obj("shared", "127.0.0.1:5000/web:v1");
        let a = obj("a", "127.0.0.1:5000/web:v1");
        let b = obj("b", "127.0.0.1:5000/web:v1");
        let bare = bare_repo(
            tmp.path(),
            &[
                ("common/shared.yaml", shared.as_bytes()),
                ("hosts/a/a.yaml", a.as_bytes()),
                ("hosts/b/b.yaml", b.as_bytes()),
                ("hosts/b/shared.yaml", shared.as_bytes()),
            ],
        );
        let src = sources(&bare, tmp.path(), &["common/", "./hosts/a"]);
        let commit = src.fetch().await.expect("fetch");
        let loaded = src.read(&commit).await.expect("read");
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        let mut names: Vec<&str> = loaded
            .objects
            .iter()
            .map(|o| o.object.metadata.name.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "shared"]);

        let src = sources(&bare, &tmp.path().join("b"), &["common", "hosts/b"]);
        let commit = src.fetch().await.expect("fetch");
        let loaded = src.read(&commit).await.expect("read");
        let errors: Vec<String> = loaded.errors().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "hosts/b/shared.yaml:4:9: metadata.name: name \"shared\" is already used by the object at common/shared.yaml:4:9"
            ),
            "{errors:?}"
        );
    }

    #[tokio::test]
    async fn oversized_blob_is_refused_unread() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut big = obj("big", "127.0.0.1:5000/web:v1").into_bytes();
        big.extend(std::iter::repeat_n(b"# padding\n".as_slice(), 120_000).flatten());
        let small = obj("web", "127.0.0.1:5000/web:v1");
        let bare = bare_repo(
            tmp.path(),
            &[("big.yaml", &big), ("web.yaml", small.as_bytes())],
        );
        let src = source(&bare, tmp.path(), ".");
        let commit = src.fetch().await.expect("fetch");
        let loaded = src.read(&commit).await.expect("read");
        assert!(!loaded.is_valid());
        let errors: Vec<String> = loaded.errors().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!(
                "big.yaml:1:1: file is {} bytes; files over 1048576 bytes (1 MiB) are refused",
                big.len()
            )),
            "{errors:?}"
        );
    }

    /// Processes whose command line holds `needle` (zombies have none).
    fn processes_holding(needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
                && String::from_utf8_lossy(&cmdline).contains(needle)
            {
                found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
        found
    }

    #[tokio::test]
    async fn fetch_timeout_kills_the_remote_helper_and_is_redacted() {
        // A server that accepts and never answers: git-remote-http hangs holding the URL.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let token = format!("tok{}", fastrand::u64(..));
        let tmp = tempfile::tempdir().expect("tmp");
        let mut src = GitSource::new(
            GitConfig {
                url: format!("http://user:{token}@127.0.0.1:{port}/repo.git"),
                branch: "main".into(),
                paths: vec![".".into()],
                dir: tmp.path().join("git"),
                poll: Duration::from_secs(60),
            },
            Arc::default(),
        );
        src.fetch_timeout = Duration::from_secs(2);
        let e = src.sync().await.expect_err("times out");
        assert!(matches!(e, GitError::Timeout { .. }), "{e}");
        let text = e.to_string();
        assert!(!text.contains(&token), "{text}");
        assert!(
            text.contains(&format!("http://***@127.0.0.1:{port}/repo.git")),
            "{text}"
        );
        assert!(!src.label().contains(&token));
        // The whole group is gone (git and its remote helper), not only git.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_holding(&token);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.abort();
    }

    #[tokio::test]
    async fn unreachable_repository_is_an_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut src = GitSource::new(
            GitConfig {
                url: tmp.path().join("nope").display().to_string(),
                branch: "main".into(),
                paths: vec![".".into()],
                dir: tmp.path().join("git"),
                poll: Duration::from_secs(60),
            },
            Arc::default(),
        );
        let e = src.sync().await.expect_err("fails");
        assert!(matches!(e, GitError::Failed { .. }), "{e}");
    }
}
