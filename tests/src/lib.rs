//! Shared harness for dockop's end-to-end tests: the real `dockop` binary against the real Docker
//! engine, the test-bed registries and the test-bed images (all set up by `tests/testbed/up`).
//!
//! Every test starts with [`TestEnv::new`], which gives it a unique id (`e2e-<test>-<random>`),
//! free host ports, a temp dir for spec files and a per-test dockop `--state-dir`. Tests put
//! `metadata.labels: {dockop-e2e: <id>}` in their specs (see [`TestEnv::labels_yaml`]); dockop copies
//! metadata labels onto its containers and named volumes, and the [`TestEnv`] drop guard removes every
//! container and volume with that label, even when the test panics. Tests that need a tag of their own
//! push to `127.0.0.1:5000/<id>:<tag>` with [`TestEnv::push_as`], so parallel tests never share a tag.
//!
//! This is test-support code: failures of the harness itself panic with a message saying what failed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

/// Anonymous test registry.
pub const REGISTRY: &str = "127.0.0.1:5000";
/// Test registry with htpasswd auth ([`AUTH_USER`] / [`AUTH_PASSWORD`]).
pub const AUTH_REGISTRY: &str = "127.0.0.1:5001";
/// User of [`AUTH_REGISTRY`].
pub const AUTH_USER: &str = "dockop";
/// Password of [`AUTH_USER`] (a fixed test credential, not a secret).
pub const AUTH_PASSWORD: &str = "dockop-test-password";
/// Label every test resource carries; its value is the [`TestEnv::id`].
pub const LABEL: &str = "dockop-e2e";

/// Images built and pushed by `tests/testbed/up`.
pub mod images {
    /// busybox httpd on 8080: `/global/health` -> 200 `{"healthy":true,"version":"1"}`.
    pub const WEB_V1: &str = "127.0.0.1:5000/web:v1";
    /// As [`WEB_V1`] with version "2" (a different digest).
    pub const WEB_V2: &str = "127.0.0.1:5000/web:v2";
    /// As [`WEB_V1`] with version "3".
    pub const WEB_V3: &str = "127.0.0.1:5000/web:v3";
    /// Answers every request on 8080 with HTTP 500.
    pub const WEB_UNHEALTHY: &str = "127.0.0.1:5000/web:unhealthy";
    /// Exits at once with code 3.
    pub const WEB_CRASH: &str = "127.0.0.1:5000/web:crash";
    /// Sleeps 5 s, then serves like [`WEB_V1`] (version "slow").
    pub const WEB_SLOW: &str = "127.0.0.1:5000/web:slow";
    /// Accepts TCP connections on 8080 and never answers.
    pub const WEB_TARPIT: &str = "127.0.0.1:5000/web:tarpit";
    /// [`WEB_V1`] on the auth registry.
    pub const AUTH_WEB_V1: &str = "127.0.0.1:5001/web:v1";
    /// [`WEB_V2`] on the auth registry.
    pub const AUTH_WEB_V2: &str = "127.0.0.1:5001/web:v2";
    /// Container port of the web images.
    pub const WEB_PORT: u16 = 8080;
    /// Real OpenCode 1.18.33 (`opencode serve` on 4096).
    pub const OPENCODE_1_18_33: &str = "127.0.0.1:5000/opencode:1.18.33";
    /// Real OpenCode 1.18.34.
    pub const OPENCODE_1_18_34: &str = "127.0.0.1:5000/opencode:1.18.34";
    /// OpenCode 1.18.34 with a server password set: `/global/health` answers 401.
    pub const OPENCODE_BAD: &str = "127.0.0.1:5000/opencode:bad";
    /// Container port of the OpenCode images.
    pub const OPENCODE_PORT: u16 = 4096;
    /// Health path of every test image.
    pub const HEALTH_PATH: &str = "/global/health";
    /// Debian's caddy binary on the local Debian base image (`HOME=/tmp`).
    pub const CADDY: &str = "127.0.0.1:5000/caddy:test";
    /// Local Debian bookworm minbase image (not in a registry).
    pub const DEBIAN_BASE: &str = "dockop-testbed/debian:bookworm";
}

/// The workspace root (parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ crate has a parent dir")
        .to_path_buf()
}

/// The dockop binary under test: `$DOCKOP_BIN`, else `<workspace>/target/debug/dockop`.
pub fn dockop_bin() -> PathBuf {
    let bin = std::env::var_os("DOCKOP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/dockop"));
    if !bin.is_file() {
        panic!(
            "dockop binary not found at {}; build it first: cargo build -p dockop (or set DOCKOP_BIN)",
            bin.display()
        );
    }
    bin
}

// ------------------------------------------------------------------------------------------------
// dockop runner

/// The result of one dockop invocation.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Exit code; `None` when killed by a signal (or by the timeout).
    pub code: Option<i32>,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// The process ran past its timeout and was killed.
    pub timed_out: bool,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics (with the captured output) unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        if self.code != Some(code) {
            panic!("expected dockop exit code {code}, got {self}");
        }
        self
    }

    /// Panics (with the captured output) unless the exit code is 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "code {:?}{} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs the dockop binary with a fixed `--state-dir` (one per test).
#[derive(Debug, Clone)]
pub struct Dockop {
    bin: PathBuf,
    state_dir: PathBuf,
    timeout: Duration,
    envs: Vec<(String, String)>,
}

impl Dockop {
    /// A runner for [`dockop_bin`] with the given state dir and a 120 s timeout per run.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin: dockop_bin(),
            state_dir: state_dir.into(),
            timeout: Duration::from_secs(120),
            envs: Vec::new(),
        }
    }

    /// Sets the per-run timeout (the process is killed past it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds an environment variable for every run.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The `--state-dir` passed to every run.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A `Command` for `dockop --state-dir DIR ARGS...` (for custom stdin, spawning, ...).
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .env("NO_COLOR", "1");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `dockop --state-dir DIR ARGS...` to completion (or the timeout) and captures its output.
    pub fn run<I, S>(&self, args: I) -> RunOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_with_stdin(args, "")
    }

    /// As [`Dockop::run`], feeding `stdin` to the process.
    pub fn run_with_stdin<I, S>(&self, args: I, stdin: &str) -> RunOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_captured(cmd, stdin, self.timeout)
    }

    /// Starts a long-running dockop (e.g. `run -f DIR`); it is stopped when the handle drops.
    pub fn spawn<I, S>(&self, args: I, log_dir: &Path) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let stdout_path = log_dir.join("dockop.stdout");
        let stderr_path = log_dir.join("dockop.stderr");
        let stdout = std::fs::File::create(&stdout_path).expect("create dockop stdout log");
        let stderr = std::fs::File::create(&stderr_path).expect("create dockop stderr log");
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn dockop");
        Running {
            child: Some(child),
            stdout_path,
            stderr_path,
        }
    }
}

fn run_captured(mut cmd: Command, stdin: &str, timeout: Duration) -> RunOutput {
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = read_in_thread(child.stdout.take().expect("piped stdout"));
    let err = read_in_thread(child.stderr.take().expect("piped stderr"));
    let (status, timed_out) = match child.wait_timeout(timeout).expect("wait for child") {
        Some(status) => (status, false),
        None => {
            let _ = child.kill();
            (child.wait().expect("wait for killed child"), true)
        }
    };
    let _ = writer.join();
    RunOutput {
        code: if timed_out { None } else { status.code() },
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
        elapsed: start.elapsed(),
    }
}

fn read_in_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A running dockop process (from [`Dockop::spawn`]); SIGTERM, then SIGKILL after 10 s, on drop.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Running {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Captured stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Captured stderr so far (dockop logs here).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit code (None when signalled).
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        self.signal_child(&child, "TERM");
        let status = match child.wait_timeout(grace).ok().flatten() {
            Some(s) => s,
            None => {
                let _ = child.kill();
                child.wait().ok()?
            }
        };
        status.code()
    }

    /// Waits for the process to exit by itself (killed after `timeout`); its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        match child.wait_timeout(timeout).ok().flatten() {
            Some(s) => s.code(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    fn signal_child(&self, child: &Child, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

// ------------------------------------------------------------------------------------------------
// docker CLI

/// `docker ARGS...` with captured output (never panics on a non-zero exit).
pub fn docker<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("docker");
    cmd.args(args);
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// `docker ARGS...`; panics with stderr on failure, returns trimmed stdout.
#[track_caller]
pub fn docker_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = docker(&args);
    if !out.status.success() {
        panic!(
            "docker {:?} failed ({}):\n{}{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker ARGS...` with `DOCKER_CONFIG=config_dir` (a throwaway client config: logins made here
/// never touch `~/.docker`). Never panics on a non-zero exit.
pub fn docker_in<I, S>(config_dir: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", config_dir).args(args);
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// `docker login REGISTRY` with `DOCKER_CONFIG=config_dir`, password on stdin; panics on failure.
#[track_caller]
pub fn docker_login(config_dir: &Path, registry: &str, user: &str, password: &str) {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", config_dir)
        .args(["login", "-u", user, "--password-stdin", registry])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_captured(cmd, password, Duration::from_secs(60));
    if !out.success() {
        panic!("docker login {registry} as {user} failed: {out}");
    }
}

/// Makes sure `image` is in the engine (pulls it from the test registry when missing).
pub fn ensure_local(image: &str) {
    if !docker(["image", "inspect", image]).status.success() {
        docker_ok(["pull", "-q", image]);
    }
}

/// `docker tag SRC REPO_TAG` + `docker push REPO_TAG`; returns the manifest digest the push printed.
#[track_caller]
pub fn push_as(src: &str, repo_tag: &str) -> String {
    ensure_local(src);
    docker_ok(["tag", src, repo_tag]);
    let out = docker_ok(["push", repo_tag]);
    out.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!("no `digest: sha256:...` in docker push {repo_tag} output:\n{out}")
        })
}

/// The container's IP on the default bridge (for probing without published ports).
#[track_caller]
pub fn container_ip(container: &str) -> String {
    docker_ok([
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ])
}

/// `GET PATH` on the Docker engine API over its unix socket (`DOCKER_HOST=unix://...` or
/// `/var/run/docker.sock`), e.g. `/v1.41/distribution/127.0.0.1:5000/web:v1/json`.
pub fn engine_get(path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let stream = UnixStream::connect(&socket).map_err(|e| format!("connect {socket}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    http_exchange(stream, "localhost", path, &[], Instant::now() + timeout)
}

// ------------------------------------------------------------------------------------------------
// per-test environment

/// One test's resources: unique id and names, ports, a temp dir, a dockop state dir; cleans up on drop.
#[derive(Debug)]
pub struct TestEnv {
    id: String,
    dir: tempfile::TempDir,
    pushed: std::sync::Mutex<Vec<String>>,
}

impl TestEnv {
    /// A fresh environment; `test` names it (`e2e-<test>-<6 random hex>`, sanitized to a DNS label).
    pub fn new(test: &str) -> Self {
        let mut name: String = test
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        name.truncate(30);
        let name = name.trim_matches('-');
        let id = format!("e2e-{name}-{:06x}", fastrand::u32(..0x100_0000));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()
            .expect("create test temp dir");
        std::fs::create_dir_all(dir.path().join("state")).expect("create state dir");
        Self {
            id,
            dir,
            pushed: Default::default(),
        }
    }

    /// The unique id: value of the `dockop-e2e` label, prefix of every name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A unique resource name: `<id>-<suffix>` (a valid DNS label for short suffixes).
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.id)
    }

    /// A Container document `name` running `image`, labelled with this test's id; `spec` holds the rest
    /// of the spec's lines, each indented by two spaces.
    pub fn object_yaml(&self, name: &str, image: &str, spec: &str) -> String {
        format!(
            "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  image: {image}\n{spec}",
            labels = self.labels_yaml(),
        )
    }

    /// A Container spec `name` for the busybox web images, published on 127.0.0.1:`host_port`, health
    /// checked every second, no preflight (for tests of the loop rather than of the update).
    pub fn web_spec(&self, name: &str, image: &str, host_port: u16) -> String {
        self.web_spec_updating(name, image, host_port, "preflight: false")
    }

    /// [`TestEnv::web_spec`] with `update` as the body of `spec.update` (flow-style fields, e.g.
    /// `"preflight: false, strategy: start-first"`).
    pub fn web_spec_updating(
        &self,
        name: &str,
        image: &str,
        host_port: u16,
        update: &str,
    ) -> String {
        self.object_yaml(
            name,
            image,
            &format!(
                "  ports:
    - {{containerPort: {WEB_PORT}, hostPort: {host_port}, hostIP: 127.0.0.1}}
  health:
    path: {HEALTH_PATH}
    port: {WEB_PORT}
    intervalSeconds: 1
    startupDeadlineSeconds: 20
  update: {{{update}}}
  init: true
  stopTimeoutSeconds: 2
",
                WEB_PORT = images::WEB_PORT,
                HEALTH_PATH = images::HEALTH_PATH,
            ),
        )
    }

    /// `{dockop-e2e: <id>}`, for `metadata.labels` in specs.
    pub fn labels_yaml(&self) -> String {
        format!("{{{LABEL}: {}}}", self.id)
    }

    /// `dockop-e2e=<id>`, for `docker run --label` and `--filter label=`.
    pub fn label(&self) -> String {
        format!("{LABEL}={}", self.id)
    }

    /// The test's temp dir (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A bare repository `<dir>/repo.git` and a clone `<dir>/work` on branch `main`; returns the
    /// repository's `file://` URL and the clone (push with [`commit`]).
    #[track_caller]
    pub fn git_repo(&self) -> (String, PathBuf) {
        git(
            self.dir(),
            &["init", "-q", "--bare", "-b", "main", "repo.git"],
        );
        git(self.dir(), &["clone", "-q", "repo.git", "work"]);
        let work = self.dir().join("work");
        git(&work, &["checkout", "-q", "-b", "main"]);
        let url = format!("file://{}", self.dir().join("repo.git").display());
        (url, work)
    }

    /// The test's dockop state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A dockop runner using this test's state dir.
    pub fn dockop(&self) -> Dockop {
        Dockop::new(self.state_dir())
    }

    /// Writes `contents` to `<dir>/<file>` (creating parent dirs) and returns the path.
    pub fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create spec dir");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// A free TCP port on 127.0.0.1 (bound to port 0, then released).
    pub fn free_port(&self) -> u16 {
        free_port()
    }

    /// `docker run -d --init --label dockop-e2e=<id> --name <id>-<suffix> EXTRA... IMAGE`;
    /// returns the container name.
    #[track_caller]
    pub fn run_container(&self, suffix: &str, extra: &[&str], image: &str) -> String {
        let name = self.name(suffix);
        let label = self.label();
        let mut args = vec!["run", "-d", "--init", "--label", &label, "--name", &name];
        args.extend_from_slice(extra);
        args.push(image);
        docker_ok(&args);
        name
    }

    /// Pushes `src` as `127.0.0.1:5000/<id>:<tag>` (a repository of this test's own); returns
    /// `(reference, digest)`. The local tag is removed on drop; registry blobs stay.
    #[track_caller]
    pub fn push_as(&self, src: &str, tag: &str) -> (String, String) {
        let reference = format!("{REGISTRY}/{}:{tag}", self.id);
        let digest = push_as(src, &reference);
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reference.clone());
        (reference, digest)
    }

    /// Removes every container (with its anonymous volumes) and volume labelled `dockop-e2e=<id>`, the
    /// networks named `<id>-...`, and the local tags made by [`TestEnv::push_as`]. Runs on drop; safe to call twice. Failures
    /// are ignored (never a panic inside a panic); `tests/testbed/down` removes any leftovers.
    pub fn cleanup(&self) {
        let filter = format!("label={}", self.label());
        // The engine may be restarting (a test restarted dockerd): wait up to 30 s for it.
        wait_until(Duration::from_secs(30), || {
            docker(["version", "-f", "{{.Server.Version}}"])
                .status
                .success()
        });
        let ids = stdout_lines(docker(["ps", "-aq", "--filter", &filter]));
        if !ids.is_empty() {
            docker(
                ["rm", "-f", "-v"]
                    .into_iter()
                    .chain(ids.iter().map(String::as_str)),
            );
        }
        // Networks dockop created for the test's objects carry dockop's label only: they are named
        // `<id>-...`.
        let nets: Vec<String> = stdout_lines(docker([
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("name={}", self.id),
        ]))
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", self.id)))
        .collect();
        if !nets.is_empty() {
            docker(
                ["network", "rm"]
                    .into_iter()
                    .chain(nets.iter().map(String::as_str)),
            );
        }
        let vols = stdout_lines(docker(["volume", "ls", "-q", "--filter", &filter]));
        if !vols.is_empty() {
            docker(
                ["volume", "rm", "-f"]
                    .into_iter()
                    .chain(vols.iter().map(String::as_str)),
            );
        }
        let pushed: Vec<String> = self
            .pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        if !pushed.is_empty() {
            docker(
                ["rmi", "--no-prune"]
                    .into_iter()
                    .chain(pushed.iter().map(String::as_str)),
            );
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn stdout_lines(out: Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 for a free port")
}

// ------------------------------------------------------------------------------------------------
// HTTP

/// `GET url` (plain `http://host:port/path`) with an overall `timeout`; returns (status, body).
/// Errors say which stage failed: `connect ...`, `timed out ...`, `closed ...`, `bad response ...`.
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    http_get_with(url, &[], timeout)
}

/// [`http_get`] with extra request headers (`(name, value)`).
pub fn http_get_with(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let deadline = Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// url: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {authority}: no address"))?;
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| format!("set write timeout: {e}"))?;
    http_exchange(stream, authority, path, headers, deadline)
}

/// A stream whose read timeout can be set (TCP and unix sockets).
trait TimedStream: Read + Write {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl TimedStream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl TimedStream for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

fn http_exchange<S: TimedStream>(
    mut stream: S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    deadline: Instant,
) -> Result<(u16, String), String> {
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dockop-e2e\r\nAccept: */*\r\n{extra}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write request: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {} bytes", raw.len()));
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("set read timeout: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if response_complete(&raw) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("timed out after {} bytes", raw.len()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("closed: read error after {} bytes: {e}", raw.len())),
        }
    }
    if raw.is_empty() {
        return Err("closed without a response".to_owned());
    }
    parse_response(&raw)
}

/// Some(head_len) when the header block is complete.
fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = head_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return raw.len() >= end + len;
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return raw[end..].ends_with(b"0\r\n\r\n");
    }
    false // read to EOF
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let end = head_end(raw).ok_or_else(|| {
        format!(
            "bad response: no header end in {:?}",
            String::from_utf8_lossy(raw)
        )
    })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad response: status line {:?}", head.lines().next()))?;
    let mut body = raw[end..].to_vec();
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or("bad response: broken chunked body")?;
    } else if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Polls `cond` every 100 ms until it is true (returns true) or `timeout` passes (returns false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `docker info` answers.
pub fn engine_up() -> bool {
    docker(["info", "--format", "{{.ID}}"]).status.success()
}

/// Pid file dockerd writes by default (the main engine's; a second engine in a test has its own).
pub const MAIN_DOCKERD_PID_FILE: &str = "/var/run/docker.pid";
/// Pid file `tests/testbed/up` writes when it starts dockerd itself.
pub const TESTBED_DOCKERD_PID_FILE: &str = "/var/lib/dockop-testbed/dockerd.pid";

/// The pid of the main engine's dockerd, from its pid file: never `pidof dockerd`, which may name a second
/// engine a test started (with its own `--pidfile`).
pub fn main_dockerd_pid() -> Option<u32> {
    [MAIN_DOCKERD_PID_FILE, TESTBED_DOCKERD_PID_FILE]
        .into_iter()
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).trim() == "dockerd")
        })
}

/// Stops the shared dockerd (SIGTERM, as a service manager would) and starts it again the way the test bed
/// does, waiting until it answers. Only for tests that run alone (`#[ignore]`, `--run-ignored only`).
#[track_caller]
pub fn restart_dockerd() {
    let pid = main_dockerd_pid().expect("dockerd runs (tests/testbed/up starts it)");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert!(
        wait_until(Duration::from_secs(60), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "dockerd {pid} did not stop"
    );
    let started = Command::new("sh")
        .args([
            "-c",
            &format!(
                "mkdir -p /var/log/dockop-testbed && setsid dockerd >>/var/log/dockop-testbed/dockerd.log 2>&1 </dev/null & echo $! >{TESTBED_DOCKERD_PID_FILE}"
            ),
        ])
        .status()
        .expect("start dockerd");
    assert!(started.success());
    assert!(
        wait_until(Duration::from_secs(60), engine_up),
        "dockerd back within 60 s"
    );
}

/// The `version` field an app serves on `127.0.0.1:<port>/global/health`, when it answers 200.
pub fn served_version(port: u16) -> Option<String> {
    let url = format!("http://127.0.0.1:{port}{}", images::HEALTH_PATH);
    let (code, body) = http_get(&url, Duration::from_secs(2)).ok()?;
    (code == 200).then_some(())?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["version"].as_str().map(str::to_owned)
}

/// `(status, reason, message)` of condition `kind` in a `dockop status -o json` document.
#[track_caller]
pub fn condition(status: &serde_json::Value, kind: &str) -> (bool, String, String) {
    try_condition(status, kind).unwrap_or_else(|| panic!("no {kind} condition in {status:#}"))
}

/// [`condition`], or `None` when the document has no such condition (yet).
pub fn try_condition(status: &serde_json::Value, kind: &str) -> Option<(bool, String, String)> {
    let c = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    Some((
        c["status"].as_bool().unwrap_or(false),
        c["reason"].as_str().unwrap_or_default().to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

impl TestEnv {
    /// `dockop status NAME -o json` with this test's state dir, parsed.
    #[track_caller]
    pub fn status(&self, name: &str) -> serde_json::Value {
        let out = self.dockop().run(["status", name, "-o", "json"]);
        out.assert_success();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}\n{out}"))
    }

    /// Names of every container (any state) labelled with this test's id.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label={}", self.label());
        stdout_lines(docker([
            "ps",
            "-a",
            "--filter",
            &filter,
            "--format",
            "{{.Names}}",
        ]))
    }
}

/// A registry of the test's own (`docker-registry` on a free port, storage in the test's temp dir), so a
/// test can stop or break it without touching the shared ones. Killed on drop.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its storage root (`docker/registry/v2/...` below it).
    pub root: PathBuf,
}

impl TestRegistry {
    /// Starts it and waits until `/v2/` answers.
    #[track_caller]
    pub fn start(env: &TestEnv) -> Self {
        let port = env.free_port();
        let root = env.dir().join("registry");
        let config = env.write(
            "registry.yml",
            &format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                root.display()
            ),
        );
        let child = Command::new("/usr/bin/docker-registry")
            .args(["serve", config.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let v2 = format!("http://127.0.0.1:{port}/v2/");
        assert!(
            wait_until(Duration::from_secs(10), || http_get(
                &v2,
                Duration::from_secs(1)
            )
            .is_ok()),
            "the test's own registry did not start"
        );
        Self { child, port, root }
    }

    /// Stops it (for tests of a registry going away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert!(response_complete(raw));
        assert_eq!(parse_response(raw).unwrap(), (200, "hello".to_owned()));
        let raw = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert!(response_complete(raw));
        assert_eq!(parse_response(raw).unwrap(), (500, "abcde".to_owned()));
    }

    #[test]
    fn env_names_are_unique_dns_labels() {
        let a = TestEnv::new("Some_Test::name");
        let b = TestEnv::new("Some_Test::name");
        assert_ne!(a.id(), b.id());
        assert!(a.id().starts_with("e2e-some-test--name-"), "{}", a.id());
        assert!(a.name("web").len() <= 63);
        assert!(a.state_dir().is_dir());
    }
}

// ------------------------------------------------------------------------------------------------
// A second engine

/// Runs `sh -c SCRIPT` in `dir`, panicking with its output on failure.
#[track_caller]
fn sh_in(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .current_dir(dir)
        .args(["-c", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second `dockerd` on this machine for fleet tests: its own data root, exec root, pid file, unix
/// socket, bridge (`--iptables=false --ip-masq=false`, so the shared engine's rules are left alone) and a
/// TLS TCP listener on 127.0.0.1 with a CA, server and client certificates made with `openssl`. Killed by
/// its pid file, its bridge and directories removed on drop.
#[derive(Debug)]
pub struct SecondEngine {
    dir: tempfile::TempDir,
    bridge: String,
    port: u16,
    pid: u32,
}

impl SecondEngine {
    /// Makes the certificates and the bridge `10.<a>.<b>.1/24`, starts the daemon and waits until it
    /// answers on its unix socket.
    #[track_caller]
    pub fn start(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dkf")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let suffix: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .rev()
            .take(8)
            .collect();
        let bridge = format!("dkf{suffix}");
        let port = free_port();
        let (a, b) = (200 + (port % 50) as u8, (port / 50 % 250) as u8);
        let d = dir.path();
        sh_in(
            d,
            "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=dockop-e2e-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -extfile server.ext -out server-cert.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout key.pem -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\\n' >client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -extfile client.ext -out cert.pem 2>/dev/null
echo '{}' >daemon.json
mkdir -p data exec",
        );
        let _ = Command::new("ip").args(["link", "del", &bridge]).status();
        sh_in(
            d,
            &format!(
                "set -e; ip link add {bridge} type bridge; ip addr add 10.{a}.{b}.1/24 dev {bridge}; ip link set {bridge} up"
            ),
        );
        let p = d.display();
        sh_in(
            d,
            &format!(
                "setsid dockerd --config-file {p}/daemon.json --data-root {p}/data --exec-root {p}/exec --pidfile {p}/dockerd.pid -H unix://{p}/docker.sock -H tcp://127.0.0.1:{port} --tlsverify --tlscacert {p}/ca.pem --tlscert {p}/server-cert.pem --tlskey {p}/server-key.pem --bridge {bridge} --iptables=false --ip-masq=false >{p}/dockerd.log 2>&1 </dev/null &"
            ),
        );
        let mut engine = Self {
            dir,
            bridge,
            port,
            pid: 0,
        };
        let up = wait_until(Duration::from_secs(60), || {
            engine
                .docker(["info", "--format", "{{.ID}}"])
                .status
                .success()
        });
        engine.pid = std::fs::read_to_string(engine.dir.path().join("dockerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            up,
            "second dockerd did not come up:\n{}",
            std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
        );
        engine
    }

    /// `unix://<dir>/docker.sock`.
    pub fn unix_host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.path().display())
    }

    /// `tcp://127.0.0.1:<port>` (TLS).
    pub fn tcp_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The client certificate files: `(ca, cert, key)`.
    pub fn client_certs(&self) -> (PathBuf, PathBuf, PathBuf) {
        let d = self.dir.path();
        (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"))
    }

    /// The daemon's pid (from its own pid file).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `docker -H unix://<dir>/docker.sock ARGS...`.
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new("docker")
            .arg("-H")
            .arg(self.unix_host())
            .args(args)
            .env_remove("DOCKER_TLS_VERIFY")
            .output()
            .expect("docker")
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let d = self.dir.path();
        let ids = stdout_lines(self.docker(["ps", "-aq"]));
        if !ids.is_empty() {
            self.docker(
                ["rm", "-f"]
                    .into_iter()
                    .chain(ids.iter().map(String::as_str)),
            );
        }
        if self.pid != 0 {
            let _ = Command::new("kill").arg(self.pid.to_string()).status();
            let pid = self.pid;
            if !wait_until(Duration::from_secs(20), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            }) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        // Mounts left under the data root (overlay, shm) keep it busy: unmount before the temp dir goes.
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "grep -o ' {p}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                    p = d.display()
                ),
            ])
            .status();
    }
}

// ------------------------------------------------------------------------------------------------
// Git

/// `git ARGS...` in `dir` with a fixed author; panics on failure; returns stdout trimmed.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.email=e2e@dockop", "-c", "user.name=e2e"])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Writes `file` (relative to the clone `work`), commits everything with `message`, pushes `main` to
/// `origin`; returns the commit.
#[track_caller]
pub fn commit(work: &Path, file: &str, contents: &str, message: &str) -> String {
    let path = work.join(file);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, contents).expect("write");
    git(work, &["add", "-A"]);
    git(work, &["commit", "-qm", message]);
    git(work, &["push", "-q", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}
