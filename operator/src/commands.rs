//! The engine-facing commands: `plan`, `apply`, `status`, `rollback` (and `run`, handed to the controller).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use crate::cli::{Command, GlobalArgs, OutputFormat};
use crate::engine::Engine;
use crate::engine::docker::DockerEngine;
use crate::engine::endpoint::{Endpoint, TlsFlags};
use crate::engine::instance::{Instance, ScopedEngine};
use crate::execute::{Outcome, Reporter};
use crate::plan::{Action, short};
use crate::reconcile::{Ctx, Options, Report, reconcile};
use crate::spec::Container;
use crate::spec::load::{Loaded, load_paths};
use crate::status::{ConditionType, Hold, ObjectStatus, Store, default_state_dir};

/// Exit code of `plan` when changes are pending.
const EXIT_CHANGES: u8 = 2;

/// Runs one of the engine-facing commands.
pub async fn run(global: GlobalArgs, command: Command) -> ExitCode {
    match command {
        Command::Plan(src) => plan_or_apply(&global, &src.files, true).await,
        Command::Apply(src) => plan_or_apply(&global, &src.files, false).await,
        Command::Status {
            name,
            output,
            servers,
            token_file,
        } if !servers.is_empty() => {
            fleet_status(name.as_deref(), output, &servers, token_file.as_deref()).await
        }
        Command::Status { name, output, .. } => status(&global, name.as_deref(), output),
        Command::Rollback { name, files } => rollback(&global, &name, &files).await,
        Command::Retry { name, digest } => retry(&global, &name, digest.as_deref()),
        Command::Run(args) => crate::controller::run(global, args).await,
        Command::Proxy { metrics_listen } => {
            let dir = global.state_dir.clone().unwrap_or_else(default_state_dir);
            match crate::proxy::run(&dir, &metrics_listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: dockop proxy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { .. }
        | Command::Schema { .. }
        | Command::HashPassword
        | Command::Export(_) => ExitCode::FAILURE,
    }
}

/// Opens the state directory for a command that only reads it (`status`, `plan`): nothing on disk
/// changes.
fn open_store_read_only(global: &GlobalArgs) -> Store {
    Store::open_read_only(&global.state_dir.clone().unwrap_or_else(default_state_dir))
}

/// Opens the state directory for a command that writes it, printing a clear error.
pub fn open_store(global: &GlobalArgs) -> Result<Store, ExitCode> {
    let dir = global.state_dir.clone().unwrap_or_else(default_state_dir);
    Store::open(&dir).map_err(|e| {
        eprintln!("error: {e}\n  fix: pass --state-dir DIR (or DOCKOP_STATE_DIR) pointing to a writable directory");
        ExitCode::FAILURE
    })
}

/// Takes the state directory's lock for a command that changes status (`apply`, `rollback`, `retry`):
/// they must not race a `dockop run` (or each other) on the same objects.
fn lock_state(store: &Store) -> Result<crate::controller::lock::StateLock, ExitCode> {
    use crate::controller::lock::{LockError, acquire};
    acquire(store.dir()).map_err(|e| {
        match e {
            LockError::Held { path, .. } => eprintln!(
                "error: another dockop holds {path} (a `dockop run` service, or another command)\n  fix: under `dockop run`, change the files it follows or POST /reconcile/NAME; for `rollback` or `retry`, stop it first (the hold and the failed list survive its restart)"
            ),
            other => eprintln!("error: {other}"),
        }
        ExitCode::FAILURE
    })
}

/// Resolves `--instance` (default: the host name) off the async threads, printing a clear error.
pub async fn instance(global: &GlobalArgs) -> Result<Instance, ExitCode> {
    let flag = global.instance.clone();
    let resolved = tokio::task::spawn_blocking(move || Instance::resolve(flag.as_deref())).await;
    match resolved {
        Ok(Ok(i)) => Ok(i),
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("error: resolving the instance name: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Connects to the engine as this process's instance (see [`crate::engine::instance`]), printing a
/// clear error.
pub async fn connect(global: &GlobalArgs) -> Result<Arc<dyn Engine>, ExitCode> {
    let instance = instance(global).await?;
    let tls = TlsFlags {
        verify: global.tls_verify,
        cert_dir: std::env::var_os("DOCKER_CERT_PATH")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        ca: global.tls_ca.clone(),
        cert: global.tls_cert.clone(),
        key: global.tls_key.clone(),
    };
    let endpoint = Endpoint::parse(global.docker_host.as_deref(), &tls, global.insecure_engine)
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        })?;
    let docker = DockerEngine::connect(&endpoint).await.map_err(|e| {
        eprintln!(
            "error: {e}\n  fix: start the Docker engine, or point --docker-host / DOCKER_HOST at it (e.g. unix:///var/run/docker.sock)"
        );
        ExitCode::FAILURE
    })?;
    tracing::debug!(instance = instance.name(), "connected");
    Ok(Arc::new(ScopedEngine::new(Arc::new(docker), instance)))
}

/// Loads and validates desired state; prints diagnostics; `None` when invalid (nothing is touched then).
pub fn load_valid(files: &[PathBuf]) -> Option<Loaded> {
    let loaded = load_paths(files);
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    if !loaded.is_valid() {
        let n = loaded.errors().count();
        eprintln!("error: {n} problem(s) in the desired state; nothing was changed");
        return None;
    }
    Some(loaded)
}

/// Prints progress lines to stderr; draws a pull progress bar on a terminal.
#[derive(Debug)]
pub struct TermReporter {
    bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    tty: bool,
}

impl TermReporter {
    /// A reporter for this process's stderr.
    pub fn new() -> Self {
        Self {
            bars: Mutex::default(),
            tty: std::io::stderr().is_terminal(),
        }
    }
}

impl Default for TermReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for TermReporter {
    fn line(&self, name: &str, text: &str) {
        if let Ok(mut bars) = self.bars.lock()
            && let Some(bar) = bars.remove(name)
        {
            bar.finish_and_clear();
        }
        eprintln!("{name}: {text}");
        tracing::debug!(object = name, "{text}");
    }

    fn pull_progress(&self, name: &str, done: u64, total: u64) {
        if !self.tty {
            return;
        }
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(name.to_owned()).or_insert_with(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{prefix}: pulling [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let b = indicatif::ProgressBar::new(total).with_style(style.progress_chars("=> "));
            b.set_prefix(name.to_owned());
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }
}

fn describe_outcome(r: &Report) -> String {
    match &r.outcome {
        None => String::new(),
        Some(Outcome::Converged) => "unchanged".into(),
        Some(Outcome::Changed { action }) => {
            let done = match action.as_str() {
                "create" => "created",
                "start" => "started",
                "update" => "updated",
                "resume" => "finished an interrupted update",
                "restore" => "restored the previous container",
                other => other,
            };
            format!("{done} in {:.1} s", r.seconds)
        }
        Some(Outcome::RolledBack { phase, reason }) => {
            format!("ROLLED BACK ({}: {reason})", phase.as_str())
        }
        Some(Outcome::Rejected { reason }) => format!("REJECTED by preflight ({reason})"),
        Some(Outcome::Failed { phase, reason }) => format!("FAILED ({}: {reason})", phase.as_str()),
        Some(Outcome::Blocked { reason, message }) => format!("{reason}: {message}"),
    }
}

async fn plan_or_apply(global: &GlobalArgs, files: &[PathBuf], dry_run: bool) -> ExitCode {
    let Some(loaded) = load_valid(files) else {
        return ExitCode::FAILURE;
    };
    let (store, _lock) = if dry_run {
        (open_store_read_only(global), None)
    } else {
        let store = match open_store(global) {
            Ok(s) => s,
            Err(c) => return c,
        };
        match lock_state(&store) {
            Ok(l) => (store, Some(l)),
            Err(c) => return c,
        }
    };
    let engine = match connect(global).await {
        Ok(e) => e,
        Err(c) => return c,
    };
    let ctx = Ctx {
        engine: engine.clone(),
        store: store.clone(),
        reporter: Arc::new(TermReporter::new()),
    };
    let all = match ctx.engine.list_managed().await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Options {
        dry_run,
        ..Default::default()
    };
    let objects: Vec<Container> = loaded.objects.iter().map(|o| o.object.clone()).collect();
    if !dry_run {
        for o in &objects {
            store.save_last_applied(o);
        }
    }
    // Objects are independent: reconcile them concurrently, a few at a time.
    let results: Vec<_> = {
        use futures_util::StreamExt;
        futures_util::stream::iter(
            objects
                .iter()
                .map(|o| reconcile(&ctx, o, Some(&all), &opts)),
        )
        .buffered(4)
        .collect()
        .await
    };
    let mut ok = true;
    let mut changes = false;
    for (o, r) in objects.iter().zip(results) {
        match r {
            Err(e) => {
                ok = false;
                println!("{}: error: {e}", o.metadata.name);
            }
            Ok(report) if dry_run => {
                changes |= report.plan.changes();
                print_plan(&report);
            }
            Ok(report) => {
                ok &= report.converged();
                println!("{}: {}", report.name, describe_outcome(&report));
            }
        }
    }
    match (dry_run, ok, changes) {
        (_, false, _) => ExitCode::FAILURE,
        (true, true, true) => ExitCode::from(EXIT_CHANGES),
        _ => ExitCode::SUCCESS,
    }
}

fn print_plan(r: &Report) {
    let p = &r.plan;
    let head = match &p.action {
        Action::Nothing => "no changes".to_owned(),
        Action::Create => "will create".to_owned(),
        Action::Start => "will start".to_owned(),
        Action::Update => format!(
            "will update ({}, health-gated, rolled back on failure)",
            if p.steps.contains(&crate::plan::Step::SwitchRoute) {
                "start-first"
            } else {
                "stop-first"
            }
        ),
        Action::Resume => "will resume an interrupted update".to_owned(),
        Action::Restore => "will restore the previous container".to_owned(),
        Action::Switch => "will point dockop proxy's route at the active container".to_owned(),
        Action::Blocked { reason, message } => format!("blocked ({reason}): {message}"),
    };
    println!("{}: {head}", p.name);
    if let (Some(cur), Some(t)) = (&p.current_digest, &p.target_digest) {
        if cur != t {
            println!("  ~ digest: {} -> {}", short(cur), short(t));
        }
    } else if let Some(t) = &p.target_digest {
        println!("  + digest: {}", short(t));
    }
    for n in &p.notes {
        println!("  # {n}");
    }
    if p.changes() {
        for (i, s) in p.steps.iter().enumerate() {
            println!("  {}. {s}", i + 1);
        }
    }
}

fn status(global: &GlobalArgs, name: Option<&str>, output: OutputFormat) -> ExitCode {
    let store = open_store_read_only(global);
    // A corrupt file is reported and left where it is; the others are shown.
    let mut unreadable = false;
    let read: Vec<_> = match name {
        Some(n) => store.read(n).transpose().into_iter().collect(),
        None => store.read_all(),
    };
    let all: Vec<ObjectStatus> = read
        .into_iter()
        .filter_map(|r| {
            r.map_err(|e| {
                unreadable = true;
                eprintln!("error: {e}\n  fix: remove or repair the file (`dockop apply` or `dockop run` moves it aside)");
            })
            .ok()
        })
        .collect();
    if unreadable && all.is_empty() {
        return ExitCode::FAILURE;
    }
    if let Some(n) = name
        && all.is_empty()
    {
        eprintln!(
            "error: no status for {n:?}; fix: `dockop apply -f FILE` or `dockop run` creates it"
        );
        return ExitCode::FAILURE;
    }
    match output {
        OutputFormat::Json => {
            let v = if name.is_some() {
                serde_json::to_string_pretty(&all[0])
            } else {
                serde_json::to_string_pretty(&all)
            };
            println!("{}", v.unwrap_or_default());
        }
        OutputFormat::Text => print_status_table(false, all.iter().map(|s| (None, s))),
    }
    if unreadable {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `dockop status --server URL...`: every server's `/status` in one table with a HOST column (or one
/// JSON list, each object with its `host`); exit 1 when a server could not be read (reported on stderr).
async fn fleet_status(
    name: Option<&str>,
    output: OutputFormat,
    servers: &[String],
    token_file: Option<&std::path::Path>,
) -> ExitCode {
    let token = match token_file {
        Some(f) => match tokio::fs::read_to_string(f).await {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                eprintln!("error: reading the token file {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let answers = crate::fleet::fetch_all(servers, token.as_deref()).await;
    let mut failed = false;
    let mut rows: Vec<(&str, &ObjectStatus)> = Vec::new();
    for a in &answers {
        match &a.result {
            Ok(objects) => rows.extend(
                objects
                    .iter()
                    .filter(|o| name.is_none_or(|n| o.name == n))
                    .map(|o| (a.host.as_str(), o)),
            ),
            Err(e) => {
                failed = true;
                eprintln!("error: {e}");
            }
        }
    }
    match output {
        OutputFormat::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|(host, o)| {
                    let mut v = serde_json::to_value(o).unwrap_or_default();
                    if let Some(m) = v.as_object_mut() {
                        m.insert("host".into(), (*host).into());
                    }
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
        }
        OutputFormat::Text => print_status_table(true, rows.iter().map(|(h, o)| (Some(*h), *o))),
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The status table; with a HOST column when the rows carry their host.
fn print_status_table<'a>(
    with_host: bool,
    rows: impl Iterator<Item = (Option<&'a str>, &'a ObjectStatus)>,
) {
    let host_col = |h: &str| {
        if with_host {
            format!("{h:<22} ")
        } else {
            String::new()
        }
    };
    println!(
        "{}{:<24} {:<6} {:<28} {:<20} {:<12} LAST CHANGE",
        host_col("HOST"),
        "NAME",
        "READY",
        "CONDITION",
        "DIGEST",
        "VERSION"
    );
    for (host, s) in rows {
        let ready = if s.is_ready() { "True" } else { "False" };
        let cond = match s.condition(ConditionType::Degraded) {
            Some(c) if c.status => format!("Degraded/{}", c.reason),
            _ if s
                .condition(ConditionType::Progressing)
                .is_some_and(|c| c.status) =>
            {
                "Progressing".into()
            }
            _ => "Available".into(),
        };
        let last = s
            .last_change
            .as_ref()
            .map(|c| {
                format!(
                    "{} {} {}",
                    c.action,
                    c.result,
                    c.at.format("%Y-%m-%d %H:%M:%S")
                )
            })
            .unwrap_or_default();
        println!(
            "{}{:<24} {:<6} {:<28} {:<20} {:<12} {}",
            host_col(host.unwrap_or_default()),
            s.name,
            ready,
            cond,
            s.current_digest.as_deref().map(short).unwrap_or_default(),
            s.app_version.as_deref().unwrap_or("-"),
            last
        );
        if let Some(c) = s.condition(ConditionType::Degraded).filter(|c| c.status) {
            println!("  {}: {}", c.reason, c.message);
        }
    }
}

async fn rollback(global: &GlobalArgs, name: &str, files: &[PathBuf]) -> ExitCode {
    let store = match open_store(global) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let _lock = match lock_state(&store) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let obj = if files.is_empty() {
        match store.load_last_applied(name) {
            Some(o) => o,
            None => {
                eprintln!(
                    "error: no recorded spec for {name:?}; fix: pass -f FILE with its desired state"
                );
                return ExitCode::FAILURE;
            }
        }
    } else {
        let Some(loaded) = load_valid(files) else {
            return ExitCode::FAILURE;
        };
        match loaded
            .objects
            .into_iter()
            .find(|o| o.object.metadata.name == name)
        {
            Some(o) => o.object,
            None => {
                eprintln!("error: no object named {name:?} in the given files");
                return ExitCode::FAILURE;
            }
        }
    };
    let mut status = store.load(name);
    let Some(previous) = status.previous_digest.clone() else {
        eprintln!(
            "error: {name} has no previous digest to go back to (no successful update recorded yet)"
        );
        return ExitCode::FAILURE;
    };
    let desired = match crate::desired::DesiredContainer::load(&obj).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = match connect(global).await {
        Ok(e) => e,
        Err(c) => return c,
    };
    let registry_digest = if obj.spec.digest.is_some() {
        obj.spec.digest.clone()
    } else {
        let creds = crate::engine::auth::credentials_for(desired.tag_reference())
            .ok()
            .flatten();
        match crate::engine::Engine::registry_digest(
            engine.as_ref(),
            desired.tag_reference(),
            creds.as_ref(),
        )
        .await
        {
            Ok(d) => Some(d),
            Err(_) => status.registry_digest.clone(),
        }
    };
    status.hold = Some(Hold {
        digest: previous.clone(),
        spec_hash: desired.spec_hash.clone(),
        registry_digest,
    });
    // A rollback target is by definition one the user wants: forget that it ever failed.
    status.failed.retain(|f| f.digest != previous);
    if let Err(e) = store.save(&status) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "{name}: rolling back to {} (held until the spec or the registry digest changes)",
        short(&previous)
    );
    let ctx = Ctx {
        engine,
        store,
        reporter: Arc::new(TermReporter::new()),
    };
    match reconcile(&ctx, &obj, None, &Options::default()).await {
        Ok(r) => {
            println!("{}: {}", r.name, describe_outcome(&r));
            if r.converged() {
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

fn retry(global: &GlobalArgs, name: &str, digest: Option<&str>) -> ExitCode {
    let store = match open_store(global) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let _lock = match lock_state(&store) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut status = store.load(name);
    let before = status.failed.len();
    status
        .failed
        .retain(|f| digest.is_some_and(|d| f.digest != d));
    let cleared = before - status.failed.len();
    if cleared == 0 {
        eprintln!(
            "{name}: no failed digest to forget{}",
            digest.map(|d| format!(" matching {d}")).unwrap_or_default()
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = store.save(&status) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "{name}: forgot {cleared} failed digest(s); the next reconcile tries again (`dockop apply -f FILE`, or under `dockop run` its next resync or POST /reconcile/{name})"
    );
    ExitCode::SUCCESS
}
