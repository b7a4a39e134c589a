//! The engine-facing commands: `plan`, `apply`, `status`, `rollback` (and `run`, handed to the controller).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use crate::cli::{Command, GlobalArgs, NotifyArgs, OutputFormat, ReportFormat, SourceArgs};
use crate::engine::Engine;
use crate::engine::docker::DockerEngine;
use crate::engine::endpoint::{Endpoint, TlsFlags};
use crate::engine::instance::{Instance, ScopedEngine};
use crate::execute::{Outcome, Reporter};
use crate::notify::Notifier;
use crate::notify::event::Observation;
use crate::plan::{Action, short};
use crate::reconcile::{Ctx, Options, Report, reconcile};
use crate::spec::Container;
use crate::spec::commands::load_paths_or_stdin;
use crate::spec::load::Loaded;
use crate::spec::order::{removal_order, start_layers};
use crate::status::{
    ChangeAction, ChangeResult, ConditionType, Hold, ObjectStatus, Store, default_state_dir,
};
use crate::telemetry::Metrics;

/// Exit code of `plan` when changes are pending.
const EXIT_CHANGES: u8 = 2;

/// Runs one of the engine-facing commands.
pub async fn run(global: GlobalArgs, command: Command) -> ExitCode {
    // The one metrics registry of this process: `dockop run` serves it on /metrics.
    let metrics = Arc::new(Metrics::new());
    match command {
        Command::Plan(args) => {
            plan_or_apply(&global, &args.source, Some(args.output), None, metrics).await
        }
        Command::Apply(args) => {
            let notifier = match start_notifier(&args.notify, &metrics).await {
                Ok(n) => n,
                Err(c) => return c,
            };
            let code = plan_or_apply(&global, &args.source, None, Some(&notifier), metrics).await;
            report_unsent(&notifier).await;
            code
        }
        Command::Version => version(&global).await,
        Command::Status {
            name,
            output,
            servers,
            token_file,
        } if !servers.is_empty() => {
            fleet_status(name.as_deref(), output, &servers, token_file.as_deref()).await
        }
        Command::Status { name, output, .. } => status(&global, name.as_deref(), output),
        Command::Rollback { name, files } => rollback(&global, &name, &files, metrics).await,
        Command::Retry { name, digest } => retry(&global, &name, digest.as_deref()),
        Command::Run(args) if args.files.iter().any(|f| f.as_os_str() == "-") => {
            eprintln!(
                "error: `dockop run` watches its files and cannot follow stdin (-f -)\n  fix: write the objects to a file or directory and pass that; `plan`, `apply` and `validate` read stdin"
            );
            ExitCode::from(crate::cli::EXIT_USAGE)
        }
        Command::Run(args) => crate::cli::run::run(global, args, metrics).await,
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
        | Command::Completion { .. }
        | Command::Man { .. }
        | Command::Export(_)
        | Command::Convert { .. } => ExitCode::FAILURE,
    }
}

/// How long `apply` waits for its notifications before it exits.
const APPLY_NOTIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Parses `--notify`/`--notify-file` and starts delivery; a clear error (file:line, never the token)
/// when a URL is invalid.
pub async fn start_notifier(
    args: &NotifyArgs,
    metrics: &Arc<Metrics>,
) -> Result<Notifier, ExitCode> {
    match crate::notify::load_targets(&args.notify, args.notify_file.as_deref()).await {
        Ok(t) => Ok(Notifier::start(t, Arc::clone(metrics))),
        Err(e) => {
            eprintln!(
                "error: notifications: {e}\n  fix: see docs/notifications.md for the URL forms"
            );
            Err(ExitCode::FAILURE)
        }
    }
}

/// Waits (at most [`APPLY_NOTIFY_WAIT`]) for `apply`'s notifications; prints what was not sent.
async fn report_unsent(notifier: &Notifier) {
    let unsent = notifier.flush(APPLY_NOTIFY_WAIT).await;
    for ((service, event), n) in Notifier::summarize(&unsent) {
        eprintln!(
            "notifications: {n} {event} message(s) to {service} not sent within {APPLY_NOTIFY_WAIT:?}"
        );
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
fn lock_state(store: &Store) -> Result<crate::lock::StateLock, ExitCode> {
    use crate::lock::{LockError, acquire};
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
/// The engine address from `--docker-host` / `DOCKER_HOST` and the TLS flags, as the Docker CLI reads
/// them.
fn engine_endpoint(
    global: &GlobalArgs,
) -> Result<Endpoint, crate::engine::endpoint::EndpointError> {
    let tls = TlsFlags {
        verify: global.tls_verify,
        cert_dir: std::env::var_os("DOCKER_CERT_PATH")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        ca: global.tls_ca.clone(),
        cert: global.tls_cert.clone(),
        key: global.tls_key.clone(),
    };
    Endpoint::parse(global.docker_host.as_deref(), &tls, global.insecure_engine)
}

/// Connects to the Docker engine the global flags name, scoped to this dockop instance's containers; on
/// failure prints the error (with a fix) and returns the exit code.
pub async fn connect(
    global: &GlobalArgs,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Engine>, ExitCode> {
    let instance = instance(global).await?;
    let endpoint = engine_endpoint(global).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })?;
    let docker = DockerEngine::connect(&endpoint, Arc::clone(metrics))
        .await
        .map_err(|e| {
        eprintln!(
            "error: {e}\n  fix: start the Docker engine, or point --docker-host / DOCKER_HOST at it (e.g. unix:///var/run/docker.sock)"
        );
        ExitCode::FAILURE
    })?;
    tracing::debug!(instance = instance.name(), "connected");
    Ok(Arc::new(ScopedEngine::new(Arc::new(docker), instance)))
}

/// Loads and validates desired state (`-` reads stdin); prints diagnostics; `None` when invalid (nothing
/// is touched then).
pub fn load_valid(files: &[PathBuf]) -> Option<Loaded> {
    check_loaded(load_paths_or_stdin(files)).ok()
}

/// Prints a load's diagnostics; the load back as `Err` when it is invalid.
fn check_loaded(loaded: Loaded) -> Result<Loaded, Loaded> {
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    if !loaded.is_valid() {
        let n = loaded.errors().count();
        eprintln!("error: {n} problem(s) in the desired state; nothing was changed");
        return Err(loaded);
    }
    Ok(loaded)
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
            let done = match action {
                ChangeAction::Create => "created",
                ChangeAction::Start => "started",
                ChangeAction::Update => "updated",
                ChangeAction::Resume => "finished an interrupted update",
                ChangeAction::Restore => "restored the previous container",
                ChangeAction::Switch | ChangeAction::None => action.as_str(),
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

/// `plan` (with its output format) or `apply` (`plan_output` is `None`, notifications to `notifier`).
async fn plan_or_apply(
    global: &GlobalArgs,
    source: &SourceArgs,
    plan_output: Option<ReportFormat>,
    notifier: Option<&Notifier>,
    metrics: Arc<Metrics>,
) -> ExitCode {
    let dry_run = plan_output.is_some();
    let quiet = source.quiet;
    // Validation reads files and may take a while on a large input: off the async runtime.
    let owned = source.files.clone();
    let loaded = match tokio::task::spawn_blocking(move || load_paths_or_stdin(&owned)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: reading the desired state: {e}");
            return ExitCode::FAILURE;
        }
    };
    let loaded = match check_loaded(loaded) {
        Ok(l) => l,
        Err(bad) => {
            if let Some(n) = notifier {
                notify_invalid(n, &bad);
            }
            return ExitCode::FAILURE;
        }
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
    let engine = match connect(global, &metrics).await {
        Ok(e) => e,
        Err(c) => return c,
    };
    let ctx = Ctx {
        engine: engine.clone(),
        store: store.clone(),
        reporter: Arc::new(TermReporter::new()),
        metrics,
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
    // dependsOn order: each layer after the one before it, its objects concurrently (a few at a time); an
    // object whose dependency did not converge is left alone. A dry run plans every object.
    let mut results: Vec<Option<Result<Report, String>>> = vec![None; objects.len()];
    let mut not_ready: Vec<String> = Vec::new();
    for layer in start_layers(&objects) {
        let mut run = Vec::new();
        for i in layer {
            let Some(o) = objects.get(i) else { continue };
            let blocked: Vec<&str> = o
                .spec
                .depends_on
                .iter()
                .filter(|d| not_ready.contains(d))
                .map(String::as_str)
                .collect();
            if blocked.is_empty() || dry_run {
                run.push(i);
            } else {
                not_ready.push(o.name().to_owned());
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(format!(
                        "waiting: dependency {} is not Ready; nothing was changed",
                        blocked.join(", ")
                    )));
                }
            }
        }
        let done: Vec<_> = {
            use futures_util::StreamExt;
            futures_util::stream::iter(
                run.iter()
                    .filter_map(|i| objects.get(*i))
                    .map(|o| reconcile(&ctx, o, Some(&all), &opts)),
            )
            .buffered(4)
            .collect()
            .await
        };
        for (i, r) in run.into_iter().zip(done) {
            let r = r.map_err(|e| {
                if let (Some(n), Some(o)) = (notifier, objects.get(i)) {
                    n.observe(Observation::Failed {
                        object: &o.metadata.name,
                        error: &e.to_string(),
                    });
                }
                format!("error: {e}")
            });
            if !r.as_ref().is_ok_and(Report::converged)
                && let Some(o) = objects.get(i)
            {
                not_ready.push(o.name().to_owned());
            }
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    let mut ok = true;
    let mut changes = false;
    let mut json = Vec::new();
    for (o, r) in objects.iter().zip(results) {
        match r {
            None => {}
            Some(Err(e)) => {
                ok = false;
                if plan_output == Some(ReportFormat::Json) {
                    json.push(serde_json::json!({"name": o.metadata.name, "error": e}));
                } else {
                    println!("{}: {e}", o.metadata.name);
                }
            }
            Some(Ok(report)) if dry_run => {
                changes |= report.plan.changes();
                // `None` when no apply recorded a spec for the object yet.
                let fields = store
                    .load_last_applied(&o.metadata.name)
                    .map(|old| crate::spec::diff::diff(&old, o));
                match plan_output {
                    _ if quiet => {}
                    Some(ReportFormat::Json) => {
                        json.push(plan_json(&report, o, fields.as_deref().unwrap_or_default()));
                    }
                    _ => print_plan(&report, o, fields.as_deref()),
                }
            }
            Some(Ok(report)) => {
                ok &= report.converged();
                if !quiet {
                    println!("{}: {}", report.name, describe_outcome(&report));
                }
                if let Some(n) = notifier {
                    n.observe(Observation::Reconciled {
                        report: &report,
                        invalid: None,
                    });
                }
            }
        }
    }
    if source.prune {
        let (pruned, prune_ok) = prune_missing(&ctx, &objects, dry_run).await;
        changes |= pruned;
        ok &= prune_ok;
    }
    if plan_output == Some(ReportFormat::Json) && !quiet {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "objects": json }));
        println!("{}", text.unwrap_or_default());
    }
    match (dry_run, ok, changes) {
        (_, false, _) => ExitCode::FAILURE,
        (true, true, true) => ExitCode::from(EXIT_CHANGES),
        _ => ExitCode::SUCCESS,
    }
}

/// `--prune`: removes (or, for a dry run, lists) the objects this state directory manages that are not
/// in `objects`, dependents first (from their last applied specs). Returns (anything to prune, all ok).
async fn prune_missing(ctx: &Ctx, objects: &[Container], dry_run: bool) -> (bool, bool) {
    let wanted: Vec<&str> = objects.iter().map(Container::name).collect();
    let gone: Vec<String> = ctx
        .store
        .list()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| !wanted.contains(&n.as_str()))
        .collect();
    let last: Vec<Container> = gone
        .iter()
        .filter_map(|n| ctx.store.load_last_applied(n))
        .collect();
    let mut order = removal_order(&last);
    let rest: Vec<String> = gone
        .iter()
        .filter(|n| !order.contains(n))
        .cloned()
        .collect();
    order.extend(rest);
    let mut ok = true;
    for name in &order {
        if dry_run {
            println!("{name}: prune (not in the files; its containers are removed, volumes kept)");
            continue;
        }
        match crate::controller::worker::prune_object(ctx, name).await {
            Ok(n) => println!("{name}: pruned ({n} container(s); volumes and networks kept)"),
            Err(e) => {
                ok = false;
                println!("{name}: prune failed: {e}");
            }
        }
    }
    (!order.is_empty(), ok)
}

/// One `invalid_spec` notification per file with errors (nothing of it is in force: the object is the
/// file).
fn notify_invalid(notifier: &Notifier, loaded: &Loaded) {
    let mut by_file: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for d in loaded.errors() {
        by_file
            .entry(d.file.display().to_string())
            .or_default()
            .push(d);
    }
    for (file, errors) in by_file {
        let text = crate::source::summarize(errors.iter().copied());
        notifier.observe(Observation::InvalidInput {
            file: &file,
            errors: &text,
        });
    }
}

/// The steps worth printing for `o`: "ensure named volumes" without named volumes and "apply users"
/// without users do nothing for it.
fn shown_steps<'a>(
    p: &'a crate::plan::Plan,
    o: &'a Container,
) -> impl Iterator<Item = &'a crate::plan::Step> {
    use crate::plan::Step;
    let has_volumes = serde_json::to_value(&o.spec.volumes)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|v| {
            v.iter()
                .any(|m| m.get("name").is_some_and(|n| !n.is_null()))
        });
    let has_users = !o.spec.users.is_empty();
    p.steps.iter().filter(move |s| match s {
        Step::EnsureVolumes => has_volumes,
        Step::ApplyUsers => has_users,
        _ => true,
    })
}

/// One object of `dockop plan -o json`: the plan (action, digests, drift, notes, steps), whether it
/// changes anything, and the field changes against the last applied spec.
fn plan_json(
    r: &Report,
    o: &Container,
    fields: &[crate::spec::diff::FieldChange],
) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.plan).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        let steps: Vec<String> = shown_steps(&r.plan, o).map(ToString::to_string).collect();
        m.insert("steps".into(), serde_json::json!(steps));
        m.insert("changes".into(), serde_json::json!(r.plan.changes()));
        m.insert("fieldChanges".into(), serde_json::json!(fields));
    }
    v
}

/// Prints the plan of one object; `fields` are the changes against the last applied spec (`None`: none
/// recorded).
fn print_plan(r: &Report, o: &Container, fields: Option<&[crate::spec::diff::FieldChange]>) {
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
    if p.changes()
        && let Some(fields) = fields
    {
        for f in fields {
            println!("  {f}");
        }
        if fields.is_empty() && p.drift.contains(&crate::plan::DriftKind::Spec) {
            // The spec hash covers the content of env files, which the last applied spec does not hold.
            let files: Vec<&str> = o
                .spec
                .env
                .iter()
                .filter_map(|e| e.value_from.as_ref().map(|f| f.file.as_str()))
                .collect();
            if files.is_empty() {
                println!("  ~ no field changed: this dockop shapes the container differently");
            } else {
                println!(
                    "  ~ no field changed: a file named by valueFrom.file (changed): {}",
                    files.join(", ")
                );
            }
        }
    }
    for n in &p.notes {
        println!("  # {n}");
    }
    if p.changes() {
        for (i, s) in shown_steps(p, o).enumerate() {
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
        // Serialized from the structs (field order as declared): byte for byte what `/status` serves.
        OutputFormat::Json => {
            let v = if name.is_some() {
                serde_json::to_string_pretty(&all[0])
            } else {
                serde_json::to_string_pretty(&all)
            };
            println!("{}", v.unwrap_or_default());
        }
        OutputFormat::Yaml => {
            let yaml = if name.is_some() {
                serde_saphyr::to_string(&all[0])
            } else {
                serde_saphyr::to_string(&all)
            };
            match yaml {
                Ok(y) => print!("{y}"),
                Err(e) => {
                    eprintln!("error: cannot write YAML: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        OutputFormat::Text => print_status_table(false, false, all.iter().map(|s| (None, s))),
        OutputFormat::Wide => print_status_table(false, true, all.iter().map(|s| (None, s))),
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
        OutputFormat::Yaml => match serde_saphyr::to_string(&rows) {
            Ok(y) => print!("{y}"),
            Err(e) => {
                eprintln!("error: cannot write YAML: {e}");
                return ExitCode::FAILURE;
            }
        },
        OutputFormat::Text => {
            print_status_table(true, false, rows.iter().map(|(h, o)| (Some(*h), *o)))
        }
        OutputFormat::Wide => {
            print_status_table(true, true, rows.iter().map(|(h, o)| (Some(*h), *o)))
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The status table; with a HOST column for a fleet view, and image, previous digest and container state
/// when `wide`.
fn print_status_table<'a>(
    with_host: bool,
    wide: bool,
    rows: impl Iterator<Item = (Option<&'a str>, &'a ObjectStatus)>,
) {
    let host_col = |h: &str| {
        if with_host {
            format!("{h:<22} ")
        } else {
            String::new()
        }
    };
    let extra_head = if wide {
        format!("{:<40} {:<20} {:<10} ", "IMAGE", "PREVIOUS", "STATE")
    } else {
        String::new()
    };
    println!(
        "{}{:<24} {:<6} {:<28} {:<20} {:<12} {extra_head}LAST CHANGE",
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
        let extra = if wide {
            format!(
                "{:<40} {:<20} {:<10} ",
                s.image,
                s.previous_digest
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), short),
                s.container_state.as_deref().unwrap_or("-")
            )
        } else {
            String::new()
        };
        println!(
            "{}{:<24} {:<6} {:<28} {:<20} {:<12} {extra}{}",
            host_col(host.unwrap_or_default()),
            s.name,
            ready,
            cond,
            s.current_digest.as_deref().map(short).unwrap_or_default(),
            s.app_version.as_deref().unwrap_or("-"),
            last
        );
    }
}

async fn rollback(
    global: &GlobalArgs,
    name: &str,
    files: &[PathBuf],
    metrics: Arc<Metrics>,
) -> ExitCode {
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
    if let Some(c) = status.last_change.as_ref().filter(|c| {
        c.action == ChangeAction::Update
            && c.result == ChangeResult::Succeeded
            && c.from_digest == c.to_digest
    }) {
        eprintln!(
            "error: the last change to {name} ({}) was to its spec, not its image digest ({}): `dockop rollback` goes back to a previous digest only\n  fix: revert the spec change in the file (or revert the git commit) and `dockop apply -f FILE`; under `dockop run` the reverted file or commit is applied on its own",
            c.at.format("%Y-%m-%d %H:%M:%S"),
            c.to_digest.as_deref().map_or_else(|| "-".to_owned(), short),
        );
        return ExitCode::FAILURE;
    }
    let Some(previous) = status.previous_digest.clone() else {
        eprintln!(
            "error: {name} has no previous digest to go back to (no successful update recorded yet)"
        );
        return ExitCode::FAILURE;
    };
    let desired = match crate::desired::DesiredContainer::load(&obj, store.spec_hash_key()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = match connect(global, &metrics).await {
        Ok(e) => e,
        Err(c) => return c,
    };
    let registry_digest = if obj.spec.digest.is_some() {
        obj.spec.digest.clone()
    } else {
        let creds = crate::engine::auth::credentials_for_host(desired.registry_host())
            .await
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
        metrics,
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

/// `dockop version`: dockop's version and git commit, then the engine's version and API. An unreachable
/// engine is reported on the `engine:` line and is not a failure.
async fn version(global: &GlobalArgs) -> ExitCode {
    println!(
        "dockop {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("DOCKOP_GIT_COMMIT")
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let endpoint = engine_endpoint(global).map_err(|e| e.to_string())?;
        let engine = DockerEngine::connect(&endpoint, Arc::default())
            .await
            .map_err(|e| e.to_string())?;
        engine.version().await.map_err(|e| e.to_string())
    })
    .await;
    match answer {
        Ok(Ok((version, api))) => println!("engine: Docker {version} (API {api})"),
        Ok(Err(e)) => println!("engine: unreachable ({e})"),
        Err(_) => println!("engine: unreachable (no answer within 5 s)"),
    }
    ExitCode::SUCCESS
}
