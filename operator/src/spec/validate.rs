//! Schema (generated JSON Schema, jsonschema crate) and semantic validation.
//!
//! Two layers, every finding reported in one run: the JSON Schema generated from the types (wrong types,
//! ranges, unknown fields with "did you mean", enum values), then the semantic rules the schema cannot
//! express (references, paths, hashes, uniqueness across objects, port clashes) and warnings. Each
//! finding is mapped back to the line and column of the YAML node it is about.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use serde_json::Value;

use super::image_ref::{ImageRef, is_sha256_digest};
use super::load::{
    Diagnostic, Document, Node as YamlNode, NodeValue, Seg, Severity, path_to_string,
};
use super::window::Window;
use super::{API_VERSION, KIND};

/// The JSON Schema of the `Container` resource, generated from the types.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(super::Container)).unwrap_or(Value::Null)
}

struct SchemaCache {
    schema: Value,
    validator: Result<jsonschema::Validator, String>,
}

fn schema_cache() -> &'static SchemaCache {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let schema = json_schema();
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string());
        SchemaCache { schema, validator }
    })
}

/// A finding before it is placed in a file.
#[derive(Debug)]
struct Finding {
    severity: Severity,
    path: Vec<Seg>,
    /// Point at the key of the last path step rather than at its value.
    at_key: bool,
    problem: String,
    fix: Option<String>,
}

impl Finding {
    fn error(path: Vec<Seg>, problem: impl Into<String>, fix: Option<String>) -> Self {
        Finding {
            severity: Severity::Error,
            path,
            at_key: false,
            problem: problem.into(),
            fix,
        }
    }
    fn warning(path: Vec<Seg>, problem: impl Into<String>, fix: Option<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            path,
            at_key: false,
            problem: problem.into(),
            fix,
        }
    }
    fn at_key(mut self) -> Self {
        self.at_key = true;
        self
    }
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_owned())
}

fn join(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

/// Checks every document, alone and against the others; returns the findings per document, in order.
/// Findings reported per document at most; the rest are counted in one last diagnostic. Placing a finding
/// in the file walks its mapping, so the cap also keeps a hostile file of many thousand bad keys linear.
pub(crate) const MAX_FINDINGS: usize = 100;

pub(crate) fn check_documents(docs: &[Document]) -> Vec<Vec<Diagnostic>> {
    let mut per_doc: Vec<Vec<Finding>> = docs.iter().map(check_document).collect();
    check_across(docs, &mut per_doc);
    docs.iter()
        .zip(per_doc)
        .map(|(doc, mut findings)| {
            let more = findings.len().saturating_sub(MAX_FINDINGS);
            if more > 0 {
                // Errors first, so a cut never hides the reason a file is refused.
                findings.sort_by_key(|f| f.severity != Severity::Error);
                findings.truncate(MAX_FINDINGS);
            }
            let mut found: Vec<Diagnostic> = findings
                .into_iter()
                .map(|f| {
                    let (line, column) = if f.at_key {
                        doc.root.key_position(&f.path)
                    } else {
                        doc.root.position(&f.path)
                    };
                    Diagnostic {
                        severity: f.severity,
                        file: doc.file.clone(),
                        line,
                        column,
                        field: path_to_string(&f.path),
                        problem: f.problem,
                        fix: f.fix,
                    }
                })
                .collect();
            found.sort_by_key(|d| (d.line, d.column));
            if more > 0 {
                found.push(Diagnostic {
                    severity: Severity::Error,
                    file: doc.file.clone(),
                    line: doc.root.line,
                    column: doc.root.column,
                    field: String::new(),
                    problem: format!(
                        "and {more} more findings in this document (only the first {MAX_FINDINGS} are shown)"
                    ),
                    fix: Some("fix the ones above, then validate again".to_owned()),
                });
            }
            found
        })
        .collect()
}

/// Schema then semantic findings of one document; a semantic finding on a path the schema already
/// complained about is dropped.
fn check_document(doc: &Document) -> Vec<Finding> {
    // Layer 0: what the JSON form of the document cannot show (tags, NUL, floats where whole numbers
    // belong). A schema finding on the same place says less and is dropped.
    let mut findings = Vec::new();
    node_findings(
        &schema_cache().schema,
        &doc.root,
        &mut Vec::new(),
        &mut findings,
    );
    let placed: std::collections::HashSet<Vec<Seg>> =
        findings.iter().map(|f| f.path.clone()).collect();
    findings.extend(
        schema_findings(&doc.json)
            .into_iter()
            .filter(|f| !placed.contains(&f.path)),
    );
    let schema_count = findings.len();
    let mut semantic = Vec::new();
    semantic_findings(&doc.json, &mut semantic);
    for f in semantic {
        let seen = findings
            .iter()
            .take(schema_count)
            .any(|s| s.severity == Severity::Error && s.path == f.path);
        if !seen {
            findings.push(f);
        }
    }
    findings
}

// ---------------------------------------------------------------------------------------------------
// Layer 0: the YAML nodes.
// ---------------------------------------------------------------------------------------------------

/// The YAML 1.2 core schema tags: they only choose the type a scalar resolves to, and the value stays
/// written as itself (a mismatch, e.g. `!!str 80` for a port, is then a type error). `!` is YAML's
/// non-specific tag (a string).
const CORE_TAGS: [&str; 8] = [
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
    "!",
];

/// A tag as it is usually written: `!!binary` for `tag:yaml.org,2002:binary`.
fn tag_text(tag: &str) -> String {
    let short = tag
        .strip_prefix("tag:yaml.org,2002:")
        .map_or_else(|| tag.to_owned(), |rest| format!("!!{rest}"));
    short
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

fn tag_finding(path: Vec<Seg>, tag: &str) -> Finding {
    let why = if tag == "tag:yaml.org,2002:binary" {
        "it hides the value that runs behind base64"
    } else {
        "dockop gives it no meaning, so it would be silently dropped"
    };
    Finding::error(
        path,
        format!("the YAML tag {} is not accepted: {why}", tag_text(tag)),
        Some("remove the tag and write the value itself (only the core tags !!str, !!int, !!float, !!bool, !!null, !!seq and !!map are accepted)".to_owned()),
    )
}

fn nul_finding(path: Vec<Seg>) -> Finding {
    Finding::error(
        path,
        "contains a NUL character (\\0): Docker and the kernel cut strings at the first NUL, so what runs would differ from what is written",
        Some("remove the \\0 (or \\x00) from the value".to_owned()),
    )
}

/// Whether the schema node wants a whole number (`integer`, alone or with `null`).
fn wants_integer(node: &Value) -> bool {
    let is = |t: &Value| t.as_str() == Some("integer");
    match node.get("type") {
        Some(Value::Array(types)) => {
            types.iter().any(is) && !types.iter().any(|t| t.as_str() == Some("number"))
        }
        Some(t) => is(t),
        None => false,
    }
}

fn float_finding(schema: &Value, path: Vec<Seg>, f: f64) -> Option<Finding> {
    let node = schema_at(schema, &path)?;
    if !wants_integer(node) {
        return None;
    }
    let min = node.get("minimum").map(value_text);
    let max = node.get("maximum").map(value_text);
    let range = match (&min, &max) {
        (Some(a), Some(b)) => format!(" between {a} and {b}"),
        (Some(a), None) => format!(" of at least {a}"),
        (None, Some(b)) => format!(" of at most {b}"),
        (None, None) => String::new(),
    };
    let whole = f.trunc();
    let bound = |b: Option<&Value>| b.and_then(Value::as_f64);
    let in_range = bound(node.get("minimum")).is_none_or(|m| whole >= m)
        && bound(node.get("maximum")).is_none_or(|m| whole <= m);
    let fix = if in_range && whole.abs() < 1e15 {
        format!("write it without a decimal point, e.g. {whole:.0}")
    } else {
        format!("write a whole number{range}")
    };
    Some(Finding::error(
        path,
        format!("expected a whole number{range}, found {f:?}"),
        Some(fix),
    ))
}

/// Tags other than the core ones, NUL in strings and keys, floats where the schema wants an integer:
/// one linear walk over the nodes.
fn node_findings(schema: &Value, node: &YamlNode, path: &mut Vec<Seg>, out: &mut Vec<Finding>) {
    if let Some(tag) = node.tag.as_deref()
        && !CORE_TAGS.contains(&tag)
    {
        out.push(tag_finding(path.clone(), tag));
    }
    match &node.value {
        NodeValue::Str(s) if s.contains('\0') => out.push(nul_finding(path.clone())),
        NodeValue::Float(f) => out.extend(float_finding(schema, path.clone(), *f)),
        NodeValue::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                node_findings(schema, item, path, out);
                path.pop();
            }
        }
        NodeValue::Map(entries) => {
            for e in entries {
                path.push(Seg::Key(e.key.clone()));
                if let Some(tag) = e.key_tag.as_deref()
                    && !CORE_TAGS.contains(&tag)
                {
                    out.push(tag_finding(path.clone(), tag).at_key());
                }
                if e.key.contains('\0') {
                    out.push(nul_finding(path.clone()).at_key());
                }
                node_findings(schema, &e.value, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------------
// Layer 1: the JSON Schema.
// ---------------------------------------------------------------------------------------------------

fn schema_findings(json: &Value) -> Vec<Finding> {
    let cache = schema_cache();
    let validator = match &cache.validator {
        Ok(v) => v,
        Err(e) => {
            return vec![Finding::error(
                Vec::new(),
                format!("dockop's own schema does not compile: {e}"),
                Some("this is a bug in dockop: please report it".to_owned()),
            )];
        }
    };
    let mut out: Vec<Finding> = Vec::new();
    for err in validator.iter_errors(json) {
        convert_error(&cache.schema, json, &err, &mut out);
    }
    // One finding per place: the first is the most direct.
    let mut seen: std::collections::HashSet<(Vec<Seg>, bool)> = std::collections::HashSet::new();
    out.retain(|f| seen.insert((f.path.clone(), f.at_key)));
    out
}

fn instance_path(err: &jsonschema::ValidationError<'_>) -> Vec<Seg> {
    err.instance_path()
        .segments()
        .map(|s| match s {
            LocationSegment::Property(p) => Seg::Key(p.into_owned()),
            LocationSegment::Index(i) => Seg::Index(i),
        })
        .collect()
}

fn convert_error(
    schema: &Value,
    json: &Value,
    err: &jsonschema::ValidationError<'_>,
    out: &mut Vec<Finding>,
) {
    let path = instance_path(err);
    let instance = err.instance();
    let node_schema = schema_at(schema, &path);
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            // Past the per-document cap the findings are only counted (a hostile file of 40,000 unknown
            // keys must not cost 40,000 suggestions).
            for key in unexpected {
                if out.len() < MAX_FINDINGS {
                    out.push(unknown_field(schema, &path, key));
                } else {
                    out.push(Finding::error(
                        join(&path, Seg::Key(key.clone())),
                        "unknown field",
                        None,
                    ));
                }
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default().to_owned();
            let fix = match name.as_str() {
                "apiVersion" => format!("add `apiVersion: {API_VERSION}`"),
                "kind" => format!("add `kind: {KIND}`"),
                _ => {
                    let desc = node_schema
                        .and_then(|s| s.get("properties"))
                        .and_then(|p| p.get(&name))
                        .and_then(|p| {
                            resolve(schema, p)
                                .get("description")
                                .or_else(|| p.get("description"))
                        })
                        .and_then(Value::as_str)
                        .map(first_sentence);
                    match desc {
                        Some(d) => format!("add `{name}:` ({d})"),
                        None => format!("add `{name}:`"),
                    }
                }
            };
            // The field does not exist, so the finding lands on the mapping that lacks it.
            out.push(Finding::error(
                join(&path, Seg::Key(name.clone())),
                format!("missing required field \"{name}\""),
                Some(fix),
            ));
        }
        ValidationErrorKind::Type { kind } => {
            let expected: Vec<String> = match kind {
                TypeKind::Single(t) => vec![t.to_string()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
            };
            out.push(type_error(path, &expected, instance));
        }
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(value_plain).collect())
                .unwrap_or_default();
            out.push(not_allowed(path, instance, &allowed));
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push(not_allowed(path, instance, &[value_plain(expected_value)]));
        }
        ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::ExclusiveMaximum { .. } => {
            let min = node_schema.and_then(|s| s.get("minimum")).map(value_text);
            let max = node_schema.and_then(|s| s.get("maximum")).map(value_text);
            let range = match (&min, &max) {
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => "in range".to_owned(),
            };
            out.push(Finding::error(
                path,
                format!(
                    "{} is out of range: it must be {range}",
                    value_text(instance)
                ),
                Some(format!("use a value {range}")),
            ));
        }
        ValidationErrorKind::MinLength { limit } => {
            let problem = if *limit <= 1 {
                "must not be empty".to_owned()
            } else {
                format!("is too short: at least {limit} characters")
            };
            let fix = pattern_help(&path).map(str::to_owned);
            out.push(Finding::error(path, problem, fix));
        }
        ValidationErrorKind::MaxLength { limit } => {
            let len = instance.as_str().map_or(0, |s| s.chars().count());
            let fix = pattern_help(&path)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("shorten it to {limit} characters"));
            out.push(Finding::error(
                path,
                format!("is {len} characters long; at most {limit} are allowed"),
                Some(fix),
            ));
        }
        ValidationErrorKind::Pattern { pattern } => {
            let what = pattern_what(&path);
            let fix = pattern_help(&path)
                .map_or_else(|| format!("it must match {pattern}"), str::to_owned);
            out.push(Finding::error(
                path,
                format!("{} is not a valid {what}", value_text(instance)),
                Some(fix),
            ));
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            convert_alternatives(schema, json, &path, instance, context, out);
        }
        _ => {
            out.push(Finding::error(path, err.to_string(), None));
        }
    }
}

/// Errors of `anyOf`/`oneOf`: `Option<T>` (a branch and `null`) or an enum of documented constants.
fn convert_alternatives(
    schema: &Value,
    json: &Value,
    path: &[Seg],
    instance: &Value,
    context: &[Vec<jsonschema::ValidationError<'static>>],
    out: &mut Vec<Finding>,
) {
    let same_place = |e: &jsonschema::ValidationError<'_>| instance_path(e) == path;
    let mut consts = Vec::new();
    let mut types = Vec::new();
    let mut all_shallow = true;
    for branch in context {
        for e in branch {
            match e.kind() {
                ValidationErrorKind::Constant { expected_value } if same_place(e) => {
                    consts.push(value_plain(expected_value));
                }
                ValidationErrorKind::Enum { options } if same_place(e) => {
                    consts.extend(options.as_array().into_iter().flatten().map(value_plain));
                }
                ValidationErrorKind::Type { kind } if same_place(e) => match kind {
                    TypeKind::Single(t) => types.push(t.to_string()),
                    TypeKind::Multiple(set) => types.extend(set.iter().map(|t| t.to_string())),
                },
                _ => all_shallow = false,
            }
        }
    }
    if all_shallow {
        if !consts.is_empty() {
            consts.dedup();
            out.push(not_allowed(path.to_vec(), instance, &consts));
        } else {
            types.retain(|t| t != "null");
            types.dedup();
            out.push(type_error(path.to_vec(), &types, instance));
        }
        return;
    }
    // Report the branch that got furthest: the one whose errors are not about the value's own type.
    let best = context.iter().find(|branch| {
        !branch.is_empty()
            && branch
                .iter()
                .all(|e| !(same_place(e) && matches!(e.kind(), ValidationErrorKind::Type { .. })))
    });
    match best {
        Some(branch) => {
            for e in branch {
                convert_error(schema, json, e, out);
            }
        }
        None => out.push(Finding::error(
            path.to_vec(),
            "does not match any allowed form",
            None,
        )),
    }
}

fn unknown_field(schema: &Value, path: &[Seg], key: &str) -> Finding {
    let field = join(path, Seg::Key(key.to_owned()));
    if key == "password"
        && matches!(path, [Seg::Key(s), Seg::Key(u), Seg::Index(_)] if s == "spec" && u == "users")
    {
        return Finding::error(
            field,
            "plaintext passwords are not accepted",
            Some("run `dockop hash-password` and put its output in passwordHash (or in a file named by passwordFile)".to_owned()),
        )
        .at_key();
    }
    if key == "password"
        && matches!(path, [Seg::Key(s), Seg::Key(h), Seg::Key(b)] if s == "spec" && h == "health" && b == "basicAuth")
    {
        return Finding::error(
            field,
            "a password never stands in the spec",
            Some("put it in a root-only file (e.g. /etc/dockop/secrets/app-password, mode 0600) and name that file in passwordFile".to_owned()),
        )
        .at_key();
    }
    let allowed: Vec<String> = schema_at(schema, path)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let fix = match did_you_mean(key, &allowed) {
        Some(s) => format!("did you mean \"{s}\"?"),
        None if allowed.is_empty() => "remove it".to_owned(),
        None => format!("remove it; the fields here are: {}", allowed.join(", ")),
    };
    Finding::error(field, format!("unknown field \"{key}\""), Some(fix)).at_key()
}

fn not_allowed(path: Vec<Seg>, instance: &Value, allowed: &[String]) -> Finding {
    if let [Seg::Key(f)] = path.as_slice()
        && (f == "apiVersion" || f == "kind")
    {
        let expected = if f == "apiVersion" { API_VERSION } else { KIND };
        return Finding::error(
            path.clone(),
            format!("{f} must be \"{expected}\", found {}", value_text(instance)),
            Some(format!("set `{f}: {expected}`")),
        );
    }
    let hint = instance
        .as_str()
        .and_then(|s| did_you_mean(s, allowed))
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default();
    Finding::error(
        path,
        format!("{} is not an allowed value", value_text(instance)),
        Some(format!("use one of: {}{hint}", allowed.join(", "))),
    )
}

fn type_name(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "object" => "a mapping (key: value lines)",
        "array" => "a list",
        "null" => "nothing (null)",
        _ => "a value of another type",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

fn type_error(path: Vec<Seg>, expected: &[String], instance: &Value) -> Finding {
    let mut expected: Vec<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "null")
        .collect();
    if expected.is_empty() {
        expected.push("null");
    }
    let wants = |t: &str| expected.contains(&t);
    let names: Vec<&str> = expected.iter().map(|t| type_name(t)).collect();
    let fix = match instance {
        Value::Number(_) | Value::Bool(_) if wants("string") => {
            Some(format!("quote the value: \"{}\"", value_plain(instance)))
        }
        Value::String(s) if wants("integer") && s.trim().parse::<i64>().is_ok() => {
            Some(format!("remove the quotes: {}", s.trim()))
        }
        Value::String(s) if wants("boolean") && (s == "true" || s == "false") => {
            Some(format!("remove the quotes: {s}"))
        }
        Value::String(s) if wants("boolean") => Some(match s.to_ascii_lowercase().as_str() {
            "yes" | "on" | "y" => "write true (YAML 1.2 has no yes/on)".to_owned(),
            "no" | "off" | "n" => "write false (YAML 1.2 has no no/off)".to_owned(),
            _ => "write true or false".to_owned(),
        }),
        Value::Number(_) if wants("integer") => Some("use a whole number".to_owned()),
        _ if wants("array") => Some("write a list: one `- item` per line, or [a, b]".to_owned()),
        Value::Null if wants("object") => {
            Some("indent the fields under it, or remove the key".to_owned())
        }
        _ if wants("object") => Some("write `key: value` lines indented under it".to_owned()),
        _ => None,
    };
    Finding::error(
        path,
        format!(
            "expected {}, found {}",
            names.join(" or "),
            describe(instance)
        ),
        fix,
    )
}

/// The name of what a pattern-checked field holds.
fn pattern_what(path: &[Seg]) -> &'static str {
    match path {
        [Seg::Key(m), Seg::Key(n)] if m == "metadata" && n == "name" => "name",
        [.., Seg::Key(u), Seg::Index(_), Seg::Key(n)] if u == "users" && n == "name" => "user name",
        [.., Seg::Key(e), Seg::Index(_), Seg::Key(n)] if e == "env" && n == "name" => {
            "environment variable name"
        }
        _ => "value",
    }
}

/// How to write a pattern-checked field, explained.
fn pattern_help(path: &[Seg]) -> Option<&'static str> {
    match pattern_what(path) {
        "name" => Some(
            "use a DNS label: 1-63 characters of lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. my-app-1)",
        ),
        "user name" => Some(
            "use 1-32 characters: a lowercase letter or '_' first, then lowercase letters, digits, '_' or '-'",
        ),
        "environment variable name" => {
            Some("use letters, digits and '_', not starting with a digit (e.g. API_KEY)")
        }
        _ => None,
    }
}

/// The schema node describing the instance at `path` (through `$ref`, `Option` and `items`).
fn schema_at<'a>(root: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut node = resolve(root, root);
    for seg in path {
        let next = match seg {
            Seg::Key(key) => node
                .get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?,
            Seg::Index(_) => node.get("items")?,
        };
        node = resolve(root, next);
    }
    Some(node)
}

/// Follows `$ref` and unwraps `anyOf: [X, {type: null}]`.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            match r
                .strip_prefix("#/$defs/")
                .and_then(|name| root.get("$defs")?.get(name))
            {
                Some(target) => node = target,
                None => return node,
            }
            continue;
        }
        if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
            let non_null: Vec<&Value> = branches
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            if let [only] = non_null.as_slice() {
                node = only;
                continue;
            }
        }
        return node;
    }
    node
}

/// The first sentence of a description: up to a ". " followed by a capital letter.
fn first_sentence(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let end = one_line
        .match_indices(". ")
        .find(|(i, _)| {
            one_line
                .get(i + 2..)
                .and_then(|r| r.chars().next())
                .is_some_and(|c| c.is_ascii_uppercase())
        })
        .map(|(i, _)| i);
    match end {
        Some(i) => one_line.get(..i).unwrap_or(&one_line).to_owned(),
        None => one_line.trim_end_matches('.').to_owned(),
    }
}

fn quote(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    let ellipsis = if s.chars().count() > 80 { "..." } else { "" };
    format!("\"{}{ellipsis}\"", short.escape_debug())
}

/// A value for a message: strings quoted.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
        other => other.to_string(),
    }
}

/// A scalar as it was written, unquoted.
fn value_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    let idx = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        d[idx(i, 0)] = i;
    }
    for j in 0..=b.len() {
        d[idx(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[idx(i - 1, j)] + 1)
                .min(d[idx(i, j - 1)] + 1)
                .min(d[idx(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[idx(i - 2, j - 2)] + 1);
            }
            d[idx(i, j)] = v;
        }
    }
    d[idx(a.len(), b.len())]
}

/// The closest candidate when it is near enough to be a typo (or differs only in case or `_`/`-`).
pub(crate) fn did_you_mean(word: &str, candidates: &[String]) -> Option<String> {
    if word.chars().count() > 64 {
        return None;
    }
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let w = norm(word);
    if let Some(c) = candidates.iter().find(|c| norm(c) == w) {
        return Some(c.clone());
    }
    candidates
        .iter()
        .map(|c| (edit_distance(&w, &norm(c)), c))
        .filter(|(d, c)| *d <= 2.min(c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

// ---------------------------------------------------------------------------------------------------
// Layer 2: semantic rules on one object.
// ---------------------------------------------------------------------------------------------------

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

fn items(v: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

fn spec_path(rest: &[Seg]) -> Vec<Seg> {
    let mut p = vec![k("spec")];
    p.extend_from_slice(rest);
    p
}

fn is_absolute(p: &str) -> bool {
    p.starts_with('/')
}

const ABSOLUTE_FIX: &str = "use an absolute path, starting with /";

fn semantic_findings(json: &Value, out: &mut Vec<Finding>) {
    if let Some(labels) = get(json, &["metadata", "labels"]).and_then(Value::as_object) {
        check_labels(labels, out);
    }
    let Some(spec) = json.get("spec").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(image) = str_at(spec, "image")
        && !image.is_empty()
        && let Err(why) = ImageRef::parse(image)
    {
        out.push(Finding::error(
            spec_path(&[k("image")]),
            format!("{} is not a valid image reference: {why}", quote(image)),
            Some("write it as [REGISTRY[:PORT]/]PATH[:TAG][@sha256:DIGEST], e.g. 127.0.0.1:5000/web:v1".to_owned()),
        ));
    }
    if let Some(digest) = str_at(spec, "digest") {
        if !is_sha256_digest(digest) {
            out.push(Finding::error(
                spec_path(&[k("digest")]),
                format!("{} is not a digest", quote(digest)),
                Some("use sha256: followed by 64 lowercase hex digits, as `docker buildx imagetools inspect IMAGE` prints it".to_owned()),
            ));
        } else if let Some((_, pinned)) = str_at(spec, "image").and_then(|i| i.split_once('@'))
            && pinned != digest
        {
            out.push(Finding::error(
                spec_path(&[k("digest")]),
                "the digest differs from the one in `image`",
                Some("pin the digest in one place only".to_owned()),
            ));
        }
    }
    check_env(spec, out);
    check_volumes(spec, out);
    check_users(spec, out);
    check_ports(spec, out);
    check_health(spec, out);
    check_strategy(spec, out);
    check_networks(spec, out);
    check_depends_on(json, spec, out);
    check_resources(spec, out);
    check_logging(spec, out);
    check_tmpfs(spec, out);
    check_capabilities(spec, out);
    check_extra_hosts(spec, out);
    check_hostname(spec, out);
    if let Some(window) = get(spec, &["update", "window"]).and_then(Value::as_str)
        && let Err(why) = Window::parse(window)
    {
        out.push(Finding::error(
            spec_path(&[k("update"), k("window")]),
            format!("{} is not an update window: {why}", quote(window)),
            Some("write it as `[DAYS] HH:MM-HH:MM ZONE`, e.g. `Mon-Fri 02:00-04:00 UTC` or `Sat,Sun 22:00-02:00 +02:00`".to_owned()),
        ));
    }
    if spec.get("init") == Some(&Value::Bool(false)) {
        let timeout = spec
            .get("stopTimeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(super::DEFAULT_STOP_TIMEOUT));
        out.push(Finding::warning(
            spec_path(&[k("init")]),
            format!(
                "init is off: many apps ignore SIGTERM when they run as PID 1, so every stop (each update and rollback) waits the full stopTimeoutSeconds ({timeout} s) before Docker kills the app"
            ),
            Some("remove `init: false` unless the image runs its own init (tini, dumb-init) or handles SIGTERM as PID 1".to_owned()),
        ));
    }
}

fn check_labels(labels: &serde_json::Map<String, Value>, out: &mut Vec<Finding>) {
    for (key, value) in labels {
        let path = vec![k("metadata"), k("labels"), Seg::Key(key.clone())];
        if key.is_empty() {
            out.push(
                Finding::error(
                    path,
                    "label keys must not be empty",
                    Some("give the label a name".to_owned()),
                )
                .at_key(),
            );
        } else if key.starts_with("dockop.dev/") {
            out.push(
                Finding::error(
                    path,
                    format!(
                        "label key \"{key}\" is reserved: dockop sets dockop.dev/ labels itself"
                    ),
                    Some("use another prefix, e.g. example.com/".to_owned()),
                )
                .at_key(),
            );
        } else if key.len() > 253
            || key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=')
        {
            out.push(
                Finding::error(
                    path,
                    format!("label key {} is not usable: keys have no spaces, control characters or '='", quote(key)),
                    Some("use letters, digits, '.', '-', '_' and '/', e.g. team or example.com/owner".to_owned()),
                )
                .at_key(),
            );
        } else if let Some(v) = value.as_str()
            && v.chars().any(char::is_control)
        {
            out.push(Finding::error(
                path,
                "label values must be a single line without control characters",
                Some("put long or multi-line text in metadata.annotations".to_owned()),
            ));
        }
    }
}

fn check_env(spec: &Value, out: &mut Vec<Finding>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, env) in items(spec.get("env")) {
        let base = [k("env"), Seg::Index(i)];
        if let Some(name) = str_at(env, "name") {
            if let Some(first) = seen.get(name) {
                out.push(Finding::error(
                    spec_path(&[base[0].clone(), base[1].clone(), k("name")]),
                    format!(
                        "environment variable \"{name}\" is set twice (first at spec.env[{first}])"
                    ),
                    Some("keep one of them".to_owned()),
                ));
            } else {
                seen.insert(name, i);
            }
        }
        match (present(env, "value"), present(env, "valueFrom")) {
            (true, true) => out.push(Finding::error(
                spec_path(&[base[0].clone(), base[1].clone(), k("valueFrom")]),
                "both value and valueFrom are set",
                Some("keep exactly one of value and valueFrom".to_owned()),
            )),
            (false, false) if env.is_object() => out.push(Finding::error(
                spec_path(&base),
                "neither value nor valueFrom is set",
                Some("add `value: ...` (use value: \"\" for an empty variable) or `valueFrom: {file: /path}`".to_owned()),
            )),
            _ => {}
        }
        if let Some(file) = get(env, &["valueFrom", "file"]).and_then(Value::as_str)
            && !is_absolute(file)
        {
            out.push(Finding::error(
                spec_path(&[base[0].clone(), base[1].clone(), k("valueFrom"), k("file")]),
                format!("{} is not an absolute path", quote(file)),
                Some(ABSOLUTE_FIX.to_owned()),
            ));
        }
    }
}

fn check_volumes(spec: &Value, out: &mut Vec<Finding>) {
    let mut mounts: HashMap<String, usize> = HashMap::new();
    for (i, vol) in items(spec.get("volumes")) {
        let at = |f: &str| spec_path(&[k("volumes"), Seg::Index(i), k(f)]);
        match (present(vol, "name"), present(vol, "hostPath")) {
            (true, true) => out.push(Finding::error(
                at("hostPath"),
                "both name and hostPath are set",
                Some(
                    "use name for a named Docker volume or hostPath for a bind mount, not both"
                        .to_owned(),
                ),
            )),
            (false, false) if vol.is_object() => out.push(Finding::error(
                spec_path(&[k("volumes"), Seg::Index(i)]),
                "neither name nor hostPath is set",
                Some(
                    "add `name: my-data` (a named volume) or `hostPath: /srv/data` (a bind mount)"
                        .to_owned(),
                ),
            )),
            _ => {}
        }
        if let Some(name) = str_at(vol, "name")
            && !is_volume_name(name)
        {
            out.push(Finding::error(
                at("name"),
                format!("{} is not a valid volume name", quote(name)),
                Some(
                    "use letters, digits, '_', '.' and '-', starting with a letter or digit"
                        .to_owned(),
                ),
            ));
        }
        if let Some(host) = str_at(vol, "hostPath") {
            if !is_absolute(host) {
                out.push(Finding::error(
                    at("hostPath"),
                    format!("{} is not an absolute path", quote(host)),
                    Some(ABSOLUTE_FIX.to_owned()),
                ));
            } else if let Some(risk) = host_path_risk(&normalize_path(host)) {
                out.push(Finding::warning(
                    at("hostPath"),
                    format!(
                        "bind-mounting {} gives the container root on the host: {risk}",
                        quote(host)
                    ),
                    Some("mount only the directory the app needs (e.g. /srv/app/data); keep it only for a trusted tool that must manage the host".to_owned()),
                ));
            }
        }
        if let Some(mount) = str_at(vol, "mountPath") {
            let normal = normalize_path(mount);
            if !is_absolute(mount) {
                out.push(Finding::error(
                    at("mountPath"),
                    format!("{} is not an absolute path", quote(mount)),
                    Some(ABSOLUTE_FIX.to_owned()),
                ));
            } else if normal == "/" {
                let problem = if mount == "/" {
                    "cannot mount over the container's root /".to_owned()
                } else {
                    format!(
                        "{} is the container's root /: it cannot be mounted over",
                        quote(mount)
                    )
                };
                out.push(Finding::error(
                    at("mountPath"),
                    problem,
                    Some("mount at a directory such as /data".to_owned()),
                ));
            } else {
                if let Some(first) = mounts.get(&normal) {
                    out.push(Finding::error(
                        at("mountPath"),
                        format!("{} is already used by spec.volumes[{first}]", quote(mount)),
                        Some("mount each volume at its own path".to_owned()),
                    ));
                } else {
                    mounts.insert(normal, i);
                }
            }
        }
    }
}

/// An absolute path with `.`, `..`, repeated and trailing `/` resolved lexically (`/x/..` is `/`, `..`
/// above the root stays at the root), as the kernel and Docker see it (symbolic links aside).
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Host paths whose bind mount hands the host to the container, with what it exposes.
fn host_path_risk(normal: &str) -> Option<&'static str> {
    const SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];
    let under = |root: &str| normal == root || normal.starts_with(&format!("{root}/"));
    if normal == "/" {
        Some("it is the whole host file system (/etc/shadow, /root, the Docker socket)")
    } else if SOCKETS
        .iter()
        .any(|s| *s == normal || s.starts_with(&format!("{normal}/")))
    {
        Some(
            "the Docker socket is the Docker API, so any process in the container can start a privileged container (readOnly does not limit the API)",
        )
    } else if under("/proc") || under("/sys") {
        Some(
            "/proc and /sys are the host kernel's controls (sysctl, cgroups, devices, other processes' memory)",
        )
    } else {
        None
    }
}

fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_users(spec: &Value, out: &mut Vec<Finding>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, user) in items(spec.get("users")) {
        let at = |f: &str| spec_path(&[k("users"), Seg::Index(i), k(f)]);
        if let Some(name) = str_at(user, "name") {
            if let Some(first) = seen.get(name) {
                out.push(Finding::error(
                    at("name"),
                    format!("user \"{name}\" is listed twice (first at spec.users[{first}])"),
                    Some("keep one entry per user".to_owned()),
                ));
            } else {
                seen.insert(name, i);
            }
        }
        if present(user, "passwordHash") && present(user, "passwordFile") {
            out.push(Finding::error(
                at("passwordFile"),
                "both passwordHash and passwordFile are set",
                Some("keep one of them (or neither, for an account without a password)".to_owned()),
            ));
        }
        if let Some(hash) = str_at(user, "passwordHash") {
            match super::password::check_hash_syntax(hash) {
                Err(why) => out.push(Finding::error(
                    at("passwordHash"),
                    format!("not a usable password hash: {why}"),
                    Some("run `dockop hash-password` and paste its output here".to_owned()),
                )),
                Ok(()) => {
                    if let Some(why) = super::password::hash_cost_warning(hash) {
                        out.push(Finding::warning(
                            at("passwordHash"),
                            format!("{why}; anyone can make the container burn it by sending wrong passwords"),
                            Some("use `dockop hash-password` (yescrypt j9T), or rounds of at most 5000000".to_owned()),
                        ));
                    }
                }
            }
        }
        if let Some(file) = str_at(user, "passwordFile")
            && !is_absolute(file)
        {
            out.push(Finding::error(
                at("passwordFile"),
                format!("{} is not an absolute path", quote(file)),
                Some(ABSOLUTE_FIX.to_owned()),
            ));
        }
    }
}

/// A published port, for the clash checks.
#[derive(Debug, Clone)]
struct Binding {
    ip: Option<IpAddr>,
    ip_text: String,
    /// `ip` as canonical text (`::1` for `0:0::1`), else `ip_text`: equal keys, same address.
    ip_canonical: String,
    port: u64,
    protocol: String,
    index: usize,
}

fn bindings(spec: &Value) -> Vec<Binding> {
    items(spec.get("ports"))
        .filter_map(|(index, p)| {
            let container = p.get("containerPort").and_then(Value::as_u64)?;
            let port = match p.get("hostPort") {
                None | Some(Value::Null) => container,
                Some(v) => v.as_u64()?,
            };
            let ip_text = match p.get("hostIP") {
                None | Some(Value::Null) => "127.0.0.1".to_owned(),
                Some(v) => v.as_str()?.to_owned(),
            };
            let protocol = match p.get("protocol") {
                None | Some(Value::Null) => "tcp".to_owned(),
                Some(v) => v.as_str()?.to_owned(),
            };
            let ip: Option<IpAddr> = ip_text.parse().ok();
            Some(Binding {
                ip,
                ip_canonical: ip.map_or_else(|| ip_text.clone(), |ip| ip.to_string()),
                ip_text,
                port,
                protocol,
                index,
            })
        })
        .collect()
}

/// Whether two bindings take the same host port (the definition [`PortIndex`] implements in linear time).
#[cfg(test)]
fn clashes(a: &Binding, b: &Binding) -> bool {
    a.port == b.port
        && a.protocol == b.protocol
        && match (a.ip, b.ip) {
            (Some(x), Some(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
            _ => a.ip_text == b.ip_text,
        }
}

/// Published ports in the order they were added, indexed so that the first earlier binding a new one
/// [`clashes`] with is found in constant time: a hostile file of 20,000 ports on distinct addresses must
/// not cost 200 million comparisons.
#[derive(Default)]
struct PortIndex {
    /// (document, binding), in insertion order.
    entries: Vec<(usize, Binding)>,
    groups: HashMap<(u64, String), PortGroup>,
}

/// The entries of one port and protocol: the first on any address (unparsed ones clash only with the same
/// text), the first on an unspecified address, the first per address (canonical text).
#[derive(Default)]
struct PortGroup {
    any: Option<usize>,
    unspecified: Option<usize>,
    by_ip: HashMap<String, usize>,
}

impl PortIndex {
    /// The earliest entry `b` clashes with.
    fn first_clash(&self, b: &Binding) -> Option<&(usize, Binding)> {
        let g = self.groups.get(&(b.port, b.protocol.clone()))?;
        let same = g.by_ip.get(&b.ip_canonical).copied();
        let i = match b.ip {
            Some(ip) if ip.is_unspecified() => g.any,
            Some(_) => match (same, g.unspecified) {
                (Some(a), Some(u)) => Some(a.min(u)),
                (a, u) => a.or(u),
            },
            None => same,
        };
        self.entries.get(i?)
    }

    fn insert(&mut self, doc: usize, b: Binding) {
        let i = self.entries.len();
        let g = self.groups.entry((b.port, b.protocol.clone())).or_default();
        if b.ip.is_some() {
            g.any.get_or_insert(i);
        }
        if b.ip.is_some_and(|ip| ip.is_unspecified()) {
            g.unspecified.get_or_insert(i);
        }
        g.by_ip.entry(b.ip_canonical.clone()).or_insert(i);
        self.entries.push((doc, b));
    }
}

fn check_ports(spec: &Value, out: &mut Vec<Finding>) {
    let list = bindings(spec);
    let mut index = PortIndex::default();
    for b in &list {
        let at = |f: &str| spec_path(&[k("ports"), Seg::Index(b.index), k(f)]);
        if b.ip.is_none() {
            out.push(Finding::error(
                at("hostIP"),
                format!("{} is not an IP address", quote(&b.ip_text)),
                Some("use an IPv4 or IPv6 address, e.g. 127.0.0.1 (this host only) or 0.0.0.0 (every interface)".to_owned()),
            ));
        }
        if let Some((_, first)) = index.first_clash(b) {
            out.push(Finding::error(
                at("hostPort"),
                format!(
                    "host port {}/{} on {} is already published by spec.ports[{}]",
                    b.port, b.protocol, b.ip_text, first.index
                ),
                Some("use another hostPort".to_owned()),
            ));
        }
        index.insert(0, b.clone());
    }
    let has_users = spec
        .get("users")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    if !has_users {
        for b in &list {
            if let Some(ip) = b.ip
                && !ip.is_loopback()
            {
                out.push(Finding::warning(
                    spec_path(&[k("ports"), Seg::Index(b.index), k("hostIP")]),
                    format!(
                        "network exposed without authentication: port {}/{} is published on {} and no users are configured",
                        b.port, b.protocol, b.ip_text
                    ),
                    Some("publish on 127.0.0.1 (and reach it through a proxy or tunnel), or configure users with password hashes".to_owned()),
                ));
            }
        }
    }
}

fn check_health(spec: &Value, out: &mut Vec<Finding>) {
    let Some(health) = spec.get("health").filter(|h| h.is_object()) else {
        return;
    };
    if let Some(path) = str_at(health, "path")
        && !path.starts_with('/')
    {
        out.push(Finding::error(
            spec_path(&[k("health"), k("path")]),
            format!("{} does not start with /", quote(path)),
            Some(format!(
                "write it as an absolute URL path, e.g. /{}",
                path.trim_start_matches('/')
            )),
        ));
    }
    let ports: Vec<u64> = items(spec.get("ports"))
        .filter_map(|(_, p)| p.get("containerPort").and_then(Value::as_u64))
        .collect();
    if let Some(port) = health.get("port").and_then(Value::as_u64)
        && !ports.is_empty()
        && !ports.contains(&port)
    {
        let list: Vec<String> = ports.iter().map(u64::to_string).collect();
        out.push(Finding::error(
            spec_path(&[k("health"), k("port")]),
            format!(
                "port {port} is not one of the container ports ({})",
                list.join(", ")
            ),
            Some("probe a port listed in spec.ports[].containerPort".to_owned()),
        ));
    }
    check_probe_credentials(health, out);
}

fn check_strategy(spec: &Value, out: &mut Vec<Finding>) {
    if get(spec, &["update", "strategy"]).and_then(Value::as_str) != Some("start-first") {
        return;
    }
    let at = spec_path(&[k("update"), k("strategy")]);
    if !present(spec, "health") {
        out.push(Finding::error(
            at.clone(),
            "start-first switches traffic once the new container answers healthy, and this object has no health check",
            Some("add spec.health (path and port), or use strategy: stop-first".to_owned()),
        ));
    }
    if items(spec.get("ports")).next().is_none() {
        out.push(Finding::error(
            at.clone(),
            "start-first needs ports: dockop proxy owns the host ports and switches them",
            Some("declare spec.ports, or use strategy: stop-first".to_owned()),
        ));
    }
    for (i, p) in items(spec.get("ports")) {
        if str_at(p, "protocol") == Some("udp") {
            out.push(Finding::error(
                spec_path(&[k("ports"), Seg::Index(i), k("protocol")]),
                "dockop proxy forwards HTTP over TCP: a UDP port cannot be switched",
                Some("use strategy: stop-first for this object".to_owned()),
            ));
        }
    }
}

/// Headers a probe must not set: `Host` is the probe's own, the rest are hop-by-hop or framing headers
/// (RFC 9110 section 7.6.1) that would break the exchange.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
];

/// Headers whose value is a credential: never as a literal in the spec.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// RFC 9110 `token`: the characters of a header name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_probe_credentials(health: &Value, out: &mut Vec<Finding>) {
    let auth = |rest: &[Seg]| {
        let mut p = vec![k("health"), k("basicAuth")];
        p.extend_from_slice(rest);
        spec_path(&p)
    };
    if let Some(basic) = health.get("basicAuth").filter(|b| b.is_object()) {
        if let Some(user) = str_at(basic, "username")
            && (user.contains(':') || user.chars().any(char::is_control))
        {
            out.push(Finding::error(
                auth(&[k("username")]),
                "a basic-auth user name cannot hold ':' or control characters (RFC 7617)",
                Some("use the user name the app expects, e.g. opencode".to_owned()),
            ));
        }
        if let Some(file) = str_at(basic, "passwordFile")
            && !is_absolute(file)
        {
            out.push(Finding::error(
                auth(&[k("passwordFile")]),
                format!("{} is not an absolute path", quote(file)),
                Some(ABSOLUTE_FIX.to_owned()),
            ));
        }
    }
    let has_basic = present(health, "basicAuth");
    for (i, h) in items(health.get("httpHeaders")) {
        let at = |f: &str| spec_path(&[k("health"), k("httpHeaders"), Seg::Index(i), k(f)]);
        let name = str_at(h, "name").unwrap_or_default();
        let lower = name.to_ascii_lowercase();
        if !name.is_empty() && !is_token(name) {
            out.push(Finding::error(
                at("name"),
                format!("{} is not a valid header name", quote(name)),
                Some("use letters, digits and !#$%&'*+-.^_`|~ only (RFC 9110 token), e.g. X-Probe-Token".to_owned()),
            ));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            out.push(Finding::error(
                at("name"),
                format!("the probe sets {name} itself: it cannot be overridden"),
                Some(
                    "remove this header; dockop probes with Host set to the container address"
                        .to_owned(),
                ),
            ));
        } else if has_basic && lower == "authorization" {
            out.push(Finding::error(
                at("name"),
                "an Authorization header and basicAuth are both set",
                Some("keep basicAuth, or this header with valueFrom.file, not both".to_owned()),
            ));
        }
        match (present(h, "value"), present(h, "valueFrom")) {
            (true, true) => out.push(Finding::error(
                at("valueFrom"),
                "both value and valueFrom are set",
                Some("keep exactly one of value and valueFrom".to_owned()),
            )),
            (false, false) if h.is_object() => out.push(Finding::error(
                spec_path(&[k("health"), k("httpHeaders"), Seg::Index(i)]),
                "neither value nor valueFrom is set",
                Some("add `value: ...` or, for a secret, `valueFrom: {file: /etc/dockop/secrets/...}`".to_owned()),
            )),
            (true, false) if CREDENTIAL_HEADERS.contains(&lower.as_str()) => {
                out.push(Finding::error(
                    at("value"),
                    format!("{name} carries a credential: it must not stand in the spec as a literal"),
                    Some("put the value in a root-only file and use `valueFrom: {file: /etc/dockop/secrets/...}` (or basicAuth)".to_owned()),
                ));
            }
            _ => {}
        }
        if let Some(v) = str_at(h, "value")
            && v.chars().any(|c| c.is_control() && c != '\t')
        {
            out.push(Finding::error(
                at("value"),
                "a header value cannot hold line breaks or control characters",
                Some("write the value on one line".to_owned()),
            ));
        }
        if let Some(file) = get(h, &["valueFrom", "file"]).and_then(Value::as_str)
            && !is_absolute(file)
        {
            out.push(Finding::error(
                spec_path(&[
                    k("health"),
                    k("httpHeaders"),
                    Seg::Index(i),
                    k("valueFrom"),
                    k("file"),
                ]),
                format!("{} is not an absolute path", quote(file)),
                Some(ABSOLUTE_FIX.to_owned()),
            ));
        }
    }
}

/// Docker's predefined networks: not user-defined bridges (no aliases), picked by other fields.
const PREDEFINED_NETWORKS: &[&str] = &["bridge", "host", "none", "default"];

/// An RFC 1123 label: letters, digits and `-`, not at either end, 1-63 characters.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 host name: dot-separated labels, at most 253 characters.
fn is_hostname(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_networks(spec: &Value, out: &mut Vec<Finding>) {
    let host = spec.get("hostNetwork") == Some(&Value::Bool(true));
    if host {
        if items(spec.get("ports")).next().is_some() {
            out.push(Finding::error(
                spec_path(&[k("hostNetwork")]),
                "hostNetwork shares the host's ports: ports cannot be published as well",
                Some("remove spec.ports (the app listens on the host directly), or remove hostNetwork".to_owned()),
            ));
        }
        if items(spec.get("networks")).next().is_some() {
            out.push(Finding::error(
                spec_path(&[k("hostNetwork")]),
                "hostNetwork and networks exclude each other: a host-network container joins no other network",
                Some("remove spec.networks, or remove hostNetwork".to_owned()),
            ));
        }
        if present(spec, "hostname") {
            out.push(Finding::error(
                spec_path(&[k("hostname")]),
                "a host-network container has the host's name: hostname cannot be set",
                Some("remove spec.hostname, or remove hostNetwork".to_owned()),
            ));
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, net) in items(spec.get("networks")) {
        let at = |rest: &[Seg]| {
            let mut p = vec![k("networks"), Seg::Index(i)];
            p.extend_from_slice(rest);
            spec_path(&p)
        };
        if let Some(name) = str_at(net, "name") {
            if PREDEFINED_NETWORKS.contains(&name) {
                let fix = if name == "host" {
                    "use `hostNetwork: true` instead".to_owned()
                } else {
                    "name a user-defined network (e.g. web): dockop creates it; leave networks out to stay on the default bridge".to_owned()
                };
                out.push(Finding::error(
                    at(&[k("name")]),
                    format!("\"{name}\" is one of Docker's predefined networks, not a user-defined bridge"),
                    Some(fix),
                ));
            } else if !name.is_empty() && !is_volume_name(name) {
                out.push(Finding::error(
                    at(&[k("name")]),
                    format!("{} is not a valid network name", quote(name)),
                    Some(
                        "use letters, digits, '_', '.' and '-', starting with a letter or digit"
                            .to_owned(),
                    ),
                ));
            }
            if let Some(first) = seen.get(name) {
                out.push(Finding::error(
                    at(&[k("name")]),
                    format!("network \"{name}\" is listed twice (first at spec.networks[{first}])"),
                    Some("list each network once, with all of its aliases".to_owned()),
                ));
            } else {
                seen.insert(name, i);
            }
        }
        let mut aliases: HashMap<&str, usize> = HashMap::new();
        for (j, alias) in items(net.get("aliases")) {
            let Some(a) = alias.as_str() else { continue };
            if !is_hostname(a) {
                out.push(Finding::error(
                    at(&[k("aliases"), Seg::Index(j)]),
                    format!("{} is not a DNS name", quote(a)),
                    Some("use letters, digits and '-' in dot-separated labels, e.g. opencode-backend".to_owned()),
                ));
            } else if let Some(first) = aliases.get(a) {
                out.push(Finding::error(
                    at(&[k("aliases"), Seg::Index(j)]),
                    format!("alias \"{a}\" is listed twice (first at aliases[{first}])"),
                    Some("keep one of them".to_owned()),
                ));
            } else {
                aliases.insert(a, j);
            }
        }
    }
}

fn check_depends_on(json: &Value, spec: &Value, out: &mut Vec<Finding>) {
    let own = get(json, &["metadata", "name"]).and_then(Value::as_str);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, dep) in items(spec.get("dependsOn")) {
        let Some(d) = dep.as_str() else { continue };
        let at = spec_path(&[k("dependsOn"), Seg::Index(i)]);
        if Some(d) == own {
            out.push(Finding::error(
                at,
                format!("\"{d}\" depends on itself"),
                Some("remove this entry".to_owned()),
            ));
        } else if let Some(first) = seen.get(d) {
            out.push(Finding::error(
                at,
                format!("\"{d}\" is listed twice (first at spec.dependsOn[{first}])"),
                Some("keep one of them".to_owned()),
            ));
        } else {
            seen.insert(d, i);
        }
    }
}

fn quantity_finding(path: Vec<Seg>, text: &str, why: impl std::fmt::Display) -> Finding {
    Finding::error(
        path,
        format!("{} is not a size: {why}", quote(text)),
        Some("write a Kubernetes quantity: a number with Ki, Mi, Gi (powers of 1024) or k, M, G (powers of 1000), e.g. 512Mi".to_owned()),
    )
}

/// Docker refuses memory limits below 6 MiB.
const MIN_MEMORY: u64 = 6 << 20;

fn check_resources(spec: &Value, out: &mut Vec<Finding>) {
    let Some(memory) = get(spec, &["resources", "memory"]).and_then(Value::as_str) else {
        return;
    };
    let path = spec_path(&[k("resources"), k("memory")]);
    match super::quantity::parse_bytes(memory) {
        Err(why) => out.push(quantity_finding(path, memory, why)),
        Ok(bytes) if bytes < MIN_MEMORY => out.push(Finding::error(
            path,
            format!(
                "{} is {bytes} bytes: Docker needs at least 6Mi",
                quote(memory)
            ),
            Some("use 6Mi or more (most apps need 64Mi or more)".to_owned()),
        )),
        Ok(_) => {}
    }
}

/// Log drivers a stock Docker engine ships.
const LOG_DRIVERS: &[&str] = &[
    "json-file",
    "local",
    "journald",
    "syslog",
    "none",
    "fluentd",
    "gelf",
    "awslogs",
    "splunk",
    "etwlogs",
    "gcplogs",
    "logentries",
];

fn check_logging(spec: &Value, out: &mut Vec<Finding>) {
    let Some(logging) = spec.get("logging").filter(|l| l.is_object()) else {
        return;
    };
    let driver = str_at(logging, "driver").unwrap_or(super::DEFAULT_LOG_DRIVER);
    if !LOG_DRIVERS.contains(&driver) {
        let all: Vec<String> = LOG_DRIVERS.iter().map(|s| (*s).to_owned()).collect();
        let hint = did_you_mean(driver, &all)
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        out.push(Finding::error(
            spec_path(&[k("logging"), k("driver")]),
            format!("{} is not a Docker log driver", quote(driver)),
            Some(format!("use one of: {}{hint}", LOG_DRIVERS.join(", "))),
        ));
    }
    let Some(options) = logging.get("options").and_then(Value::as_object) else {
        return;
    };
    let at = |key: &str| spec_path(&[k("logging"), k("options"), Seg::Key(key.to_owned())]);
    if driver == "none" && !options.is_empty() {
        out.push(Finding::error(
            spec_path(&[k("logging"), k("options")]),
            "the none driver keeps no logs and takes no options",
            Some("remove options, or pick a driver that keeps logs (json-file, local)".to_owned()),
        ));
    }
    if matches!(driver, "json-file" | "local") {
        if let Some(size) = options.get("max-size").and_then(Value::as_str)
            && !is_docker_size(size)
        {
            out.push(Finding::error(
                at("max-size"),
                format!("{} is not a log size", quote(size)),
                Some("write a number with k, m or g, as Docker expects, e.g. 10m".to_owned()),
            ));
        }
        if let Some(files) = options.get("max-file").and_then(Value::as_str)
            && !files.parse::<u32>().is_ok_and(|n| n >= 1)
        {
            out.push(Finding::error(
                at("max-file"),
                format!("{} is not a number of files", quote(files)),
                Some("write a whole number of 1 or more, quoted: max-file: \"3\"".to_owned()),
            ));
        }
    }
}

/// Docker's log size syntax (`go-units` RAMInBytes): a number and an optional k/m/g (any case, optional b).
fn is_docker_size(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let t = t.trim_end_matches(['k', 'm', 'g', 't']);
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && lower.len() - t.len() <= 2
}

fn check_tmpfs(spec: &Value, out: &mut Vec<Finding>) {
    let volumes: Vec<String> = items(spec.get("volumes"))
        .filter_map(|(_, v)| str_at(v, "mountPath"))
        .map(|m| m.trim_end_matches('/').to_owned())
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, t) in items(spec.get("tmpfs")) {
        let at = |f: &str| spec_path(&[k("tmpfs"), Seg::Index(i), k(f)]);
        if let Some(mount) = str_at(t, "mountPath") {
            let normal = mount.trim_end_matches('/').to_owned();
            if !is_absolute(mount) {
                out.push(Finding::error(
                    at("mountPath"),
                    format!("{} is not an absolute path", quote(mount)),
                    Some(ABSOLUTE_FIX.to_owned()),
                ));
            } else if normal.is_empty() {
                out.push(Finding::error(
                    at("mountPath"),
                    "cannot mount over the container's root /",
                    Some("mount at a directory such as /tmp".to_owned()),
                ));
            } else if volumes.contains(&normal) {
                out.push(Finding::error(
                    at("mountPath"),
                    format!("{} is already used by spec.volumes", quote(mount)),
                    Some("mount the tmpfs at another path, or drop one of them".to_owned()),
                ));
            } else if let Some(first) = seen.get(&normal) {
                out.push(Finding::error(
                    at("mountPath"),
                    format!("{} is already used by spec.tmpfs[{first}]", quote(mount)),
                    Some("mount each tmpfs at its own path".to_owned()),
                ));
            } else {
                seen.insert(normal, i);
            }
        }
        if let Some(size) = str_at(t, "size")
            && let Err(why) = super::quantity::parse_bytes(size)
        {
            out.push(quantity_finding(at("size"), size, why));
        }
    }
}

/// Linux capabilities by name (without `CAP_`), as Docker accepts them.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

fn check_capabilities(spec: &Value, out: &mut Vec<Finding>) {
    let Some(caps) = spec.get("capabilities").filter(|c| c.is_object()) else {
        return;
    };
    let known: Vec<String> = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    for list in ["add", "drop"] {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, cap) in items(caps.get(list)) {
            let Some(c) = cap.as_str() else { continue };
            let at = spec_path(&[k("capabilities"), k(list), Seg::Index(i)]);
            let bare = c.strip_prefix("CAP_").unwrap_or(c);
            if c == "ALL" || CAPABILITIES.contains(&c) {
                if let Some(first) = seen.get(c) {
                    out.push(Finding::error(
                        at,
                        format!("{c} is listed twice (first at capabilities.{list}[{first}])"),
                        Some("keep one of them".to_owned()),
                    ));
                } else {
                    seen.insert(c, i);
                }
            } else if bare != c && CAPABILITIES.contains(&bare) {
                out.push(Finding::error(
                    at,
                    format!("write capabilities without the CAP_ prefix: {}", quote(c)),
                    Some(format!("write {bare}")),
                ));
            } else if CAPABILITIES.contains(&c.to_ascii_uppercase().as_str())
                || c.eq_ignore_ascii_case("all")
            {
                out.push(Finding::error(
                    at,
                    format!("capability names are upper case: {}", quote(c)),
                    Some(format!("write {}", c.to_ascii_uppercase())),
                ));
            } else {
                let fix = match did_you_mean(bare, &known) {
                    Some(s) => format!("did you mean {s}? (names as in capabilities(7), without CAP_, or ALL)"),
                    None => "use a name from capabilities(7) without CAP_, e.g. NET_BIND_SERVICE, or ALL".to_owned(),
                };
                out.push(Finding::error(
                    at,
                    format!("{} is not a Linux capability", quote(c)),
                    Some(fix),
                ));
            }
        }
    }
    let adds: Vec<&str> = items(caps.get("add"))
        .filter_map(|(_, c)| c.as_str())
        .collect();
    for (i, cap) in items(caps.get("drop")) {
        if let Some(c) = cap.as_str()
            && c != "ALL"
            && adds.contains(&c)
        {
            out.push(Finding::error(
                spec_path(&[k("capabilities"), k("drop"), Seg::Index(i)]),
                format!("{c} is both added and dropped"),
                Some("keep it in one list: add grants it, drop removes it".to_owned()),
            ));
        }
    }
}

fn check_extra_hosts(spec: &Value, out: &mut Vec<Finding>) {
    for (i, entry) in items(spec.get("extraHosts")) {
        let Some(e) = entry.as_str() else { continue };
        let ok = e.split_once(':').is_some_and(|(host, ip)| {
            is_hostname(host) && (ip == "host-gateway" || ip.parse::<IpAddr>().is_ok())
        });
        if !ok {
            out.push(Finding::error(
                spec_path(&[k("extraHosts"), Seg::Index(i)]),
                format!("{} is not a HOST:IP entry", quote(e)),
                Some(
                    "write the host name, a colon and an IP address, e.g. \"db.internal:10.0.0.5\""
                        .to_owned(),
                ),
            ));
        }
    }
}

fn check_hostname(spec: &Value, out: &mut Vec<Finding>) {
    if let Some(h) = str_at(spec, "hostname")
        && !is_hostname(h)
    {
        out.push(Finding::error(
            spec_path(&[k("hostname")]),
            format!("{} is not a host name", quote(h)),
            Some("use letters, digits and '-' in dot-separated labels of at most 63 characters, e.g. opencode".to_owned()),
        ));
    }
}

// ---------------------------------------------------------------------------------------------------
// Across objects.
// ---------------------------------------------------------------------------------------------------

fn check_across(docs: &[Document], per_doc: &mut [Vec<Finding>]) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut published = PortIndex::default();
    for (d, doc) in docs.iter().enumerate() {
        let Some(findings) = per_doc.get_mut(d) else {
            continue;
        };
        if let Some(name) = get(&doc.json, &["metadata", "name"]).and_then(Value::as_str) {
            match names.get(name).and_then(|first| docs.get(*first)) {
                Some(first) => findings.push(Finding::error(
                    vec![k("metadata"), k("name")],
                    {
                        let (line, col) = first.root.position(&[k("metadata"), k("name")]);
                        format!(
                            "name \"{name}\" is already used by the object at {}:{line}:{col}",
                            first.file.display(),
                        )
                    },
                    Some("names must be unique across every file: rename one of them".to_owned()),
                )),
                None => {
                    names.insert(name, d);
                }
            }
        }
        let Some(spec) = doc.json.get("spec") else {
            continue;
        };
        let mine = bindings(spec);
        for b in &mine {
            if let Some((other, first)) = published.first_clash(b)
                && let Some(other_doc) = docs.get(*other)
            {
                let (line, _) = other_doc
                    .root
                    .position(&spec_path(&[k("ports"), Seg::Index(first.index)]));
                let who = get(&other_doc.json, &["metadata", "name"])
                    .and_then(Value::as_str)
                    .unwrap_or("another object");
                findings.push(Finding::error(
                    spec_path(&[k("ports"), Seg::Index(b.index), k("hostPort")]),
                    format!(
                        "host port {}/{} on {} is already published by \"{who}\" ({}:{line})",
                        b.port,
                        b.protocol,
                        b.ip_text,
                        other_doc.file.display()
                    ),
                    Some("use another hostPort or hostIP".to_owned()),
                ));
            }
        }
        for b in mine {
            published.insert(d, b);
        }
    }
    check_dependencies(docs, per_doc);
}

/// An object in the dependency graph: its document and its `dependsOn` entries (index, name).
type Node<'a> = (usize, Vec<(usize, &'a str)>);

/// `dependsOn` across every file read together: each name is an object, and the order has no cycle.
fn check_dependencies(docs: &[Document], per_doc: &mut [Vec<Finding>]) {
    // name -> (document, its dependsOn entries with their index)
    let mut graph: BTreeMap<&str, Node<'_>> = BTreeMap::new();
    for (d, doc) in docs.iter().enumerate() {
        let Some(name) = get(&doc.json, &["metadata", "name"]).and_then(Value::as_str) else {
            continue;
        };
        let deps: Vec<(usize, &str)> = items(get(&doc.json, &["spec", "dependsOn"]))
            .filter_map(|(i, v)| v.as_str().map(|s| (i, s)))
            .filter(|(_, s)| *s != name)
            .collect();
        graph.entry(name).or_insert((d, deps));
    }
    let names: Vec<String> = graph.keys().map(|n| (*n).to_owned()).collect();
    for (d, deps) in graph.values() {
        for (i, dep) in deps {
            if graph.contains_key(dep) {
                continue;
            }
            let fix = match did_you_mean(dep, &names) {
                Some(s) => format!("did you mean \"{s}\"?"),
                None => "name an object declared in the files read together (metadata.name), or remove the entry".to_owned(),
            };
            if let Some(f) = per_doc.get_mut(*d) {
                f.push(Finding::error(
                    spec_path(&[k("dependsOn"), Seg::Index(*i)]),
                    format!("\"{dep}\" is not an object in the files read together"),
                    Some(fix),
                ));
            }
        }
    }
    // Depth-first search; a back edge closes a cycle, reported at the entry that closes it.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = graph.keys().map(|n| (*n, Mark::New)).collect();
    let mut found: Vec<(usize, usize, String)> = Vec::new();
    for start in graph.keys().copied() {
        if marks.get(start) != Some(&Mark::New) {
            continue;
        }
        // (node, next edge to follow); `path` mirrors the open nodes.
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Open);
        while let Some((node, edge)) = stack.last().copied() {
            let Some((doc, deps)) = graph.get(node) else {
                stack.pop();
                continue;
            };
            match deps.get(edge) {
                None => {
                    marks.insert(node, Mark::Done);
                    stack.pop();
                }
                Some((index, dep)) => {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    match marks.get(dep) {
                        Some(Mark::New) => {
                            marks.insert(dep, Mark::Open);
                            stack.push((dep, 0));
                        }
                        Some(Mark::Open) => {
                            let from = stack.iter().position(|(n, _)| n == dep).unwrap_or(0);
                            let mut cycle: Vec<&str> = stack
                                .get(from..)
                                .unwrap_or_default()
                                .iter()
                                .map(|(n, _)| *n)
                                .collect();
                            cycle.push(dep);
                            found.push((*doc, *index, cycle.join(" -> ")));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for (doc, index, cycle) in found {
        if let Some(f) = per_doc.get_mut(doc) {
            f.push(Finding::error(
                spec_path(&[k("dependsOn"), Seg::Index(index)]),
                format!("dependency cycle: {cycle}"),
                Some("objects start in dependsOn order, so a cycle can never start: remove one of these entries".to_owned()),
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {

    #[test]
    fn port_index_finds_the_same_first_clash_as_comparing_every_pair() {
        let ips = [
            "127.0.0.1",
            "0.0.0.0",
            "10.0.0.1",
            "::",
            "::1",
            "0:0::1",
            "bogus",
        ];
        let mut list = Vec::new();
        for i in 0..400 {
            let ip_text = ips[fastrand::usize(..ips.len())].to_owned();
            let ip: Option<IpAddr> = ip_text.parse().ok();
            list.push(Binding {
                ip,
                ip_canonical: ip.map_or_else(|| ip_text.clone(), |ip| ip.to_string()),
                ip_text,
                port: fastrand::u64(80..84),
                protocol: if fastrand::bool() { "tcp" } else { "udp" }.to_owned(),
                index: i,
            });
        }
        let mut index = PortIndex::default();
        for (n, b) in list.iter().enumerate() {
            let brute = list.iter().take(n).find(|a| clashes(a, b)).map(|a| a.index);
            assert_eq!(index.first_clash(b).map(|(_, a)| a.index), brute, "{b:?}");
            index.insert(0, b.clone());
        }
    }

    #[test]
    fn many_ports_on_distinct_addresses_validate_fast() {
        let mut text = String::from(
            "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: web}\nspec:\n  image: web\n  users: [{name: u}]\n  ports:\n",
        );
        for i in 0..20_000u32 {
            text.push_str(&format!(
                "    - {{containerPort: 80, hostIP: 10.{}.{}.{}}}\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
        let started = std::time::Instant::now();
        let loaded = super::super::load::load_str(std::path::Path::new("p.yaml"), &text);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics.first());
        // Comparing every pair (200 million) took far longer.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    use super::*;

    #[test]
    fn suggestions() {
        let c: Vec<String> = ["image", "digest", "command", "containerPort", "hostIP"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(did_you_mean("imgae", &c).as_deref(), Some("image"));
        assert_eq!(
            did_you_mean("container_port", &c).as_deref(),
            Some("containerPort")
        );
        assert_eq!(did_you_mean("hostIp", &c).as_deref(), Some("hostIP"));
        assert_eq!(did_you_mean("zzz", &c), None);
    }
}
