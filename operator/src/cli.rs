//! The command line (kubectl-like): parsing, global flags, and dispatch to the commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::spec::commands as spec_cmd;

pub mod commands;
mod export;
pub mod run;

/// dockop: run containers on a plain Docker host the way Kubernetes runs them — declared, reconciled,
/// health-gated, rolled back.
#[derive(Debug, Parser)]
#[command(
    name = "dockop",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success (plan: nothing to do), 1 failure, 2 plan: changes pending, 64 usage error."
)]
pub struct Cli {
    /// Flags before (or after) the command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Docker engine address (unix:///var/run/docker.sock, tcp://HOST:PORT). Default: $DOCKER_HOST, else
    /// the local socket. Plain tcp:// to another machine needs --insecure-engine; use TLS instead.
    #[arg(long, global = true, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Talk TLS to a tcp:// engine and verify it with the CA (like `docker --tlsverify`); certificates
    /// from --tlscacert/--tlscert/--tlskey, else $DOCKER_CERT_PATH/{ca,cert,key}.pem, else ~/.docker.
    #[arg(long = "tlsverify", global = true, env = "DOCKER_TLS_VERIFY")]
    pub tls_verify: bool,
    /// CA certificate that signed the engine's certificate.
    #[arg(long = "tlscacert", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate.
    #[arg(long = "tlscert", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// Client key.
    #[arg(long = "tlskey", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Allow plain (unencrypted, unauthenticated) tcp:// to an engine on another machine.
    #[arg(long, global = true)]
    pub insecure_engine: bool,
    /// This dockop's instance name, written as the `dockop.dev/instance` label on what it creates; it only
    /// observes, adopts and prunes containers carrying it. Default: the host name (the default instance,
    /// which also adopts containers made by an older dockop without the label).
    #[arg(long, global = true, env = "DOCKOP_INSTANCE")]
    pub instance: Option<String>,
    /// Where status and history live. Default: /var/lib/dockop as root, else $XDG_STATE_HOME/dockop.
    #[arg(long, global = true, env = "DOCKOP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

pub use crate::telemetry::LogFormat;

/// Output format for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table.
    Text,
    /// JSON, as served on `/status`.
    Json,
    /// The JSON document as YAML.
    Yaml,
    /// The table with more columns (image, tag digest, previous digest, last error).
    Wide,
}

/// Output format for `plan` and `validate`: for people, or for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Lines for people.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Exit code of a command-line usage error (unknown flag, missing argument), as sysexits.h's
/// EX_USAGE: never 1 (failure) nor 2 (`plan`: changes pending).
pub const EXIT_USAGE: u8 = 64;

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check files against the schema and the semantic rules; exit 0 valid, 1 invalid.
    Validate {
        /// Files or directories (*.yaml, *.yml); `-` reads stdin.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format: `json` prints every finding (file, line, column, field, problem, fix) on stdout.
        #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
        output: ReportFormat,
        /// Print nothing; the exit code is the answer.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the JSON Schema of the Container resource, or a Kubernetes CRD with --crd.
    Schema {
        /// Print a CustomResourceDefinition instead.
        #[arg(long)]
        crd: bool,
    },
    /// Dry run: what a reconcile would do, per object, field by field; exit 0 nothing to do, 2 changes
    /// pending, 1 error (64: a usage error, as for every command).
    Plan(PlanArgs),
    /// One reconcile pass until every object is converged, failed or rolled back; exit 0 converged, 1
    /// otherwise.
    Apply(ApplyArgs),
    /// Run the operator: watch the source, Docker events and a resync timer; serve HTTP.
    Run(RunArgs),
    /// Conditions, digests, app version, last change and last error of each object.
    Status {
        /// One object only.
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Read `/status` of these dockop instances (http://HOST:PORT, repeatable) instead of the local
        /// state dir: one table with a HOST column.
        #[arg(long = "server")]
        servers: Vec<String>,
        /// File holding the bearer token for the servers' `/status` (their --reconcile-token-file).
        #[arg(long, requires = "servers")]
        token_file: Option<PathBuf>,
    },
    /// Go back to the previous digest and hold it until the spec or the registry digest changes.
    Rollback {
        /// Object name.
        name: String,
        /// Desired-state files, to know the rest of the spec (default: what the last apply recorded).
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
    },
    /// Forget that a digest failed (rollback, rejected preflight), so the next reconcile tries it again.
    Retry {
        /// Object name.
        name: String,
        /// Forget only this digest (default: every failed digest of the object).
        #[arg(long)]
        digest: Option<String>,
    },
    /// Read a password from stdin (no echo on a terminal) and print a yescrypt hash for `passwordHash`.
    HashPassword,
    /// The traffic switch for `update.strategy: start-first` objects: owns their host ports and forwards
    /// each request to the active container; `apply`, `run` and `rollback` set its routes through a
    /// root-only unix socket in the state directory. Runs until stopped; never restarted by dockop.
    Proxy {
        /// Address of the proxy's own `/livez` and `/metrics`.
        #[arg(long, default_value = "127.0.0.1:9401")]
        metrics_listen: String,
    },
    /// Compose services -> Container documents on stdout; what cannot be mapped, on stderr with
    /// file:line. Exit 0 when everything was mapped, 1 when something was left out (output still printed).
    Convert {
        /// Compose file, then override files in order (`-` reads stdin).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Project name, the prefix of volume and network names as Compose names them (default:
        /// $COMPOSE_PROJECT_NAME, then the top-level `name:`, then the first file's directory name).
        #[arg(short = 'p', long = "project-name", env = "COMPOSE_PROJECT_NAME")]
        project_name: Option<String>,
    },
    /// Convert objects into another system's manifests, printed on stdout (warnings on stderr).
    #[command(subcommand)]
    Export(ExportTarget),
    /// Print a shell completion script (bash: /usr/share/bash-completion/completions/dockop, zsh:
    /// a directory on $fpath as _dockop, fish: ~/.config/fish/completions/dockop.fish).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print dockop's version and git commit, and the Docker engine's version and API (when reachable).
    Version,
    /// Write the man pages (dockop.1, dockop-COMMAND.1) into a directory (used by deploy/install).
    #[command(hide = true)]
    Man {
        /// Directory to write into (created when missing).
        dir: PathBuf,
    },
}

/// What `dockop export` converts to.
#[derive(Debug, Clone, Subcommand)]
pub enum ExportTarget {
    /// A Deployment, a Service, a Secret skeleton and PersistentVolumeClaims per object, as one
    /// multi-document YAML; exit 0 (also with warnings), 1 on invalid input.
    Kubernetes(KubernetesArgs),
}

/// Flags of `dockop export kubernetes`.
#[derive(Debug, Clone, Args)]
pub struct KubernetesArgs {
    /// Desired-state files or directories; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace set on every object (a DNS label).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Requested size of each PersistentVolumeClaim (a Kubernetes quantity).
    #[arg(long, default_value = crate::export::kubernetes::DEFAULT_VOLUME_SIZE)]
    pub volume_size: String,
}

/// Where desired state comes from, for one-shot commands.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Desired-state files or directories; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also remove the containers (never the volumes or networks) of objects this state directory
    /// manages that are not in the files: dependents (`dependsOn`) first. `plan` lists them.
    #[arg(long)]
    pub prune: bool,
    /// Print nothing (errors aside); the exit code is the answer.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Where notifications go (`run` and `apply`); see docs/notifications.md.
#[derive(Debug, Clone, Default, Args)]
pub struct NotifyArgs {
    /// Send notifications to URL (shoutrrr-style: generic+http://, slack://, discord://, ntfy://,
    /// smtp://); repeatable. URLs carry tokens and a command line is visible to every user: prefer
    /// --notify-file.
    #[arg(long = "notify", value_name = "URL")]
    pub notify: Vec<crate::notify::NotifyUrl>,
    /// File with one notification URL per line (`#` comments); keep it root-only (chmod 600).
    #[arg(long, value_name = "FILE", env = "DOCKOP_NOTIFY_FILE")]
    pub notify_file: Option<PathBuf>,
}

/// Flags of `dockop apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Where desired state comes from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Where notifications go.
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Flags of `dockop plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Where desired state comes from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output format: `json` prints one document with every object's plan and field changes.
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
}

/// Flags of `dockop run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Desired-state files or directories to watch.
    #[arg(short = 'f', long = "filename", conflicts_with = "git")]
    pub files: Vec<PathBuf>,
    /// Follow a git repository instead of files.
    #[arg(long)]
    pub git: Option<String>,
    /// Branch to follow.
    #[arg(long, default_value = "main", requires = "git")]
    pub branch: String,
    /// Directory inside the repository holding desired-state files; repeat it (`--path common --path
    /// hosts/web1`) to read several as one desired state (a name defined twice is an error).
    #[arg(long = "path", default_value = ".", requires = "git")]
    pub paths: Vec<String>,
    /// Address the HTTP server listens on.
    #[arg(long, default_value = "127.0.0.1:9400")]
    pub listen: String,
    /// Seconds between full resyncs (jittered).
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Remove containers whose object disappeared from the source (never their volumes).
    #[arg(long)]
    pub prune: bool,
    /// Seconds between git fetches (the webhook triggers one at once).
    #[arg(long, default_value_t = 60)]
    pub git_poll_seconds: u64,
    /// Milliseconds to wait for more changes before acting on a source or Docker event.
    #[arg(long, default_value_t = 300)]
    pub debounce_ms: u64,
    /// Objects reconciled in parallel at most.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent: usize,
    /// File holding the bearer token that enables `POST /reconcile/{name}`.
    #[arg(long)]
    pub reconcile_token_file: Option<PathBuf>,
    /// File holding the shared secret that enables `POST /hooks/git` (GitHub/Gitea HMAC-SHA256).
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Where notifications go.
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; everything else is a usage error: EX_USAGE.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    crate::telemetry::init_logging(cli.global.log_format, cli.global.verbose);
    match cli.command {
        Command::Validate {
            paths,
            output,
            quiet,
        } => spec_cmd::validate(&paths, output == ReportFormat::Json, quiet),
        Command::Completion { shell } => completion(shell),
        Command::Man { dir } => man_pages(&dir),
        Command::Schema { crd } => spec_cmd::schema(crd),
        Command::HashPassword => spec_cmd::hash_password(),
        Command::Export(ExportTarget::Kubernetes(args)) => export::kubernetes(&args),
        Command::Convert {
            files,
            project_name,
        } => convert_cmd(&files, project_name),
        other => match tokio_runtime() {
            Ok(rt) => rt.block_on(crate::cli::commands::run(cli.global, other)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `dockop convert`: reads the files (stdin for `-`) and `.env` next to the first, converts, prints.
fn convert_cmd(files: &[PathBuf], project: Option<String>) -> ExitCode {
    use std::io::Read;

    use crate::convert::compose::{Env, Input, dotenv_vars};
    let mut inputs = Vec::new();
    for f in files {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(f)
        };
        match text {
            Ok(text) => inputs.push(Input {
                path: f.clone(),
                text,
            }),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let first = files.first().cloned().unwrap_or_default();
    let dotenv = std::fs::read_to_string(crate::convert::compose::base_dir(&first).join(".env"))
        .map(|t| dotenv_vars(&t))
        .unwrap_or_default();
    let read = |p: &std::path::Path| std::fs::read_to_string(p);
    let opts = crate::convert::Options {
        project,
        env: Env {
            process: std::env::vars().collect(),
            dotenv,
        },
        read_file: &read,
    };
    match crate::convert::convert(&inputs, &opts) {
        Ok(out) => {
            print!("{}", out.to_yaml());
            for r in &out.reports {
                eprintln!("{r}");
            }
            if out.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `clap` description of the command line (completions, man pages, the docs test).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn completion(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = command();
    clap_complete::generate(shell, &mut cmd, "dockop", &mut std::io::stdout());
    ExitCode::SUCCESS
}

fn man_pages(dir: &std::path::Path) -> ExitCode {
    match write_man_pages(dir) {
        Ok(n) => {
            eprintln!("wrote {n} man pages into {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write man pages into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes `dockop.1` and one `dockop-COMMAND.1` per visible subcommand (nested ones too) into `dir`;
/// returns how many pages the directory holds afterwards.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command(), dir)?;
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count())
}

fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
