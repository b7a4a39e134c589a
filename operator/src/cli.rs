//! The command line (kubectl-like): parsing, global flags, and dispatch to the commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::spec::commands as spec_cmd;

mod export;

/// dockop: run containers on a plain Docker host the way Kubernetes runs them — declared, reconciled,
/// health-gated, rolled back.
#[derive(Debug, Parser)]
#[command(name = "dockop", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table.
    Text,
    /// JSON, as served on `/status`.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check files against the schema and the semantic rules; exit 0 valid, 1 invalid.
    Validate {
        /// Files or directories (*.yaml, *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the Container resource, or a Kubernetes CRD with --crd.
    Schema {
        /// Print a CustomResourceDefinition instead.
        #[arg(long)]
        crd: bool,
    },
    /// Dry run: what a reconcile would do, per object; exit 0 nothing to do, 2 changes pending, 1 error.
    Plan(SourceArgs),
    /// One reconcile pass until every object is converged, failed or rolled back; exit 0 converged, 1
    /// otherwise.
    Apply(SourceArgs),
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
    /// Convert objects into another system's manifests, printed on stdout (warnings on stderr).
    #[command(subcommand)]
    Export(ExportTarget),
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
    /// Desired-state files or directories.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
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
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init_logging(cli.global.log_format, cli.global.verbose);
    match cli.command {
        Command::Validate { paths } => spec_cmd::validate(&paths),
        Command::Schema { crd } => spec_cmd::schema(crd),
        Command::HashPassword => spec_cmd::hash_password(),
        Command::Export(ExportTarget::Kubernetes(args)) => export::kubernetes(&args),
        other => match tokio_runtime() {
            Ok(rt) => rt.block_on(crate::commands::run(cli.global, other)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
