//! Users inside the container: created, password hash set, locked or unlocked through exec; removed ones
//! locked or deleted. Only accounts carrying the `dockop-managed` GECOS marker are ever touched.
//!
//! One pass is: one read exec ([`READ_SCRIPT`]: which tools the image has, the `passwd`/`shadow` lines of
//! the accounts that matter), a pure diff ([`plan_user`], [`plan_prune`]) and then, only for what differs,
//! one exec per change. A converged container costs exactly the read. Hashes travel only on `chpasswd -e`'s
//! stdin; they never reach an argv, an environment variable, a log line, an error or the status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::DesiredContainer;
use crate::engine::{Engine, ExecOutput};
use crate::spec::{User, UsersPrune};
use crate::status::{ObjectStatus, UserStatus};

/// GECOS comment marking accounts dockop manages.
pub const MARKER: &str = "dockop-managed";

/// What a users pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersReport {
    /// Something was changed (drift repaired).
    pub changed: bool,
    /// One line for people, never a hash.
    pub summary: String,
    /// An error that left some users unapplied (the others were applied).
    pub error: Option<String>,
}

/// Why users could not be reconciled at all.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UsersError {
    /// The image has neither shadow-utils nor busybox user tools.
    #[error(
        "users: the image has no useradd/chpasswd (shadow-utils) or busybox adduser; cannot manage users"
    )]
    NoTools,
    /// Exec failed.
    #[error("users: {0}")]
    Exec(String),
}

/// True when a previous pass may have created accounts that must now be locked or deleted.
pub fn may_have_managed(status: &ObjectStatus) -> bool {
    !status.users.is_empty()
}

/// The read: run as `sh -c READ_SCRIPT dockop-users NAME...`. Prints `B`, one `T tool` line per user tool
/// found, `P <passwd line>` for every account named in the arguments or carrying the marker, `S <shadow
/// line>` for those same accounts, then `E`. Filtering in the container keeps the output small whatever
/// the size of the account database (the engine keeps only the tail of large outputs); `B`/`E` prove
/// nothing was cut. No user data is part of the script: names arrive as positional arguments and are only
/// compared. `getent` first (NSS), the files when it is missing or fails.
const READ_SCRIPT: &str = r#"set -f
echo B
for t in useradd usermod userdel chpasswd adduser deluser; do
  command -v "$t" >/dev/null 2>&1 && echo "T $t"
done
has() { n=$1; shift; for a do [ "$a" = "$n" ] && return 0; done; return 1; }
PW=
if command -v getent >/dev/null 2>&1; then PW=$(getent passwd 2>/dev/null); fi
[ -n "$PW" ] || PW=$(cat /etc/passwd 2>/dev/null)
SW=
if command -v getent >/dev/null 2>&1; then SW=$(getent shadow 2>/dev/null); fi
[ -n "$SW" ] || SW=$(cat /etc/shadow 2>/dev/null)
K=" "
while IFS= read -r l || [ -n "$l" ]; do
  n=${l%%:*}
  [ -n "$n" ] || continue
  case "$l" in
    *:dockop-managed*) ;;
    *) has "$n" "$@" || continue ;;
  esac
  printf 'P %s\n' "$l"
  K="$K$n "
done <<EOF
$PW
EOF
while IFS= read -r l || [ -n "$l" ]; do
  n=${l%%:*}
  [ -n "$n" ] || continue
  case "$K" in *" $n "*) printf 'S %s\n' "$l" ;; esac
done <<EOF
$SW
EOF
echo E
"#;

/// `$0` of the read script (shows in `ps` inside the container).
const READ_ARG0: &str = "dockop-users";

/// Which user tools the image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tools {
    /// shadow-utils: `useradd`, `usermod`, `userdel`, `chpasswd`.
    Shadow,
    /// busybox: `adduser`, `deluser`, `chpasswd`.
    Busybox,
}

impl Tools {
    fn detect(found: &BTreeSet<String>) -> Option<Tools> {
        let has = |t: &str| found.contains(t);
        if has("useradd") && has("usermod") && has("chpasswd") {
            Some(Tools::Shadow)
        } else if !has("useradd") && has("adduser") && has("chpasswd") {
            Some(Tools::Busybox)
        } else {
            None
        }
    }
}

/// One account as read from the container. `password` is the shadow password field (secret): never
/// printed, hence no `Debug`.
#[derive(Clone, PartialEq, Eq)]
struct Account {
    /// GECOS carries [`MARKER`].
    managed: bool,
    /// Shadow password field (`!` prefix = locked), or the passwd one when there is no shadow entry.
    password: String,
}

/// What the read found.
#[derive(Default)]
struct Snapshot {
    tools: BTreeSet<String>,
    accounts: BTreeMap<String, Account>,
}

/// True when `gecos` is dockop's marker (alone or as the first comma-separated GECOS field).
fn is_marker(gecos: &str) -> bool {
    gecos.split(',').next() == Some(MARKER)
}

/// Parses the read's output. Tolerates anything odd (NIS `+` lines, short lines, blank lines, invalid
/// UTF-8 already replaced by the engine); insists on the `B`...`E` frame so a cut output is never taken
/// for "these users do not exist".
fn parse_read(out: &ExecOutput) -> Result<Snapshot, UsersError> {
    let mut lines = out
        .stdout
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    if lines.by_ref().find(|l| !l.is_empty()) != Some("B") {
        if matches!(out.exit_code, 126 | 127) {
            // No `sh` at all: nothing can be managed in such an image.
            return Err(UsersError::NoTools);
        }
        return Err(UsersError::Exec(format!(
            "reading accounts failed (exit {}): {}",
            out.exit_code,
            one_line(&out.stderr)
        )));
    }
    let mut snap = Snapshot::default();
    let mut passwd: BTreeMap<String, (bool, String)> = BTreeMap::new();
    let mut shadow: BTreeMap<String, String> = BTreeMap::new();
    let mut ended = false;
    for line in lines {
        if line == "E" {
            ended = true;
            break;
        }
        if let Some(tool) = line.strip_prefix("T ") {
            snap.tools.insert(tool.trim().to_owned());
        } else if let Some(entry) = line.strip_prefix("P ") {
            let f: Vec<&str> = entry.split(':').collect();
            let name = f[0];
            if f.len() < 5 || name.is_empty() || name.starts_with(['+', '-']) {
                continue;
            }
            // The first entry wins, as for getent.
            passwd
                .entry(name.to_owned())
                .or_insert_with(|| (is_marker(f[4]), f[1].to_owned()));
        } else if let Some(entry) = line.strip_prefix("S ") {
            let mut f = entry.splitn(3, ':');
            if let (Some(name), Some(pw)) = (f.next(), f.next())
                && !name.is_empty()
            {
                shadow
                    .entry(name.to_owned())
                    .or_insert_with(|| pw.to_owned());
            }
        }
    }
    if !ended {
        return Err(UsersError::Exec(
            "the account listing read from the container was cut short".to_owned(),
        ));
    }
    for (name, (managed, pw)) in passwd {
        let password = match shadow.remove(&name) {
            Some(s) => s,
            // No shadow entry: the passwd field is the password, unless it points to shadow.
            None if pw == "x" => "!".to_owned(),
            None => pw,
        };
        snap.accounts.insert(name, Account { managed, password });
    }
    Ok(snap)
}

/// One change to one account.
#[derive(Clone, PartialEq, Eq)]
enum Action {
    /// Create the account (with the marker, no password).
    Create,
    /// Write this shadow password field (a hash, `!`-prefixed when locked) with `chpasswd -e`.
    SetPassword(String),
    /// Lock (`!` prefix).
    Lock,
    /// Unlock (drop the `!` prefix).
    Unlock,
    /// Delete the account (home kept).
    Delete,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Create => "Create",
            Action::SetPassword(_) => "SetPassword([redacted])",
            Action::Lock => "Lock",
            Action::Unlock => "Unlock",
            Action::Delete => "Delete",
        })
    }
}

impl Action {
    /// For logs.
    fn kind(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::SetPassword(_) => "set_password",
            Action::Lock => "lock",
            Action::Unlock => "unlock",
            Action::Delete => "delete",
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Action::Create => "created",
            Action::SetPassword(_) => "set password of",
            Action::Lock => "locked",
            Action::Unlock => "unlocked",
            Action::Delete => "deleted",
        }
    }
}

/// A password field that starts with `!` is locked.
fn is_locked(field: &str) -> bool {
    field.starts_with('!')
}

/// The changes that bring `current` (None: no such account) to `hash`/`locked`. `current` must be managed.
fn plan_user(current: Option<&str>, hash: Option<&str>, locked: bool) -> Vec<Action> {
    let mut actions = Vec::new();
    // A fresh account has no password: `!`, as useradd and busybox adduser -D leave it.
    let current = match current {
        Some(c) => c,
        None => {
            actions.push(Action::Create);
            "!"
        }
    };
    match hash {
        Some(h) => {
            let target = if locked {
                format!("!{h}")
            } else {
                h.to_owned()
            };
            if current == target {
            } else if current.strip_prefix('!').unwrap_or(current) == h {
                actions.push(if locked { Action::Lock } else { Action::Unlock });
            } else {
                // One write sets hash and lock state together: no window with the new password unlocked.
                actions.push(Action::SetPassword(target));
            }
        }
        None => {
            // No password configured: dockop leaves the hash alone and keeps only the lock state. Unlocking
            // an account without a hash would make it passwordless, so that is never done.
            if locked && !is_locked(current) {
                actions.push(Action::Lock);
            } else if !locked && is_locked(current) && current[1..].starts_with('$') {
                actions.push(Action::Unlock);
            }
        }
    }
    actions
}

/// What happens to a managed account no longer in the spec.
fn plan_prune(current: &str, prune: UsersPrune) -> Option<Action> {
    match prune {
        UsersPrune::Lock if !is_locked(current) && !current.starts_with('*') => Some(Action::Lock),
        UsersPrune::Lock => None,
        UsersPrune::Delete => Some(Action::Delete),
    }
}

/// `^[a-z_][a-z0-9_-]{0,31}$`, checked again here: names go into argv elements and stdin lines.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=32).contains(&b.len())
        && matches!(b[0], b'a'..=b'z' | b'_')
        && b[1..]
            .iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// The hash configured for `user`: inline, or read from `passwordFile` now (so rotating the file rotates
/// the password). Errors name the user and the file, never the content.
fn desired_hash(user: &User) -> Result<Option<String>, String> {
    if let Some(h) = &user.password_hash {
        return Ok(Some(h.expose().trim().to_owned()));
    }
    let Some(file) = &user.password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("user {}: cannot read passwordFile {file}: {e}", user.name))?;
    let hash = text.trim().to_owned();
    crate::spec::password::check_hash_syntax(&hash).map_err(|why| {
        format!(
            "user {}: passwordFile {file} does not hold a usable hash: {why}",
            user.name
        )
    })?;
    Ok(Some(hash))
}

/// First line of `s`, short, with anything that looks like a crypt hash replaced.
fn one_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line
        .split(' ')
        .map(|w| match w.find('$') {
            Some(i) => format!("{}[redacted]", &w[..i]),
            None => w.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    if out.len() > 200 {
        let mut cut = 200;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    if out.is_empty() {
        "no error output".to_owned()
    } else {
        out
    }
}

/// Runs one mutating command; `Err` carries a message without secrets.
async fn run(
    engine: &dyn Engine,
    id: &str,
    argv: &[&str],
    stdin: Option<&[u8]>,
) -> Result<(), String> {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    match engine.exec(id, &argv, stdin).await {
        Ok(out) if out.exit_code == 0 => Ok(()),
        Ok(out) => Err(format!(
            "{} failed (exit {}): {}",
            argv[0],
            out.exit_code,
            one_line(&out.stderr)
        )),
        Err(e) => Err(format!("{} failed: {e}", argv[0])),
    }
}

/// Carries out `action` on `name`; `current` is the account's password field before it (for busybox lock
/// and unlock, which rewrite the field through `chpasswd -e`).
async fn perform(
    engine: &dyn Engine,
    id: &str,
    tools: Tools,
    name: &str,
    action: &Action,
    current: &str,
) -> Result<(), String> {
    let chpasswd = |field: &str| format!("{name}:{field}\n");
    match (tools, action) {
        (Tools::Shadow, Action::Create) => {
            run(engine, id, &["useradd", "-m", "-c", MARKER, name], None).await
        }
        (Tools::Busybox, Action::Create) => {
            run(engine, id, &["adduser", "-D", "-g", MARKER, name], None).await
        }
        (_, Action::SetPassword(field)) => {
            let line = chpasswd(field);
            run(engine, id, &["chpasswd", "-e"], Some(line.as_bytes())).await
        }
        (Tools::Shadow, Action::Lock) => run(engine, id, &["usermod", "-L", name], None).await,
        (Tools::Shadow, Action::Unlock) => run(engine, id, &["usermod", "-U", name], None).await,
        (Tools::Busybox, Action::Lock) => {
            let line = chpasswd(&format!("!{current}"));
            run(engine, id, &["chpasswd", "-e"], Some(line.as_bytes())).await
        }
        (Tools::Busybox, Action::Unlock) => {
            let line = chpasswd(current.strip_prefix('!').unwrap_or(current));
            run(engine, id, &["chpasswd", "-e"], Some(line.as_bytes())).await
        }
        (Tools::Shadow, Action::Delete) => run(engine, id, &["userdel", name], None).await,
        (Tools::Busybox, Action::Delete) => run(engine, id, &["deluser", name], None).await,
    }
}

/// Reconciles users in container `id`.
#[tracing::instrument(name = "users", skip_all, fields(object = %desired.name))]
pub async fn apply(
    engine: &dyn Engine,
    id: &str,
    desired: &DesiredContainer,
    status: &mut ObjectStatus,
) -> Result<UsersReport, UsersError> {
    let spec_users = &desired.spec.users;
    let mut errors: Vec<String> = Vec::new();

    // 1. Read: names from the spec and from status (accounts an earlier pass may have created).
    let mut names: Vec<&str> = Vec::new();
    for n in spec_users
        .iter()
        .map(|u| u.name.as_str())
        .chain(status.users.iter().map(|u| u.name.as_str()))
    {
        if valid_name(n) && !names.contains(&n) {
            names.push(n);
        }
    }
    let mut argv = vec!["sh".to_owned(), "-c".to_owned(), READ_SCRIPT.to_owned()];
    argv.push(READ_ARG0.to_owned());
    argv.extend(names.iter().map(|n| (*n).to_owned()));
    let out = engine
        .exec(id, &argv, None)
        .await
        .map_err(|e| UsersError::Exec(format!("reading accounts: {e}")))?;
    let mut snap = parse_read(&out)?;

    // 2. Diff, all of it before any change, so a missing tool set changes nothing.
    let mut plans: Vec<(String, Vec<Action>)> = Vec::new();
    let mut spec_names = BTreeSet::new();
    for user in spec_users {
        spec_names.insert(user.name.as_str());
        if !valid_name(&user.name) {
            errors.push(format!("user {:?}: not a valid user name", user.name));
            continue;
        }
        let current = snap.accounts.get(&user.name);
        if let Some(acc) = current
            && !acc.managed
        {
            errors.push(format!(
                "user {}: exists and is not managed by dockop (no {MARKER} GECOS marker); left untouched",
                user.name
            ));
            continue;
        }
        let hash = match desired_hash(user) {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let actions = plan_user(
            current.map(|a| a.password.as_str()),
            hash.as_deref(),
            user.locked,
        );
        if !actions.is_empty() {
            plans.push((user.name.clone(), actions));
        }
    }
    for (name, acc) in &snap.accounts {
        if acc.managed
            && !spec_names.contains(name.as_str())
            && let Some(action) = plan_prune(&acc.password, desired.spec.users_prune)
        {
            plans.push((name.clone(), vec![action]));
        }
    }

    // 3. Change what differs.
    let mut done: Vec<String> = Vec::new();
    if !plans.is_empty() {
        let Some(tools) = Tools::detect(&snap.tools) else {
            return Err(UsersError::NoTools);
        };
        for (name, actions) in &plans {
            for action in actions {
                let current = snap
                    .accounts
                    .get(name)
                    .map(|a| a.password.clone())
                    .unwrap_or_default();
                match perform(engine, id, tools, name, action, &current).await {
                    Ok(()) => {
                        tracing::info!(user = %name, action = action.kind(), "user changed");
                        done.push(format!("{} {name}", action.verb()));
                        match action {
                            Action::Create => {
                                snap.accounts.insert(
                                    name.clone(),
                                    Account {
                                        managed: true,
                                        password: "!".to_owned(),
                                    },
                                );
                            }
                            Action::Delete => {
                                snap.accounts.remove(name);
                            }
                            Action::SetPassword(f) => {
                                if let Some(a) = snap.accounts.get_mut(name) {
                                    a.password.clone_from(f);
                                }
                            }
                            Action::Lock => {
                                if let Some(a) = snap.accounts.get_mut(name) {
                                    a.password.insert(0, '!');
                                }
                            }
                            Action::Unlock => {
                                if let Some(a) = snap.accounts.get_mut(name)
                                    && a.password.starts_with('!')
                                {
                                    a.password.remove(0);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(user = %name, action = action.kind(), error = %e, "user change failed");
                        errors.push(format!("user {name}: {e}"));
                        break;
                    }
                }
            }
        }
    }

    // 4. Status: the managed accounts now in the container, spec order first (never a hash).
    let user_status = |name: &str, acc: &Account| {
        let bare = acc.password.strip_prefix('!').unwrap_or(&acc.password);
        UserStatus {
            name: name.to_owned(),
            password_set: bare.starts_with('$'),
            locked: is_locked(&acc.password),
        }
    };
    let mut users: Vec<UserStatus> = Vec::new();
    for user in spec_users {
        if let Some(acc) = snap.accounts.get(&user.name).filter(|a| a.managed) {
            users.push(user_status(&user.name, acc));
        }
    }
    for (name, acc) in &snap.accounts {
        if acc.managed && !spec_names.contains(name.as_str()) {
            users.push(user_status(name, acc));
        }
    }
    status.users = users;

    Ok(UsersReport {
        changed: !done.is_empty(),
        summary: if done.is_empty() {
            "converged".to_owned()
        } else {
            done.join(", ")
        },
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::{ContainerInfo, RunState};
    use crate::spec::{ApiVersion, Container, ContainerSpec, Kind, Metadata};

    const ID: &str = "c001";

    fn yes(c: char) -> String {
        format!("$y$j9T${}${}", "s".repeat(22), c.to_string().repeat(43))
    }

    /// A container's account database and every command run against it.
    #[derive(Default)]
    struct Sim {
        tools: Vec<&'static str>,
        /// name -> (gecos, password field)
        accounts: BTreeMap<String, (String, String)>,
        /// Every exec: `read` for the read, else the argv joined.
        log: Vec<String>,
        /// Every stdin given.
        stdin: Vec<String>,
        /// Raw lines added to the read output (odd entries).
        junk: Vec<String>,
        /// Drop the `E` line (output cut).
        cut: bool,
        /// Commands (argv[0]) that fail, echoing their stdin to stderr like a careless tool would.
        fail: Vec<&'static str>,
    }

    impl Sim {
        fn shadow() -> Self {
            Self {
                tools: vec!["useradd", "usermod", "userdel", "chpasswd"],
                ..Self::default()
            }
        }
        fn busybox() -> Self {
            Self {
                tools: vec!["adduser", "deluser", "chpasswd"],
                ..Self::default()
            }
        }
        fn add(&mut self, name: &str, gecos: &str, pw: &str) {
            self.accounts
                .insert(name.to_owned(), (gecos.to_owned(), pw.to_owned()));
        }
        fn pw(&self, name: &str) -> Option<String> {
            self.accounts.get(name).map(|a| a.1.clone())
        }

        fn handle(&mut self, argv: &[String], stdin: Option<&[u8]>) -> ExecOutput {
            let ok = ExecOutput::default();
            let fail = |code: i64, err: String| ExecOutput {
                exit_code: code,
                stdout: String::new(),
                stderr: err,
            };
            let input = stdin.map(|s| String::from_utf8_lossy(s).into_owned());
            if argv[0] == "sh" {
                assert_eq!(argv[1], "-c");
                assert_eq!(argv[2], READ_SCRIPT);
                assert!(stdin.is_none());
                self.log.push("read".into());
                let mut out = String::from("B\n");
                for t in &self.tools {
                    out.push_str(&format!("T {t}\n"));
                }
                for (n, (gecos, _)) in &self.accounts {
                    out.push_str(&format!("P {n}:x:1000:1000:{gecos}:/home/{n}:/bin/sh\n"));
                }
                for j in &self.junk {
                    out.push_str(j);
                    out.push('\n');
                }
                for (n, (_, pw)) in &self.accounts {
                    out.push_str(&format!("S {n}:{pw}:20000:0:99999:7:::\n"));
                }
                if !self.cut {
                    out.push_str("E\n");
                }
                return ExecOutput {
                    exit_code: 0,
                    stdout: out,
                    stderr: String::new(),
                };
            }
            self.log.push(argv.join(" "));
            if let Some(i) = &input {
                self.stdin.push(i.clone());
            }
            if self.fail.contains(&argv[0].as_str()) {
                return fail(
                    1,
                    format!(
                        "{}: cannot apply line {}",
                        argv[0],
                        input.unwrap_or_default()
                    ),
                );
            }
            let name = argv.last().cloned().unwrap_or_default();
            match argv[0].as_str() {
                "useradd" | "adduser" => {
                    if self.accounts.contains_key(&name) {
                        return fail(9, format!("user '{name}' already exists"));
                    }
                    let flag = if argv[0] == "useradd" { "-c" } else { "-g" };
                    let i = argv.iter().position(|a| a == flag).expect("marker flag");
                    let gecos = argv[i + 1].clone();
                    self.add(&name, &gecos, "!");
                    ok
                }
                "chpasswd" => {
                    assert_eq!(argv, ["chpasswd", "-e"]);
                    for line in input.unwrap_or_default().lines() {
                        let (n, f) = line.split_once(':').expect("name:hash");
                        match self.accounts.get_mut(n) {
                            Some(a) => a.1 = f.to_owned(),
                            None => return fail(1, format!("line 1: user '{n}' does not exist")),
                        }
                    }
                    ok
                }
                "usermod" => {
                    let a = self
                        .accounts
                        .get_mut(&name)
                        .expect("usermod on a missing user");
                    match argv[1].as_str() {
                        "-L" if !a.1.starts_with('!') => a.1.insert(0, '!'),
                        "-U" if a.1.starts_with('!') => {
                            a.1.remove(0);
                        }
                        _ => {}
                    }
                    ok
                }
                "userdel" | "deluser" => {
                    self.accounts.remove(&name);
                    ok
                }
                other => fail(127, format!("{other}: not found")),
            }
        }
    }

    fn setup(sim: Sim) -> (FakeEngine, Arc<Mutex<Sim>>) {
        let engine = FakeEngine::new();
        engine.state().containers.insert(
            ID.to_owned(),
            ContainerInfo {
                id: ID.to_owned(),
                name: "web".into(),
                labels: BTreeMap::new(),
                state: RunState::Running,
                exit_code: 0,
                oom_killed: false,
                started_at: None,
                image_id: "img".into(),
                ip_address: None,
                engine_host: None,
            },
        );
        let sim = Arc::new(Mutex::new(sim));
        let s = sim.clone();
        engine.state().exec = Some(Arc::new(move |_id, argv, stdin| {
            s.lock().unwrap().handle(argv, stdin)
        }));
        (engine, sim)
    }

    /// `users:` and `usersPrune:` YAML lines under `spec`.
    fn desired(users_yaml: &str) -> DesiredContainer {
        let yaml = format!("image: 127.0.0.1:5000/web:v1\n{users_yaml}");
        let spec: ContainerSpec = serde_saphyr::from_str(&yaml).expect("spec");
        let c = Container {
            api_version: ApiVersion::V1Alpha1,
            kind: Kind::Container,
            metadata: Metadata {
                name: "web".into(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            },
            spec,
            status: None,
        };
        DesiredContainer::build(&c, None).expect("desired")
    }

    fn users(list: &[(&str, Option<&str>, bool)]) -> String {
        let mut s = String::from("users:\n");
        if list.is_empty() {
            return "users: []\n".into();
        }
        for (name, hash, locked) in list {
            s.push_str(&format!("  - name: {name}\n"));
            if let Some(h) = hash {
                s.push_str(&format!("    passwordHash: '{h}'\n"));
            }
            if *locked {
                s.push_str("    locked: true\n");
            }
        }
        s
    }

    async fn pass(
        engine: &FakeEngine,
        sim: &Arc<Mutex<Sim>>,
        d: &DesiredContainer,
        status: &mut ObjectStatus,
    ) -> (Result<UsersReport, UsersError>, Vec<String>) {
        sim.lock().unwrap().log.clear();
        let r = apply(engine, ID, d, status).await;
        let log = std::mem::take(&mut sim.lock().unwrap().log);
        // Whatever happened, no hash ever reaches an argv, the report or the status.
        for line in &log {
            assert!(!line.contains('$'), "hash on a command line: {line}");
        }
        let shown = format!("{r:?} {}", serde_json::to_string(&status.users).unwrap());
        assert!(
            !shown.contains("$y$j9T$") && !shown.contains("sss"),
            "hash leaked: {shown}"
        );
        (r, log)
    }

    fn st(name: &str, password_set: bool, locked: bool) -> UserStatus {
        UserStatus {
            name: name.into(),
            password_set,
            locked,
        }
    }

    #[tokio::test]
    async fn creates_users_with_hashes_through_stdin() {
        let (engine, sim) = setup(Sim::shadow());
        let (a, b) = (yes('a'), yes('b'));
        let d = desired(&users(&[
            ("alice", Some(&a), false),
            ("bob", Some(&b), true),
            ("carol", None, false),
        ]));
        let mut status = ObjectStatus::new("web");
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        let r = r.unwrap();
        assert_eq!(
            log,
            [
                "read",
                "useradd -m -c dockop-managed alice",
                "chpasswd -e",
                "useradd -m -c dockop-managed bob",
                "chpasswd -e",
                "useradd -m -c dockop-managed carol",
            ]
        );
        let s = sim.lock().unwrap();
        assert_eq!(s.stdin, [format!("alice:{a}\n"), format!("bob:!{b}\n")]);
        assert_eq!(s.pw("alice"), Some(a.clone()));
        assert_eq!(s.pw("bob"), Some(format!("!{b}")));
        assert_eq!(s.pw("carol").as_deref(), Some("!"));
        assert!(r.changed);
        assert_eq!(r.error, None);
        assert_eq!(
            r.summary,
            "created alice, set password of alice, created bob, set password of bob, created carol"
        );
        assert_eq!(
            status.users,
            [
                st("alice", true, false),
                st("bob", true, true),
                st("carol", false, true)
            ]
        );
    }

    #[tokio::test]
    async fn converged_is_one_read() {
        let (engine, sim) = setup(Sim::shadow());
        let d = desired(&users(&[
            ("alice", Some(&yes('a')), false),
            ("bob", Some(&yes('b')), true),
            ("carol", None, false),
        ]));
        let mut status = ObjectStatus::new("web");
        pass(&engine, &sim, &d, &mut status).await.0.unwrap();
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read"]);
        let r = r.unwrap();
        assert!(!r.changed);
        assert_eq!(r.summary, "converged");
        assert_eq!(r.error, None);
    }

    #[tokio::test]
    async fn changed_hash_is_rewritten() {
        let (engine, sim) = setup(Sim::shadow());
        let mut status = ObjectStatus::new("web");
        let d1 = desired(&users(&[("alice", Some(&yes('a')), false)]));
        pass(&engine, &sim, &d1, &mut status).await.0.unwrap();
        sim.lock().unwrap().stdin.clear();
        let d2 = desired(&users(&[("alice", Some(&yes('c')), false)]));
        let (r, log) = pass(&engine, &sim, &d2, &mut status).await;
        assert_eq!(log, ["read", "chpasswd -e"]);
        assert_eq!(r.unwrap().summary, "set password of alice");
        assert_eq!(sim.lock().unwrap().stdin, [format!("alice:{}\n", yes('c'))]);
        // A new hash on a locked account is written locked, in one go.
        let d3 = desired(&users(&[("alice", Some(&yes('d')), true)]));
        let (_, log) = pass(&engine, &sim, &d3, &mut status).await;
        assert_eq!(log, ["read", "chpasswd -e"]);
        assert_eq!(
            sim.lock().unwrap().pw("alice"),
            Some(format!("!{}", yes('d')))
        );
    }

    #[tokio::test]
    async fn lock_and_unlock() {
        let (engine, sim) = setup(Sim::shadow());
        let mut status = ObjectStatus::new("web");
        let h = yes('a');
        pass(
            &engine,
            &sim,
            &desired(&users(&[("alice", Some(&h), false)])),
            &mut status,
        )
        .await
        .0
        .unwrap();
        let (r, log) = pass(
            &engine,
            &sim,
            &desired(&users(&[("alice", Some(&h), true)])),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read", "usermod -L alice"]);
        assert_eq!(r.unwrap().summary, "locked alice");
        assert_eq!(status.users, [st("alice", true, true)]);
        let (r, log) = pass(
            &engine,
            &sim,
            &desired(&users(&[("alice", Some(&h), false)])),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read", "usermod -U alice"]);
        assert_eq!(r.unwrap().summary, "unlocked alice");
        assert_eq!(sim.lock().unwrap().pw("alice"), Some(h));
        // Without a configured hash: lock/unlock only, and never unlock into a passwordless account.
        let (_, log) = pass(
            &engine,
            &sim,
            &desired(&users(&[("alice", None, true)])),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read", "usermod -L alice"]);
        let (_, log) = pass(
            &engine,
            &sim,
            &desired(&users(&[("alice", None, false)])),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read", "usermod -U alice"]);
        sim.lock().unwrap().add("dave", MARKER, "!");
        let (_, log) = pass(
            &engine,
            &sim,
            &desired(&users(&[("alice", None, false), ("dave", None, false)])),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read"]);
    }

    #[tokio::test]
    async fn removed_users_are_locked_by_default() {
        let (engine, sim) = setup(Sim::shadow());
        let mut status = ObjectStatus::new("web");
        let (a, b) = (yes('a'), yes('b'));
        pass(
            &engine,
            &sim,
            &desired(&users(&[
                ("alice", Some(&a), false),
                ("bob", Some(&b), false),
            ])),
            &mut status,
        )
        .await
        .0
        .unwrap();
        let d = desired(&users(&[("alice", Some(&a), false)]));
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read", "usermod -L bob"]);
        assert_eq!(r.unwrap().summary, "locked bob");
        assert_eq!(sim.lock().unwrap().pw("bob"), Some(format!("!{b}")));
        assert_eq!(
            status.users,
            [st("alice", true, false), st("bob", true, true)]
        );
        // Stays locked: converged.
        let (_, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read"]);
        // Everything removed: still locked, nothing deleted.
        let (_, log) = pass(&engine, &sim, &desired("users: []\n"), &mut status).await;
        assert_eq!(log, ["read", "usermod -L alice"]);
        assert!(may_have_managed(&status));
    }

    #[tokio::test]
    async fn removed_users_are_deleted_with_prune_delete() {
        let (engine, sim) = setup(Sim::shadow());
        let mut status = ObjectStatus::new("web");
        pass(
            &engine,
            &sim,
            &desired(&users(&[
                ("alice", Some(&yes('a')), false),
                ("bob", None, false),
            ])),
            &mut status,
        )
        .await
        .0
        .unwrap();
        let d = desired(&format!(
            "{}usersPrune: delete\n",
            users(&[("alice", Some(&yes('a')), false)])
        ));
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read", "userdel bob"]);
        assert_eq!(r.unwrap().summary, "deleted bob");
        assert!(sim.lock().unwrap().pw("bob").is_none());
        assert_eq!(status.users, [st("alice", true, false)]);
        let d = desired("users: []\nusersPrune: delete\n");
        pass(&engine, &sim, &d, &mut status).await.0.unwrap();
        assert!(status.users.is_empty());
        assert!(!may_have_managed(&status));
    }

    #[tokio::test]
    async fn unmanaged_accounts_are_refused_and_never_touched() {
        let mut sim = Sim::shadow();
        sim.add("www", "web server", "*");
        sim.add("root", "root", "*");
        let (engine, sim) = setup(sim);
        let mut status = ObjectStatus::new("web");
        let d = desired(&format!(
            "{}usersPrune: delete\n",
            users(&[
                ("www", Some(&yes('w')), false),
                ("alice", Some(&yes('a')), false)
            ])
        ));
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        let r = r.unwrap();
        assert_eq!(
            log,
            ["read", "useradd -m -c dockop-managed alice", "chpasswd -e"]
        );
        let err = r.error.unwrap();
        assert!(
            err.contains("user www: exists and is not managed by dockop"),
            "{err}"
        );
        assert_eq!(sim.lock().unwrap().pw("www").as_deref(), Some("*"));
        assert_eq!(status.users, [st("alice", true, false)]);
        // Not pruned either, even with usersPrune: delete and nothing in the spec.
        let (_, log) = pass(
            &engine,
            &sim,
            &desired("users: []\nusersPrune: delete\n"),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read", "userdel alice"]);
        assert!(sim.lock().unwrap().pw("root").is_some());
    }

    #[tokio::test]
    async fn password_file_is_read_every_pass_and_a_missing_one_spares_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bob");
        let (engine, sim) = setup(Sim::shadow());
        let mut status = ObjectStatus::new("web");
        let yaml = format!(
            "users:\n  - {{name: alice, passwordHash: '{}'}}\n  - {{name: bob, passwordFile: {}}}\n",
            yes('a'),
            file.display()
        );
        let d = desired(&yaml);
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        let r = r.unwrap();
        assert_eq!(
            log,
            ["read", "useradd -m -c dockop-managed alice", "chpasswd -e"]
        );
        let err = r.error.unwrap();
        assert!(
            err.contains("user bob") && err.contains(&file.display().to_string()),
            "{err}"
        );
        assert!(r.changed);

        std::fs::write(&file, format!("{}\n", yes('b'))).unwrap();
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(r.unwrap().error, None);
        assert_eq!(
            log,
            ["read", "useradd -m -c dockop-managed bob", "chpasswd -e"]
        );
        assert_eq!(sim.lock().unwrap().pw("bob"), Some(yes('b')));

        // Rotating the file rotates the password.
        std::fs::write(&file, yes('c')).unwrap();
        let (_, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read", "chpasswd -e"]);
        assert_eq!(sim.lock().unwrap().pw("bob"), Some(yes('c')));

        // Garbage in the file: refused, named, content not echoed.
        std::fs::write(&file, "hunter2\n").unwrap();
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read"]);
        let err = r.unwrap().error.unwrap();
        assert!(
            err.contains("user bob") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn no_tools_changes_nothing() {
        let mut sim = Sim::shadow();
        sim.tools = vec!["chpasswd"];
        let (engine, sim) = setup(sim);
        let mut status = ObjectStatus::new("web");
        let d = desired(&users(&[("alice", Some(&yes('a')), false)]));
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(r, Err(UsersError::NoTools));
        assert_eq!(log, ["read"]);
        assert!(status.users.is_empty());
        // No shell at all: the same.
        sim.lock().unwrap().tools.clear();
        engine.state().exec = Some(Arc::new(|_, _, _| ExecOutput {
            exit_code: 127,
            stdout: String::new(),
            stderr: "exec: \"sh\": executable file not found in $PATH".into(),
        }));
        assert_eq!(
            apply(&engine, ID, &d, &mut status).await,
            Err(UsersError::NoTools)
        );
    }

    #[tokio::test]
    async fn busybox_tools() {
        let (engine, sim) = setup(Sim::busybox());
        let mut status = ObjectStatus::new("web");
        let h = yes('a');
        let d = desired(&users(&[("alice", Some(&h), false), ("bob", None, false)]));
        let (_, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(
            log,
            [
                "read",
                "adduser -D -g dockop-managed alice",
                "chpasswd -e",
                "adduser -D -g dockop-managed bob"
            ]
        );
        let (_, log) = pass(
            &engine,
            &sim,
            &desired(&users(&[("alice", Some(&h), true), ("bob", None, false)])),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read", "chpasswd -e"]);
        assert_eq!(sim.lock().unwrap().pw("alice"), Some(format!("!{h}")));
        let (_, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read", "chpasswd -e"]);
        assert_eq!(sim.lock().unwrap().pw("alice"), Some(h.clone()));
        let (_, log) = pass(
            &engine,
            &sim,
            &desired(&format!(
                "{}usersPrune: delete\n",
                users(&[("alice", Some(&h), false)])
            )),
            &mut status,
        )
        .await;
        assert_eq!(log, ["read", "deluser bob"]);
        let (_, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read", "adduser -D -g dockop-managed bob"]);
    }

    #[tokio::test]
    async fn deleted_by_hand_is_recreated() {
        let (engine, sim) = setup(Sim::shadow());
        let mut status = ObjectStatus::new("web");
        let d = desired(&users(&[("alice", Some(&yes('a')), false)]));
        pass(&engine, &sim, &d, &mut status).await.0.unwrap();
        sim.lock().unwrap().accounts.remove("alice");
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(
            log,
            ["read", "useradd -m -c dockop-managed alice", "chpasswd -e"]
        );
        assert!(r.unwrap().changed);
    }

    #[tokio::test]
    async fn failures_are_per_user_and_never_show_the_hash() {
        let mut sim = Sim::shadow();
        sim.fail = vec!["chpasswd"];
        let (engine, sim) = setup(sim);
        let mut status = ObjectStatus::new("web");
        let d = desired(&users(&[
            ("alice", Some(&yes('a')), false),
            ("bob", None, true),
        ]));
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(
            log,
            [
                "read",
                "useradd -m -c dockop-managed alice",
                "chpasswd -e",
                "useradd -m -c dockop-managed bob"
            ]
        );
        let r = r.unwrap();
        let err = r.error.unwrap();
        assert!(
            err.starts_with("user alice: chpasswd failed (exit 1)"),
            "{err}"
        );
        assert!(!err.contains("sss"), "{err}");
        assert_eq!(r.summary, "created alice, created bob");
    }

    #[tokio::test]
    async fn odd_and_cut_outputs() {
        let mut sim = Sim::shadow();
        sim.junk = vec![
            String::new(),
            "P ".into(),
            "P +::::::".into(),
            "P -@netgroup".into(),
            "P no-colons-at-all".into(),
            "P short:x:1".into(),
            "S".into(),
            "S :".into(),
            "garbage \u{fffd}\u{fffd} line".into(),
            "P alice:x:1:1:not-the-marker:/:/bin/sh".into(),
        ];
        sim.add("alice", MARKER, "!");
        let (engine, sim) = setup(sim);
        let mut status = ObjectStatus::new("web");
        let d = desired(&users(&[("alice", None, true)]));
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read"]);
        assert_eq!(r.unwrap().error, None);
        assert_eq!(status.users, [st("alice", false, true)]);
        sim.lock().unwrap().cut = true;
        let (r, log) = pass(&engine, &sim, &d, &mut status).await;
        assert_eq!(log, ["read"]);
        assert!(matches!(r, Err(UsersError::Exec(m)) if m.contains("cut short")));
    }

    #[test]
    fn parse_takes_passwd_field_without_shadow() {
        let out = ExecOutput {
            exit_code: 0,
            stdout: format!(
                "B\nT adduser\nP a:{}:1:1:{MARKER},x:/:/bin/sh\nP b:x:2:2:{MARKER}:/:/bin/sh\nE\n",
                yes('a')
            ),
            stderr: String::new(),
        };
        let snap = parse_read(&out).unwrap();
        assert_eq!(snap.accounts["a"].password, yes('a'));
        assert!(snap.accounts["a"].managed);
        assert_eq!(snap.accounts["b"].password, "!");
    }

    #[test]
    fn names_and_redaction() {
        assert!(valid_name("alice") && valid_name("_a-1") && valid_name(&"a".repeat(32)));
        for bad in [
            "",
            "a;rm -rf /",
            "-a",
            "Alice",
            "a b",
            "a$",
            &"a".repeat(33),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(
            one_line("chpasswd: bad line alice:$y$j9T$abc$def\nmore"),
            "chpasswd: bad line alice:[redacted]"
        );
        assert!(READ_SCRIPT.contains(&format!("*:{MARKER}*")));
    }

    /// The read script itself, run by the local `sh` (and busybox `sh` when present) on this machine's
    /// account database: framed, finds root, ignores unknown names.
    #[test]
    fn read_script_runs_in_posix_shells() {
        for shell in [&["sh"][..], &["busybox", "sh"][..]] {
            let Ok(out) = std::process::Command::new(shell[0])
                .args(&shell[1..])
                .args([
                    "-c",
                    READ_SCRIPT,
                    READ_ARG0,
                    "root",
                    "no-such-user-x",
                    "a b",
                ])
                .output()
            else {
                continue;
            };
            let out = ExecOutput {
                exit_code: i64::from(out.status.code().unwrap_or(-1)),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
            assert_eq!(out.exit_code, 0, "{shell:?}: {}", out.stderr);
            let snap = parse_read(&out).unwrap();
            assert!(snap.accounts.contains_key("root"), "{shell:?}");
            assert!(!snap.accounts.contains_key("no-such-user-x"));
            assert!(out.stdout.lines().filter(|l| l.starts_with("P ")).count() <= 2);
        }
    }
}
