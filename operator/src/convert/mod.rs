//! `dockop convert`: Compose services -> `Container` documents. Pure (no engine): [`compose`] resolves
//! the files like `docker compose config`, [`convert`] maps each service key to a spec field or reports
//! it as `file:line: services.NAME.KEY: not supported (why / what to do)`.

pub mod compose;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use self::compose::{Env, Input, ReadError, V, Y, parse_env_file, resolve};
use crate::spec::Container;

/// Where secret-looking `env_file` values are expected instead: `/etc/dockop/secrets/NAME`.
pub const SECRETS_DIR: &str = "/etc/dockop/secrets";

/// Words that make an env variable name look secret.
const SECRET_WORDS: &[&str] = &["PASSWORD", "SECRET", "TOKEN", "KEY"];

/// One thing `convert` reports on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// File the key was written in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// `services.web.KEY`.
    pub path: String,
    /// What happened and what to do.
    pub message: String,
    /// Something was left out or changed (exit 1); otherwise a note (exit 0).
    pub left_out: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.path,
            self.message
        )
    }
}

/// The result of a conversion.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// One object per service, in file order.
    pub objects: Vec<Container>,
    /// What was left out or noted.
    pub reports: Vec<Report>,
}

impl Converted {
    /// True when every key was mapped.
    pub fn complete(&self) -> bool {
        !self.reports.iter().any(|r| r.left_out)
    }

    /// The objects as YAML documents separated by `---`.
    pub fn to_yaml(&self) -> String {
        self.objects
            .iter()
            .map(|o| {
                let mut doc = serde_saphyr::to_string(o).unwrap_or_default();
                if !doc.ends_with('\n') {
                    doc.push('\n');
                }
                doc
            })
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// Why nothing could be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// Reading the files (YAML, interpolation).
    #[error("reading the Compose files: {0}")]
    Read(#[from] ReadError),
    /// No `services:`.
    #[error("{0}: no services: nothing to convert")]
    NoServices(String),
}

/// Settings of one conversion.
pub struct Options<'a> {
    /// Project name (`-p`); default: top-level `name:`, else the first file's directory name.
    pub project: Option<String>,
    /// Variables for interpolation.
    pub env: Env,
    /// Reads an `env_file` (path resolved against the first file's directory); a failure leaves the file
    /// out with a report.
    pub read_file: &'a dyn Fn(&Path) -> std::io::Result<String>,
}

impl fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

/// Converts the Compose `inputs` (first file, then overrides).
pub fn convert(inputs: &[Input], opts: &Options<'_>) -> Result<Converted, ConvertError> {
    let root = resolve(inputs, &opts.env)?;
    let first = inputs.first().map(|i| i.path.clone()).unwrap_or_default();
    let files: Vec<PathBuf> = inputs.iter().map(|i| i.path.clone()).collect();
    let Some(services) = root.get("services").filter(|s| !s.entries().is_empty()) else {
        return Err(ConvertError::NoServices(first.display().to_string()));
    };
    let project = opts
        .project
        .clone()
        .or_else(|| root.get("name").and_then(Y::text).map(str::to_owned))
        .unwrap_or_else(|| {
            let dir = compose::base_dir(&first);
            std::path::absolute(&dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "default".to_owned())
        });
    let mut c = Conversion {
        files,
        base: compose::base_dir(&first),
        project: sanitize_project(&project),
        root: &root,
        opts,
        out: Converted::default(),
    };
    for (key, value) in root.entries() {
        match key.as_str() {
            "networks" | "volumes" => {
                for (n, decl) in value.entries() {
                    for (k, x) in decl.entries() {
                        if !matches!(k.as_str(), "name" | "external") && !k.starts_with("x-") {
                            let what = if key == "networks" {
                                "dockop creates a plain bridge network"
                            } else {
                                "dockop creates a plain local volume"
                            };
                            c.left_out(x, &format!("{key}.{n}.{k}"), &format!("not supported ({what}): create it beforehand with docker if it needs {k}"));
                        }
                    }
                }
            }
            "services" | "name" | "version" => {}
            k if k.starts_with("x-") => {}
            "secrets" | "configs" => c.left_out(value, key, "not supported (dockop has no secret or config objects): put the file on the host and mount it with a hostPath volume, or use env valueFrom.file"),
            _ => c.left_out(value, key, "not supported (not a Compose key dockop knows)"),
        }
    }
    let names: BTreeMap<String, String> = services
        .entries()
        .iter()
        .map(|(name, s)| (name.clone(), object_name(name, s)))
        .collect();
    for (name, service) in services.entries() {
        if let Some(o) = c.service(name, service, &names) {
            c.out.objects.push(o);
        }
    }
    Ok(c.out)
}

/// A DNS label from a service or container name: lowercase, `_` and `.` as `-`.
fn dns_label(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_owned()
}

fn object_name(service: &str, s: &Y) -> String {
    s.get("container_name")
        .and_then(Y::text)
        .map(dns_label)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| dns_label(service))
}

fn sanitize_project(p: &str) -> String {
    p.to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

struct Conversion<'a> {
    files: Vec<PathBuf>,
    base: PathBuf,
    project: String,
    root: &'a Y,
    opts: &'a Options<'a>,
    out: Converted,
}

/// Compose durations (`1m30s`, `10s`, `500ms`, `2h`) in whole seconds (rounded up).
fn duration_seconds(s: &str) -> Option<u64> {
    let mut total_ms: u64 = 0;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    if s.trim().is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            unit = "ms".into();
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let ms = match unit.as_str() {
            "h" => n * 3_600_000.0,
            "m" => n * 60_000.0,
            "s" => n * 1000.0,
            "ms" => n,
            "us" | "µs" => n / 1000.0,
            _ => return None,
        };
        total_ms += ms as u64;
    }
    if !num.is_empty() {
        // A bare number: seconds (stop_grace_period accepts it).
        total_ms += (num.parse::<f64>().ok()? * 1000.0) as u64;
    }
    Some(total_ms.div_ceil(1000))
}

/// Docker's byte sizes (`512m`, `1g`, `1024k`, `100000`; any case, optional `b`) as a Kubernetes
/// quantity (`512Mi`).
fn docker_size_to_quantity(s: &str) -> Option<String> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, unit) = match t
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (t.get(..i)?, t.get(i..)?),
        None => (t, ""),
    };
    if num.is_empty() {
        return None;
    }
    let suffix = match unit {
        "" => "",
        "k" => "Ki",
        "m" => "Mi",
        "g" => "Gi",
        "t" => "Ti",
        _ => return None,
    };
    let q = format!("{num}{suffix}");
    crate::spec::quantity::parse_bytes(&q).ok().map(|_| q)
}

/// Splits a shell-form string the way a POSIX shell would for simple words and quotes.
fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        ch => cur.push(ch),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        ch => cur.push(ch),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// A name holding PASSWORD, SECRET, TOKEN or KEY; `..._FILE` names hold a path, not the secret.
fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    !upper.ends_with("_FILE") && SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// `http(s)://HOST[:PORT][/PATH]` in a health command, for a local host: (port, path).
fn health_url(words: &[String]) -> Option<(u16, String)> {
    let joined = words.join(" ");
    let start = joined.find("http://").or_else(|| joined.find("https://"))?;
    let url = joined.get(start..)?;
    let url = url
        .split(|c: char| c.is_whitespace() || c == '\'' || c == '"')
        .next()?;
    let https = url.starts_with("https://");
    let rest = url.split_once("://")?.1;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, if https { 443 } else { 80 }),
    };
    if !matches!(host, "localhost" | "127.0.0.1" | "0.0.0.0" | "[::1]") || https {
        return None;
    }
    Some((port, path.to_owned()))
}

impl Conversion<'_> {
    fn report(&mut self, at: &Y, path: &str, message: &str, left_out: bool) {
        self.out.reports.push(Report {
            file: self.files.get(at.file).cloned().unwrap_or_default(),
            line: at.line,
            path: path.to_owned(),
            message: message.to_owned(),
            left_out,
        });
    }
    fn left_out(&mut self, at: &Y, path: &str, message: &str) {
        self.report(at, path, message, true);
    }
    fn note(&mut self, at: &Y, path: &str, message: &str) {
        self.report(at, path, message, false);
    }

    /// The Docker name of a Compose volume: its `name:`, external as is, else `PROJECT_VOLUME`.
    fn volume_name(&self, v: &str) -> String {
        self.top_level_name("volumes", v)
    }
    fn network_name(&self, n: &str) -> String {
        self.top_level_name("networks", n)
    }
    fn top_level_name(&self, kind: &str, key: &str) -> String {
        let decl = self.root.get(kind).and_then(|d| d.get(key));
        if let Some(name) = decl.and_then(|d| d.get("name")).and_then(Y::text) {
            return name.to_owned();
        }
        let external = decl
            .and_then(|d| d.get("external"))
            .is_some_and(|e| e.text() == Some("true") || e.get("name").is_some());
        if external {
            return decl
                .and_then(|d| d.get("external"))
                .and_then(|e| e.get("name"))
                .and_then(Y::text)
                .unwrap_or(key)
                .to_owned();
        }
        format!("{}_{key}", self.project)
    }

    #[allow(clippy::too_many_lines)]
    fn service(
        &mut self,
        service: &str,
        s: &Y,
        names: &BTreeMap<String, String>,
    ) -> Option<Container> {
        let here = |k: &str| format!("services.{service}.{k}");
        let name = names
            .get(service)
            .cloned()
            .unwrap_or_else(|| dns_label(service));
        let Some(image) = s.get("image").and_then(Y::text) else {
            self.left_out(
                s,
                &format!("services.{service}"),
                "not converted: it has no image (build it, push it to a registry and set image:)",
            );
            return None;
        };
        let mut spec = json!({"image": image});
        let mut labels = serde_json::Map::new();
        let mut networks: Vec<(String, Vec<String>)> = Vec::new();
        let mut ports: Vec<Value> = Vec::new();
        let mut host_network = false;
        let mut health: Option<(Y, Value)> = None;
        for (key, v) in s.entries() {
            let path = here(key);
            match key.as_str() {
                "image" | "container_name" => {}
                k if k.starts_with("x-") => {}
                "build" => self.note(v, &path, "ignored: dockop runs images from a registry; build and push it, image: names it"),
                "command" | "entrypoint" => {
                    let words = match &v.v {
                        V::Seq(items) => Some(items.iter().filter_map(Y::text).map(str::to_owned).collect()),
                        V::Scalar(t) => shell_words(t),
                        _ => None,
                    };
                    match words {
                        Some(w) => spec[key.as_str()] = json!(w),
                        None => self.left_out(v, &path, "not supported (unbalanced quotes): write it as a list"),
                    }
                }
                "environment" => {
                    let mut env = Vec::new();
                    for (k, val) in v.entries() {
                        if looks_secret(k) && (val.text().is_some() || self.opts.env.get(k).is_some()) {
                            env.push(self.secret(val, &path, k));
                            continue;
                        }
                        match (val.text(), self.opts.env.get(k)) {
                            (Some(t), _) => env.push(json!({"name": k, "value": t})),
                            (None, Some(from_env)) => env.push(json!({"name": k, "value": from_env})),
                            (None, None) => self.left_out(val, &format!("{path}.{k}"), "not set: it takes its value from the environment, which does not set it; set it when converting, or write value:"),
                        }
                    }
                    push_env(&mut spec, env);
                }
                "env_file" => self.env_file(v, &path, &mut spec),
                "ports" => {
                    for p in v.items() {
                        match self.port(p, &path) {
                            Some(mut list) => ports.append(&mut list),
                            None => self.left_out(p, &path, "not supported (a port range or an unreadable entry): list each port as HOST_IP:HOST:CONTAINER"),
                        }
                    }
                }
                "expose" => self.note(v, &path, "not needed: containers on a network reach each other's ports without it"),
                "volumes" => {
                    for item in v.items() {
                        self.volume(item, &path, &mut spec);
                    }
                }
                "tmpfs" => {
                    let list: Vec<&Y> = match &v.v {
                        V::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for t in list {
                        let Some(text) = t.text() else { continue };
                        let (mount, opts) = text.split_once(':').unwrap_or((text, ""));
                        let size = opts
                            .split(',')
                            .find_map(|o| o.strip_prefix("size="))
                            .and_then(docker_size_to_quantity);
                        push(&mut spec, "tmpfs", json!({"mountPath": mount, "size": size}));
                    }
                }
                "networks" => {
                    let entries: Vec<(String, Vec<String>, &Y)> = match &v.v {
                        V::Seq(items) => items
                            .iter()
                            .filter_map(|i| Some((i.text()?.to_owned(), Vec::new(), i)))
                            .collect(),
                        V::Map(m) => m
                            .iter()
                            .map(|(n, cfg)| {
                                let aliases = cfg
                                    .get("aliases")
                                    .map(|a| a.items().iter().filter_map(Y::text).map(str::to_owned).collect())
                                    .unwrap_or_default();
                                (n.clone(), aliases, cfg)
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    for (n, aliases, at) in entries {
                        if at.get("ipv4_address").is_some() || at.get("ipv6_address").is_some() {
                            self.left_out(at, &format!("{path}.{n}"), "fixed addresses are not supported: reach the container by name or alias");
                        }
                        networks.push((self.network_name(&n), aliases));
                    }
                }
                "network_mode" => match v.text() {
                    Some("host") => host_network = true,
                    Some("bridge") => {}
                    _ => self.left_out(v, &path, "not supported (only host and bridge): use networks:"),
                },
                "depends_on" => {
                    let deps: Vec<(&str, &Y)> = match &v.v {
                        V::Seq(items) => items.iter().filter_map(|i| Some((i.text()?, i))).collect(),
                        V::Map(m) => m.iter().map(|(k, c)| (k.as_str(), c)).collect(),
                        _ => Vec::new(),
                    };
                    for (d, at) in deps {
                        match names.get(d) {
                            Some(n) => push(&mut spec, "dependsOn", json!(n)),
                            None => self.left_out(at, &path, &format!("\"{d}\" is not a service in these files: left out")),
                        }
                    }
                }
                "restart" => match v.text().map(|t| t.split(':').next().unwrap_or(t)) {
                    Some(p @ ("no" | "always" | "unless-stopped" | "on-failure")) => {
                        spec["restart"] = json!(p);
                        if v.text().is_some_and(|t| t.contains(':')) {
                            self.note(v, &path, "the retry count is dropped: dockop's on-failure has no limit");
                        }
                    }
                    _ => self.left_out(v, &path, "not supported: use no, always, unless-stopped or on-failure"),
                },
                "healthcheck" => health = self.healthcheck(v, &path).map(|h| (v.clone(), h)),
                "mem_limit" => self.memory(v, &path, &mut spec),
                "cpus" => match v.text().and_then(|t| t.parse::<f64>().ok()) {
                    Some(c) => spec["resources"]["cpus"] = json!(c),
                    None => self.left_out(v, &path, "not a number of CPUs: left out"),
                },
                "pids_limit" => match v.text().and_then(|t| t.parse::<i64>().ok()).filter(|n| *n > 0) {
                    Some(n) => spec["resources"]["pids"] = json!(n),
                    None => self.note(v, &path, "no limit: left out"),
                },
                "deploy" => self.deploy(v, &path, &mut spec),
                "logging" => {
                    let mut l = serde_json::Map::new();
                    if let Some(d) = v.get("driver").and_then(Y::text) {
                        l.insert("driver".into(), json!(d));
                    }
                    let opts: serde_json::Map<String, Value> = v
                        .get("options")
                        .map(|o| o.entries().iter().filter_map(|(k, x)| Some((k.clone(), json!(x.text()?)))).collect())
                        .unwrap_or_default();
                    if !opts.is_empty() {
                        l.insert("options".into(), Value::Object(opts));
                    }
                    spec["logging"] = Value::Object(l);
                }
                "read_only" => spec["readOnlyRootFilesystem"] = json!(v.text() == Some("true")),
                "init" => spec["init"] = json!(v.text() == Some("true")),
                "cap_add" | "cap_drop" => {
                    let list = if key == "cap_add" { "add" } else { "drop" };
                    for c in v.items().iter().filter_map(Y::text) {
                        let c = c.to_ascii_uppercase();
                        let c = c.strip_prefix("CAP_").unwrap_or(&c).to_owned();
                        match spec["capabilities"][list].as_array_mut() {
                            Some(a) => a.push(json!(c)),
                            None => spec["capabilities"][list] = json!([c]),
                        }
                    }
                }
                "security_opt" => {
                    for o in v.items() {
                        match o.text() {
                            Some("no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true") => {
                                spec["noNewPrivileges"] = json!(true);
                            }
                            _ => self.left_out(o, &path, "not supported (only no-new-privileges): seccomp, AppArmor and SELinux options stay Docker's defaults"),
                        }
                    }
                }
                "extra_hosts" => {
                    for (h, ip) in v.entries() {
                        match ip.text() {
                            Some(ip) => push(&mut spec, "extraHosts", json!(format!("{h}:{}", ip.trim_start_matches('=')))),
                            None => self.left_out(ip, &path, "an entry without an address: left out"),
                        }
                    }
                }
                "hostname" => spec["hostname"] = json!(v.text()),
                "user" => spec["user"] = json!(v.text()),
                "working_dir" => spec["workingDir"] = json!(v.text()),
                "stop_grace_period" => match v.text().and_then(duration_seconds) {
                    Some(n) => spec["stopTimeoutSeconds"] = json!(n.min(3600)),
                    None => self.left_out(v, &path, "not a duration: left out"),
                },
                "labels" => {
                    for (k, val) in v.entries() {
                        if k.starts_with("dockop.dev/") {
                            self.left_out(val, &format!("{path}.{k}"), "reserved for dockop: left out");
                        } else {
                            labels.insert(k.clone(), json!(val.text().unwrap_or("")));
                        }
                    }
                }
                "privileged" if v.text() == Some("false") => {}
                "privileged" => self.left_out(v, &path, "not supported (dockop never runs privileged containers): add the capabilities it needs with cap_add"),
                "devices" | "ulimits" | "sysctls" | "dns" | "dns_search" | "links" | "external_links" | "pid" | "ipc" | "shm_size" | "stdin_open" | "tty" | "secrets" | "configs" | "profiles" | "scale" | "platform" | "volumes_from" | "cgroup_parent" | "userns_mode" | "domainname" | "mac_address" | "group_add" | "oom_score_adj" | "memswap_limit" | "mem_reservation" | "cpu_shares" | "cpuset" | "stop_signal" | "pull_policy" => {
                    self.left_out(v, &path, &format!("not supported (dockop's Container has no {key} field): left out; run it with plain Docker if the app needs it"));
                }
                _ => self.left_out(v, &path, "not supported (unknown to dockop convert): left out"),
            }
        }
        // Compose puts every service without networks on PROJECT_default; every service is reachable by
        // its service name on its networks.
        if !host_network {
            if networks.is_empty() {
                networks.push((format!("{}_default", self.project), Vec::new()));
            }
            let alias = dns_label(service);
            for (n, aliases) in &networks {
                let mut all = aliases.clone();
                if alias != name && !all.contains(&alias) {
                    all.insert(0, alias.clone());
                }
                push(
                    &mut spec,
                    "networks",
                    if all.is_empty() {
                        json!({"name": n})
                    } else {
                        json!({"name": n, "aliases": all})
                    },
                );
            }
        } else {
            spec["hostNetwork"] = json!(true);
            if !ports.is_empty() {
                self.note(
                    s,
                    &here("ports"),
                    "dropped: a host-network container listens on the host's ports directly",
                );
                ports.clear();
            }
        }
        if !ports.is_empty() {
            spec["ports"] = Value::Array(ports.clone());
        }
        if let Some((at, h)) = health {
            let port = h["port"].as_u64();
            let published: Vec<u64> = ports
                .iter()
                .filter_map(|p| p["containerPort"].as_u64())
                .collect();
            if published.is_empty() || port.is_some_and(|p| published.contains(&p)) {
                spec["health"] = h;
            } else {
                self.left_out(&at, &here("healthcheck"), "left out: it probes a port that is not published, and dockop probes only published ports when any are");
            }
        }
        let mut doc = json!({
            "apiVersion": crate::spec::API_VERSION,
            "kind": crate::spec::KIND,
            "metadata": {"name": name},
            "spec": spec,
        });
        if !labels.is_empty() {
            doc["metadata"]["labels"] = Value::Object(labels);
        }
        strip_nulls(&mut doc);
        match serde_json::from_value::<Container>(doc) {
            Ok(c) => Some(c),
            Err(e) => {
                self.left_out(
                    s,
                    &format!("services.{service}"),
                    &format!("not converted: {e}"),
                );
                None
            }
        }
    }

    /// A secret-looking variable: read from `/etc/dockop/secrets/NAME`, never inlined; reported.
    fn secret(&mut self, at: &Y, path: &str, name: &str) -> Value {
        let file = format!("{SECRETS_DIR}/{name}");
        self.left_out(at, path, &format!("{name} looks secret: not inlined; it reads valueFrom.file {file}: put the value in that root-only file (mode 0600)"));
        json!({"name": name, "valueFrom": {"file": file}})
    }

    fn env_file(&mut self, v: &Y, path: &str, spec: &mut Value) {
        let files: Vec<&Y> = match &v.v {
            V::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        for f in files {
            let Some(rel) = f.text().or_else(|| f.get("path").and_then(Y::text)) else {
                continue;
            };
            let file = self.base.join(rel);
            let text = match (self.opts.read_file)(&file) {
                Ok(t) => t,
                Err(e) => {
                    self.left_out(
                        f,
                        path,
                        &format!("cannot read {}: {e}; left out", file.display()),
                    );
                    continue;
                }
            };
            let mut env = Vec::new();
            for (k, val) in parse_env_file(&text) {
                if looks_secret(&k) {
                    env.push(self.secret(f, path, &k));
                } else if let Some(val) = val.or_else(|| self.opts.env.get(&k).map(str::to_owned)) {
                    env.push(json!({"name": k, "value": val}));
                }
            }
            push_env(spec, env);
        }
    }

    fn port(&mut self, p: &Y, path: &str) -> Option<Vec<Value>> {
        if let V::Map(_) = p.v {
            let target: u16 = p.get("target")?.text()?.parse().ok()?;
            let published: u16 = match p.get("published").and_then(Y::text) {
                Some(t) => t.parse().ok()?,
                None => target,
            };
            let ip = p.get("host_ip").and_then(Y::text).unwrap_or("0.0.0.0");
            let proto = p.get("protocol").and_then(Y::text).unwrap_or("tcp");
            return Some(vec![
                json!({"containerPort": target, "hostPort": published, "hostIP": ip, "protocol": proto}),
            ]);
        }
        let text = p.text()?;
        let (text, proto) = match text.rsplit_once('/') {
            Some((t, pr)) => (t, pr),
            None => (text, "tcp"),
        };
        let parts: Vec<&str> = if text.starts_with('[') {
            let (v6, rest) = text.split_once("]:")?;
            let mut v = vec![v6.trim_start_matches('[')];
            v.extend(rest.split(':'));
            v
        } else {
            text.split(':').collect()
        };
        let (ip, host, container) = match parts.as_slice() {
            [c] => ("0.0.0.0", None, *c),
            [h, c] => ("0.0.0.0", Some(*h), *c),
            [ip, h, c] => (*ip, Some(*h).filter(|h| !h.is_empty()), *c),
            _ => return None,
        };
        let container: u16 = container.parse().ok()?;
        let host: u16 = match host {
            Some(h) => h.parse().ok()?,
            None => {
                self.note(p, path, &format!("{container} had a random host port in Compose: dockop publishes it on {container}"));
                container
            }
        };
        Some(vec![
            json!({"containerPort": container, "hostPort": host, "hostIP": ip, "protocol": proto}),
        ])
    }

    fn volume(&mut self, v: &Y, path: &str, spec: &mut Value) {
        let (kind, source, target, read_only, size) = if let V::Map(_) = v.v {
            (
                v.get("type")
                    .and_then(Y::text)
                    .unwrap_or("volume")
                    .to_owned(),
                v.get("source").and_then(Y::text).map(str::to_owned),
                v.get("target").and_then(Y::text).map(str::to_owned),
                v.get("read_only").and_then(Y::text) == Some("true"),
                v.get("tmpfs")
                    .and_then(|t| t.get("size"))
                    .and_then(Y::text)
                    .map(str::to_owned),
            )
        } else {
            let Some(text) = v.text() else { return };
            let parts: Vec<&str> = text.split(':').collect();
            let (src, tgt, mode) = match parts.as_slice() {
                [t] => (None, Some(*t), ""),
                [s, t] => (Some(*s), Some(*t), ""),
                [s, t, m, ..] => (Some(*s), Some(*t), *m),
                [] => (None, None, ""),
            };
            let kind = match src {
                Some(s) if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') => "bind",
                Some(_) => "volume",
                None => "anonymous",
            };
            (
                kind.to_owned(),
                src.map(str::to_owned),
                tgt.map(str::to_owned),
                mode.split(',').any(|m| m == "ro"),
                None,
            )
        };
        let Some(target) = target else {
            self.left_out(v, path, "an entry without a target: left out");
            return;
        };
        match (kind.as_str(), source) {
            ("bind", Some(src)) => {
                let host = if let Some(rest) = src.strip_prefix("~/") {
                    match self.opts.env.get("HOME") {
                        Some(h) => format!("{h}/{rest}"),
                        None => src.clone(),
                    }
                } else if src.starts_with('/') {
                    src.clone()
                } else {
                    let joined = self.base.join(&src);
                    std::path::absolute(&joined)
                        .unwrap_or(joined)
                        .to_string_lossy()
                        .replace("/./", "/")
                };
                push(spec, "volumes", json!({"hostPath": host.trim_end_matches("/."), "mountPath": target, "readOnly": read_only}));
            }
            ("volume", Some(src)) => {
                push(spec, "volumes", json!({"name": self.volume_name(&src), "mountPath": target, "readOnly": read_only}));
            }
            ("tmpfs", _) => {
                push(spec, "tmpfs", json!({"mountPath": target, "size": size.as_deref().and_then(docker_size_to_quantity)}));
            }
            _ => self.left_out(v, path, &format!("{target}: anonymous volumes are not supported (dockop keeps data only in named volumes): name it, e.g. NAME:{target}")),
        }
    }

    fn healthcheck(&mut self, v: &Y, path: &str) -> Option<Value> {
        if v.get("disable").and_then(Y::text) == Some("true") {
            return None;
        }
        let test = v.get("test")?;
        let words: Vec<String> = match &test.v {
            V::Seq(items) => items
                .iter()
                .filter_map(Y::text)
                .map(str::to_owned)
                .collect(),
            V::Scalar(t) => shell_words(t).unwrap_or_default(),
            _ => Vec::new(),
        };
        if words.first().map(String::as_str) == Some("NONE") {
            return None;
        }
        let uses_http_tool = words
            .iter()
            .any(|w| w.contains("curl") || w.contains("wget"));
        let Some((port, path_part)) = health_url(&words).filter(|_| uses_http_tool) else {
            self.left_out(test, &format!("{path}.test"), "not converted: dockop health is an HTTP GET, and this check is not a curl/wget of a local URL; add spec.health with the app's health path and port");
            return None;
        };
        let mut h = json!({"path": path_part, "port": port});
        let secs = |k: &str| v.get(k).and_then(Y::text).and_then(duration_seconds);
        if let Some(i) = secs("interval") {
            h["intervalSeconds"] = json!(i.clamp(1, 3600));
        }
        if let Some(t) = secs("timeout") {
            h["timeoutSeconds"] = json!(t.clamp(1, 3600));
        }
        if let Some(r) = v
            .get("retries")
            .and_then(Y::text)
            .and_then(|r| r.parse::<u64>().ok())
        {
            h["failureThreshold"] = json!(r.clamp(1, 100));
        }
        if let Some(s) = secs("start_period") {
            h["startupDeadlineSeconds"] = json!(s.clamp(1, 86400).max(60));
        }
        Some(h)
    }

    fn memory(&mut self, v: &Y, path: &str, spec: &mut Value) {
        match v.text().and_then(docker_size_to_quantity) {
            Some(q) => spec["resources"]["memory"] = json!(q),
            None => self.left_out(v, path, "not a size: left out"),
        }
    }

    fn deploy(&mut self, v: &Y, path: &str, spec: &mut Value) {
        for (k, x) in v.entries() {
            let p = format!("{path}.{k}");
            match k.as_str() {
                "resources" => {
                    for (rk, rv) in x.entries() {
                        let rp = format!("{p}.{rk}");
                        if rk != "limits" {
                            self.left_out(rv, &rp, "not supported (dockop sets limits only): left out");
                            continue;
                        }
                        for (lk, lv) in rv.entries() {
                            match lk.as_str() {
                                "memory" => self.memory(lv, &format!("{rp}.memory"), spec),
                                "cpus" => match lv.text().and_then(|t| t.parse::<f64>().ok()) {
                                    Some(c) => spec["resources"]["cpus"] = json!(c),
                                    None => self.left_out(lv, &format!("{rp}.cpus"), "not a number: left out"),
                                },
                                "pids" => match lv.text().and_then(|t| t.parse::<i64>().ok()) {
                                    Some(n) => spec["resources"]["pids"] = json!(n),
                                    None => self.left_out(lv, &format!("{rp}.pids"), "not a number: left out"),
                                },
                                _ => self.left_out(lv, &format!("{rp}.{lk}"), "not supported: left out"),
                            }
                        }
                    }
                }
                "replicas" if x.text() == Some("1") => {}
                "replicas" => self.left_out(x, &p, "not supported (a dockop object is one container): declare one object per replica with its own name and port"),
                "restart_policy" => match x.get("condition").and_then(Y::text) {
                    Some("any") => spec["restart"] = json!("always"),
                    Some("on-failure") => spec["restart"] = json!("on-failure"),
                    Some("none") => spec["restart"] = json!("no"),
                    _ => self.left_out(x, &p, "not supported: left out"),
                },
                _ => self.left_out(x, &p, "not supported (Swarm-only): left out"),
            }
        }
    }
}

fn push(spec: &mut Value, key: &str, item: Value) {
    match spec[key].as_array_mut() {
        Some(a) => a.push(item),
        None => spec[key] = json!([item]),
    }
}

/// Adds env entries; a later entry replaces an earlier one of the same name (env_file before environment
/// in Compose's precedence: `environment` wins).
fn push_env(spec: &mut Value, entries: Vec<Value>) {
    for e in entries {
        let name = e["name"].clone();
        if let Some(a) = spec["env"].as_array_mut() {
            a.retain(|x| x["name"] != name);
        }
        push(spec, "env", e);
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run(text: &str, files: &[(&str, &str)]) -> Converted {
        let files: BTreeMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
            .collect();
        let read = move |p: &Path| {
            files
                .get(p)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "missing"))
        };
        let opts = Options {
            project: Some("proj".into()),
            env: Env::default(),
            read_file: &read,
        };
        convert(
            &[Input {
                path: "dir/compose.yaml".into(),
                text: text.into(),
            }],
            &opts,
        )
        .unwrap()
    }

    #[test]
    fn sizes_durations_words_urls() {
        assert_eq!(docker_size_to_quantity("512m").as_deref(), Some("512Mi"));
        assert_eq!(docker_size_to_quantity("1G").as_deref(), Some("1Gi"));
        assert_eq!(docker_size_to_quantity("100000").as_deref(), Some("100000"));
        assert_eq!(docker_size_to_quantity("64mb").as_deref(), Some("64Mi"));
        assert_eq!(docker_size_to_quantity("lots"), None);
        assert_eq!(duration_seconds("1m30s"), Some(90));
        assert_eq!(duration_seconds("500ms"), Some(1));
        assert_eq!(duration_seconds("2h"), Some(7200));
        assert_eq!(duration_seconds("10"), Some(10));
        assert_eq!(duration_seconds("x"), None);
        assert_eq!(
            shell_words(r#"server --console-address ":9001" /data 'a b' c\ d"#).unwrap(),
            [
                "server",
                "--console-address",
                ":9001",
                "/data",
                "a b",
                "c d"
            ]
        );
        assert_eq!(shell_words("unbalanced 'quote"), None);
        let w = |s: &str| shell_words(s).unwrap();
        assert_eq!(
            health_url(&w("curl -f http://localhost:3000/api/health || exit 1")),
            Some((3000, "/api/health".to_owned()))
        );
        assert_eq!(
            health_url(&w("wget -qO- http://127.0.0.1")),
            Some((80, "/".to_owned()))
        );
        assert_eq!(health_url(&w("curl -f http://example.com/health")), None);
        assert!(looks_secret("DB_PASSWORD") && looks_secret("api_key"));
        assert!(!looks_secret("POSTGRES_PASSWORD_FILE") && !looks_secret("LOG_LEVEL"));
    }

    #[test]
    fn ports_volumes_and_reports() {
        let out = run(
            "services:\n  web:\n    image: nginx\n    ports: ['8080', '127.0.0.1:81:80', '[::1]:82:80/udp', '9000-9001:9000-9001']\n    volumes: ['data:/d', './site:/s:ro', '/cache']\n    env_file: web.env\n    sysctls: {a: b}\n    healthcheck: {test: [CMD, pg_isready]}\n",
            &[("dir/web.env", "A=1\nAPI_TOKEN=t\n")],
        );
        let web = &out.objects[0];
        let ports: Vec<(u16, u16, &str, String)> = web
            .spec
            .ports
            .iter()
            .map(|p| {
                (
                    p.container_port,
                    p.effective_host_port(),
                    p.host_ip.as_str(),
                    p.protocol.to_string(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (8080, 8080, "0.0.0.0", "tcp".to_owned()),
                (80, 81, "127.0.0.1", "tcp".to_owned()),
                (80, 82, "::1", "udp".to_owned())
            ]
        );
        assert_eq!(web.spec.volumes[0].name.as_deref(), Some("proj_data"));
        assert!(
            web.spec.volumes[1]
                .host_path
                .as_deref()
                .unwrap()
                .ends_with("/dir/site")
        );
        assert!(web.spec.volumes[1].read_only);
        assert_eq!(web.spec.networks[0].name, "proj_default");
        let env: Vec<&str> = web.spec.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["A", "API_TOKEN"]);
        assert!(web.spec.env[1].value.is_none());
        let reports: Vec<String> = out.reports.iter().map(ToString::to_string).collect();
        let expect = [
            (
                "dir/compose.yaml:4: services.web.ports: 8080 had a random host port",
                false,
            ),
            (
                "dir/compose.yaml:4: services.web.ports: not supported (a port range",
                true,
            ),
            (
                "dir/compose.yaml:5: services.web.volumes: /cache: anonymous volumes are not supported",
                true,
            ),
            (
                "dir/compose.yaml:6: services.web.env_file: API_TOKEN looks secret",
                true,
            ),
            (
                "dir/compose.yaml:7: services.web.sysctls: not supported",
                true,
            ),
            (
                "dir/compose.yaml:8: services.web.healthcheck.test: not converted",
                true,
            ),
        ];
        for (start, left_out) in expect {
            let r = out
                .reports
                .iter()
                .find(|r| r.to_string().starts_with(start));
            assert!(
                r.is_some_and(|r| r.left_out == left_out),
                "{start}\n{reports:#?}"
            );
        }
        assert!(!out.complete());
    }

    #[test]
    fn a_service_without_image_is_reported_and_skipped() {
        let out = run(
            "services:\n  app:\n    build: .\n  db:\n    image: postgres\n",
            &[],
        );
        assert_eq!(out.objects.len(), 1);
        assert!(
            out.reports[0]
                .to_string()
                .starts_with("dir/compose.yaml:3: services.app: not converted: it has no image")
        );
    }
}
