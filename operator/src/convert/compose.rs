//! Reading Compose files the way `docker compose config` resolves them: YAML with positions, `${VAR}`
//! interpolation (`:-`, `-`, `:?`, `?`, `:+`, `+`, `$$`), `.env` files, and overrides merged onto the
//! first file. Pure: file contents and the environment come in as values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::spec::load::{NodeValue, parse_documents};

/// A YAML value with the file (index into the inputs) and 1-based line it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Y {
    /// Index of the file in the inputs.
    pub file: usize,
    /// 1-based line.
    pub line: usize,
    /// The value.
    pub v: V,
}

/// The value of a [`Y`]: scalars as text (booleans and numbers as written).
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    /// `null` or empty.
    Null,
    /// Any scalar, as text.
    Scalar(String),
    /// A sequence.
    Seq(Vec<Y>),
    /// A mapping in file order.
    Map(Vec<(String, Y)>),
}

impl Y {
    /// The scalar text, if this is a scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.v {
            V::Scalar(s) => Some(s),
            _ => None,
        }
    }
    /// The entry `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Y> {
        match &self.v {
            V::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The entries of a mapping (empty otherwise).
    pub fn entries(&self) -> &[(String, Y)] {
        match &self.v {
            V::Map(m) => m,
            _ => &[],
        }
    }
    /// The items of a sequence (empty otherwise).
    pub fn items(&self) -> &[Y] {
        match &self.v {
            V::Seq(s) => s,
            _ => &[],
        }
    }
}

/// A Compose file given to `convert`.
#[derive(Debug, Clone)]
pub struct Input {
    /// Path as given (`-` for stdin).
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

/// Why the files could not be read as Compose files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// YAML syntax (or a budget limit).
    #[error("{0}")]
    Yaml(String),
    /// The top level is not a mapping.
    #[error("{file}: the top level is not a mapping of Compose keys (services:, volumes:, ...)")]
    NotAMapping {
        /// File.
        file: String,
    },
    /// `${VAR:?message}` with VAR unset or empty.
    #[error("{file}:{line}: required variable {var} is missing: {message}")]
    Required {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Variable.
        var: String,
        /// The file's message.
        message: String,
    },
    /// A `${` without its `}`.
    #[error("{file}:{line}: invalid interpolation in {text:?}: a ${{ without its }}")]
    Unclosed {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// The scalar.
        text: String,
    },
}

/// Variables for interpolation: the process environment wins over `.env`.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// The process environment.
    pub process: BTreeMap<String, String>,
    /// `.env` next to the first file.
    pub dotenv: BTreeMap<String, String>,
}

impl Env {
    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.process
            .get(name)
            .or_else(|| self.dotenv.get(name))
            .map(String::as_str)
    }
}

/// Parses a `.env` / `env_file` text: `KEY=VALUE` lines, `#` comments, optional `export `, quotes
/// stripped. A bare `KEY` line maps to `None` (take it from the environment).
pub fn parse_env_file(text: &str) -> Vec<(String, Option<String>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.strip_prefix("export ").unwrap_or(l))
        .map(|l| match l.split_once('=') {
            Some((k, v)) => {
                let v = v.trim();
                let unquoted = [('"', '"'), ('\'', '\'')]
                    .iter()
                    .find_map(|(a, b)| v.strip_prefix(*a)?.strip_suffix(*b))
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        // An unquoted value ends at " #".
                        v.split(" #").next().unwrap_or(v).trim_end().to_owned()
                    });
                (k.trim().to_owned(), Some(unquoted))
            }
            None => (l.to_owned(), None),
        })
        .collect()
}

/// The variables of a `.env` text (bare names skipped: they only pass the environment through).
pub fn dotenv_vars(text: &str) -> BTreeMap<String, String> {
    parse_env_file(text)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// Reads, interpolates and merges `inputs` (overrides in order onto the first).
pub fn resolve(inputs: &[Input], env: &Env) -> Result<Y, ReadError> {
    let mut merged: Option<Y> = None;
    for (i, input) in inputs.iter().enumerate() {
        let name = input.path.display().to_string();
        let docs = parse_documents(&input.path, &input.text)
            .map_err(|d| ReadError::Yaml(d.to_string()))?;
        let Some(doc) = docs.into_iter().next() else {
            continue;
        };
        let mut y = from_node(i, &doc.root);
        if !matches!(y.v, V::Map(_)) {
            return Err(ReadError::NotAMapping { file: name });
        }
        interpolate_tree(&mut y, env, &name)?;
        normalize(&mut y);
        merged = Some(match merged {
            None => y,
            Some(mut base) => {
                merge(&mut base, y, "");
                base
            }
        });
    }
    merged.ok_or_else(|| ReadError::NotAMapping {
        file: inputs
            .first()
            .map(|i| i.path.display().to_string())
            .unwrap_or_default(),
    })
}

fn from_node(file: usize, n: &crate::spec::load::Node) -> Y {
    let v = match &n.value {
        NodeValue::Null => V::Null,
        NodeValue::Bool(b) => V::Scalar(b.to_string()),
        NodeValue::Int(i) => V::Scalar(i.to_string()),
        NodeValue::UInt(u) => V::Scalar(u.to_string()),
        NodeValue::Float(f) => V::Scalar(f.to_string()),
        NodeValue::Str(s) => V::Scalar(s.clone()),
        NodeValue::Seq(items) => V::Seq(items.iter().map(|i| from_node(file, i)).collect()),
        NodeValue::Map(entries) => V::Map(
            entries
                .iter()
                .map(|e| {
                    let mut value = from_node(file, &e.value);
                    if matches!(value.v, V::Null) {
                        value.line = e.key_line;
                    }
                    (e.key.clone(), value)
                })
                .collect(),
        ),
    };
    Y {
        file,
        line: n.line,
        v,
    }
}

fn interpolate_tree(y: &mut Y, env: &Env, file: &str) -> Result<(), ReadError> {
    let line = y.line;
    match &mut y.v {
        V::Scalar(s) => {
            *s = interpolate(s, env).map_err(|e| match e {
                Interp::Required { var, message } => ReadError::Required {
                    file: file.to_owned(),
                    line,
                    var,
                    message,
                },
                Interp::Unclosed => ReadError::Unclosed {
                    file: file.to_owned(),
                    line,
                    text: s.clone(),
                },
            })?;
        }
        V::Seq(items) => {
            for i in items {
                interpolate_tree(i, env, file)?;
            }
        }
        V::Map(entries) => {
            for (_, v) in entries {
                interpolate_tree(v, env, file)?;
            }
        }
        V::Null => {}
    }
    Ok(())
}

/// Why a scalar could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interp {
    /// `${VAR:?message}` / `${VAR?message}`.
    Required {
        /// Variable.
        var: String,
        /// Message.
        message: String,
    },
    /// `${` without `}`.
    Unclosed,
}

/// Interpolates one scalar as Compose does.
pub fn interpolate(s: &str, env: &Env) -> Result<String, Interp> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or(Interp::Unclosed)?;
            out.push_str(&expand(body.get(..end).unwrap_or_default(), env)?);
            rest = body.get(end + 1..).unwrap_or_default();
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(env.get(after.get(..len).unwrap_or_default()).unwrap_or(""));
            }
            rest = after.get(len..).unwrap_or_default();
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the `}` closing a `${`, counting nested `${...}`.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes.get(i - 1) == Some(&b'$') => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn expand(body: &str, env: &Env) -> Result<String, Interp> {
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_len);
    let value = env.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let arg = |skip: usize| interpolate(op.get(skip..).unwrap_or_default(), env);
    Ok(if op.is_empty() {
        value.unwrap_or("").to_owned()
    } else if op.starts_with(":-") {
        if set_nonempty {
            value.unwrap_or("").to_owned()
        } else {
            arg(2)?
        }
    } else if op.starts_with('-') {
        match value {
            Some(v) => v.to_owned(),
            None => arg(1)?,
        }
    } else if op.starts_with(":?") || op.starts_with('?') {
        let skip = if op.starts_with(':') { 2 } else { 1 };
        let ok = if skip == 2 {
            set_nonempty
        } else {
            value.is_some()
        };
        if !ok {
            return Err(Interp::Required {
                var: name.to_owned(),
                message: arg(skip)?,
            });
        }
        value.unwrap_or("").to_owned()
    } else if op.starts_with(":+") {
        if set_nonempty { arg(2)? } else { String::new() }
    } else if op.starts_with('+') {
        if value.is_some() {
            arg(1)?
        } else {
            String::new()
        }
    } else {
        value.unwrap_or("").to_owned()
    })
}

/// `environment`, `labels` and `extra_hosts` of every service as mappings, so overrides merge by key.
fn normalize(root: &mut Y) {
    let V::Map(top) = &mut root.v else { return };
    for (key, services) in top.iter_mut() {
        if key != "services" {
            continue;
        }
        let V::Map(services) = &mut services.v else {
            continue;
        };
        for (_, service) in services.iter_mut() {
            let V::Map(fields) = &mut service.v else {
                continue;
            };
            for (field, value) in fields.iter_mut() {
                let sep = match field.as_str() {
                    "environment" | "labels" => '=',
                    "extra_hosts" => ':',
                    _ => continue,
                };
                if let V::Seq(items) = &value.v {
                    let map = items
                        .iter()
                        .filter_map(|i| {
                            let t = i.text()?;
                            let (k, v) = match t.split_once(sep) {
                                Some((k, v)) => (k, V::Scalar(v.to_owned())),
                                None => (t, V::Null),
                            };
                            Some((
                                k.to_owned(),
                                Y {
                                    file: i.file,
                                    line: i.line,
                                    v,
                                },
                            ))
                        })
                        .collect();
                    value.v = V::Map(map);
                }
            }
        }
    }
}

/// Keys whose lists an override appends to (deduplicated); other lists are replaced.
const APPENDED: &[&str] = &[
    "ports",
    "expose",
    "volumes",
    "dns",
    "cap_add",
    "cap_drop",
    "security_opt",
    "env_file",
    "tmpfs",
    "depends_on",
    "networks",
];

/// Merges `over` onto `base` (`key` is the key both stand under).
fn merge(base: &mut Y, over: Y, key: &str) {
    match (&mut base.v, over.v) {
        (V::Map(b), V::Map(o)) => {
            for (k, v) in o {
                match b.iter_mut().find(|(bk, _)| *bk == k) {
                    Some((_, slot)) => merge(slot, v, &k),
                    None => b.push((k, v)),
                }
            }
        }
        (V::Seq(b), V::Seq(o)) if APPENDED.contains(&key) => {
            for item in o {
                if !b.iter().any(|x| x.v == item.v) {
                    b.push(item);
                }
            }
        }
        (_, v) => {
            base.v = v;
            base.file = over.file;
            base.line = over.line;
        }
    }
}

/// The directory a relative path in the first file is resolved against.
pub fn base_dir(first: &Path) -> PathBuf {
    if first.as_os_str() == "-" {
        return PathBuf::from(".");
    }
    match first.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)], dot: &[(&str, &str)]) -> Env {
        Env {
            process: pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            dotenv: dot
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn interpolation_forms() {
        let e = env(
            &[("SET", "x"), ("EMPTY", "")],
            &[("DOT", "d"), ("SET", "dotenv-loses")],
        );
        for (input, want) in [
            ("${SET}", "x"),
            ("$SET-y", "x-y"),
            ("${DOT}", "d"),
            ("${UNSET:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${UNSET-def}", "def"),
            ("${UNSET:-${SET}z}", "xz"),
            ("${SET:+alt}", "alt"),
            ("${UNSET:+alt}", ""),
            ("$$SET", "$SET"),
            ("a $ b", "a $ b"),
            ("${SET:?needed}", "x"),
        ] {
            assert_eq!(interpolate(input, &e).as_deref(), Ok(want), "{input}");
        }
        assert_eq!(
            interpolate("${UNSET:?set it}", &e),
            Err(Interp::Required {
                var: "UNSET".into(),
                message: "set it".into()
            })
        );
        assert!(interpolate("${EMPTY?ok}", &e).is_ok());
        assert_eq!(interpolate("${OPEN", &e), Err(Interp::Unclosed));
    }

    #[test]
    fn env_files() {
        let parsed =
            parse_env_file("# comment\nexport A=1\nB=\"two words\"\nC='x'\nD=plain # note\nE\n\n");
        assert_eq!(
            parsed,
            [
                ("A".into(), Some("1".into())),
                ("B".into(), Some("two words".into())),
                ("C".into(), Some("x".into())),
                ("D".into(), Some("plain".into())),
                ("E".into(), None),
            ]
        );
    }

    #[test]
    fn overrides_merge() {
        let base = Input {
            path: "compose.yaml".into(),
            text: "services:\n  web:\n    image: a:${TAG:-1}\n    ports: [\"80:80\"]\n    environment: [A=1, B=2]\n    command: [x]\n".into(),
        };
        let over = Input {
            path: "override.yaml".into(),
            text: "services:\n  web:\n    ports: [\"443:443\", \"80:80\"]\n    environment: {B: 3, C: 4}\n    command: [y, z]\n".into(),
        };
        let y = resolve(&[base, over], &Env::default()).unwrap();
        let web = y.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().text(), Some("a:1"));
        let ports: Vec<&str> = web
            .get("ports")
            .unwrap()
            .items()
            .iter()
            .filter_map(Y::text)
            .collect();
        assert_eq!(ports, ["80:80", "443:443"]);
        let env: Vec<(&str, Option<&str>)> = web
            .get("environment")
            .unwrap()
            .entries()
            .iter()
            .map(|(k, v)| (k.as_str(), v.text()))
            .collect();
        assert_eq!(env, [("A", Some("1")), ("B", Some("3")), ("C", Some("4"))]);
        let cmd = web.get("command").unwrap();
        assert_eq!(cmd.items().len(), 2);
        assert_eq!(cmd.file, 1);
    }
}
