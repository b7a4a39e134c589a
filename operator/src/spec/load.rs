//! Reading desired-state YAML: files or directories, one or many documents, with the source location of
//! every object and every error.
//!
//! Parsing goes through serde-saphyr with a budget (files over 1 MiB, alias-expansion bombs, deep nesting
//! and duplicate keys are refused) into a small position-carrying tree (`Node`); validation
//! ([`super::validate`]) checks that tree against the JSON Schema generated from the types and against the
//! semantic rules, and maps every finding back to a line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned, Tagged, UserMessageFormatter};

use super::Container;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Printed; does not fail validation.
    Warning,
    /// Fails validation; the object (or the whole source revision) is not applied.
    Error,
}

/// One finding about the input, located in its file: `file:line:col: field: problem` + `fix: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the finding is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted field path, e.g. `spec.users[1].passwordHash`; empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        write!(
            f,
            "{}:{}:{}: {sev}",
            self.file.display(),
            self.line,
            self.column
        )?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.problem)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// An error about a whole file (unreadable, too large, not YAML).
    pub fn file_error(file: &Path, line: usize, column: usize, problem: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: line.max(1),
            column: column.max(1),
            field: String::new(),
            problem: problem.into(),
            fix: None,
        }
    }

    /// Adds a fix.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// An object with the place it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedObject {
    /// The object.
    pub object: Container,
    /// The file it was read from.
    pub file: PathBuf,
    /// 1-based line of the document's start.
    pub line: usize,
}

/// Everything read from a set of paths: the valid objects and every finding.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Objects that passed schema and semantic validation (all of them when `errors()` is empty).
    pub objects: Vec<SourcedObject>,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// The findings of severity error.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
    /// True when nothing is of severity error.
    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }
    /// The findings of severity warning.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
}

/// Reads and validates every `*.yaml`/`*.yml` file under `paths` (files or directories, sorted), runs
/// schema and semantic validation across all of them, and returns the objects with every finding.
/// Never panics and never touches the host beyond reading the files.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut diagnostics = Vec::new();
    let mut documents = Vec::new();
    for file in expand_paths(paths, &mut diagnostics) {
        read_into(&file, &mut documents, &mut diagnostics);
    }
    finish(documents, diagnostics)
}

fn read_into(file: &Path, documents: &mut Vec<Document>, diagnostics: &mut Vec<Diagnostic>) {
    match read_file(file) {
        Ok(text) => parse_into(file, &text, documents, diagnostics),
        Err(d) => diagnostics.push(d),
    }
}

fn parse_into(
    file: &Path,
    text: &str,
    documents: &mut Vec<Document>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match parse_documents(file, text) {
        Ok(docs) => documents.extend(docs),
        Err(d) => diagnostics.push(d),
    }
}

/// The name stdin is reported under when a path is `-`.
pub const STDIN_NAME: &str = "<stdin>";

/// Where each field of one loaded object was written, for commands that report on fields after
/// validation (`dockop export`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPositions {
    file: PathBuf,
    root: Node,
}

impl FieldPositions {
    /// The file the object was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// 1-based line and column of the key a dotted field path names (`spec.volumes[1].hostPath`), or
    /// `None` when the file does not spell that field out (it has its default).
    pub fn key_position(&self, field: &str) -> Option<(usize, usize)> {
        let path = parse_field_path(field)?;
        self.root.get(&path)?;
        Some(self.root.key_position(&path))
    }
}

/// `spec.volumes[1].hostPath` as path steps; `None` when it is not of that form.
fn parse_field_path(field: &str) -> Option<Vec<Seg>> {
    let mut path = Vec::new();
    for part in field.split('.') {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        if key.is_empty() {
            return None;
        }
        path.push(Seg::Key(key.to_owned()));
        if !indexes.is_empty() {
            for index in indexes.trim_end_matches(']').split("][") {
                path.push(Seg::Index(index.parse().ok()?));
            }
        }
    }
    Some(path)
}

/// Objects read from files, directories and stdin (a path of `-`, read at most once and reported as
/// [`STDIN_NAME`]), validated exactly as [`load_paths`] does, with the field positions of every
/// valid object (`positions[i]` belongs to `loaded.objects[i]`).
#[derive(Debug, Clone, Default)]
pub struct LoadedWithPositions {
    /// What [`load_paths`] returns for the same input.
    pub loaded: Loaded,
    /// Field positions, one per object (`None` only if its document could not be found again).
    pub positions: Vec<Option<FieldPositions>>,
}

/// Like [`load_paths`], also reading stdin for `-` (with `read_stdin`, called at most once) and
/// keeping where each field of each valid object was written.
pub fn load_with_positions(
    paths: &[PathBuf],
    read_stdin: impl FnOnce() -> std::io::Result<String>,
) -> LoadedWithPositions {
    let mut diagnostics = Vec::new();
    let mut documents = Vec::new();
    let mut read_stdin = Some(read_stdin);
    for path in paths {
        if path.as_os_str() != "-" {
            for file in expand_paths(std::slice::from_ref(path), &mut diagnostics) {
                read_into(&file, &mut documents, &mut diagnostics);
            }
            continue;
        }
        let stdin = Path::new(STDIN_NAME);
        let Some(read) = read_stdin.take() else {
            continue;
        };
        match read() {
            Ok(text) if text.len() as u64 > MAX_FILE_BYTES => {
                diagnostics.push(too_large(stdin, text.len() as u64));
            }
            Ok(text) => parse_into(stdin, &text, &mut documents, &mut diagnostics),
            Err(e) => diagnostics.push(Diagnostic::file_error(
                stdin,
                1,
                1,
                format!("cannot read stdin: {e}"),
            )),
        }
    }
    let roots: Vec<(PathBuf, Node)> = documents
        .iter()
        .map(|d| (d.file.clone(), d.root.clone()))
        .collect();
    let loaded = finish(documents, diagnostics);
    let positions = loaded
        .objects
        .iter()
        .map(|o| {
            roots
                .iter()
                .find(|(file, root)| *file == o.file && root.line == o.line)
                .map(|(file, root)| FieldPositions {
                    file: file.clone(),
                    root: root.clone(),
                })
        })
        .collect();
    LoadedWithPositions { loaded, positions }
}

/// Reads one YAML text as if it were the file `file` (the unit and corpus tests). The sources read files:
/// the git source writes a revision's blobs to a staging directory and reads them with [`load_paths`].
pub fn load_str(file: &Path, text: &str) -> Loaded {
    let mut diagnostics = Vec::new();
    let mut documents = Vec::new();
    if text.len() as u64 > MAX_FILE_BYTES {
        diagnostics.push(too_large(file, text.len() as u64));
    } else {
        match parse_documents(file, text) {
            Ok(docs) => documents = docs,
            Err(d) => diagnostics.push(d),
        }
    }
    finish(documents, diagnostics)
}

/// Validates the parsed documents and builds the typed objects of the valid ones.
fn finish(documents: Vec<Document>, mut diagnostics: Vec<Diagnostic>) -> Loaded {
    let per_doc = super::validate::check_documents(&documents);
    let mut objects = Vec::new();
    for (doc, mut found) in documents.into_iter().zip(per_doc) {
        let ok = !found.iter().any(|d| d.severity == Severity::Error);
        if ok {
            match serde_json::from_value::<Container>(doc.json) {
                Ok(object) => objects.push(SourcedObject {
                    object,
                    file: doc.file,
                    line: doc.root.line,
                }),
                Err(e) => found.push(
                    Diagnostic::file_error(
                        &doc.file,
                        doc.root.line,
                        doc.root.column,
                        e.to_string(),
                    )
                    .with_fix("this is a bug in dockop's schema: please report it with the file"),
                ),
            }
        }
        diagnostics.extend(found);
    }
    Loaded {
        objects,
        diagnostics,
    }
}

/// The files named by `paths`: files as given, directories expanded to their `*.yaml`/`*.yml` files
/// (sorted, not recursive). Unreadable paths become diagnostics.
fn expand_paths(paths: &[PathBuf], diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Err(e) => diagnostics.push(
                Diagnostic::file_error(path, 1, 1, format!("cannot read {}: {e}", path.display()))
                    .with_fix("check the path"),
            ),
            Ok(meta) if meta.is_dir() => match std::fs::read_dir(path) {
                Err(e) => diagnostics.push(Diagnostic::file_error(
                    path,
                    1,
                    1,
                    format!("cannot read directory {}: {e}", path.display()),
                )),
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| {
                            matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                                && p.is_file()
                        })
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        let mut d = Diagnostic::file_error(
                            path,
                            1,
                            1,
                            "directory holds no *.yaml or *.yml files",
                        );
                        d.severity = Severity::Warning;
                        diagnostics.push(d);
                    }
                    files.extend(found);
                }
            },
            Ok(_) => files.push(path.clone()),
        }
    }
    files
}

/// The error for a file of `len` bytes, over [`MAX_FILE_BYTES`] (the file and git sources give the same).
pub fn too_large(file: &Path, len: u64) -> Diagnostic {
    Diagnostic::file_error(
        file,
        1,
        1,
        format!("file is {len} bytes; files over {MAX_FILE_BYTES} bytes (1 MiB) are refused"),
    )
    .with_fix("split the objects over several files")
}

fn read_file(file: &Path) -> Result<String, Diagnostic> {
    let fail = |e: std::io::Error| {
        Diagnostic::file_error(file, 1, 1, format!("cannot read {}: {e}", file.display()))
    };
    let meta = std::fs::metadata(file).map_err(fail)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(file, meta.len()));
    }
    let bytes = std::fs::read(file).map_err(fail)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(file, bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        let (line, column) = position_of_byte(e.as_bytes(), e.utf8_error().valid_up_to());
        Diagnostic::file_error(file, line, column, "the file is not UTF-8 text")
            .with_fix("save the file as UTF-8")
    })
}

/// 1-based line and column of byte `offset` in `bytes`.
fn position_of_byte(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = bytes.get(..offset).unwrap_or(bytes);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(before.get(line_start..).unwrap_or_default())
        .chars()
        .count()
        + 1;
    (line, column)
}

/// The parser settings: a budget against hostile input and YAML 1.2 scalars.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_FILE_BYTES as usize);
    budget.max_documents = 10_000;
    // The tree reader recurses once per level (more frames per level since it reads tags): 32 levels keep
    // a debug build well inside a 2 MiB thread stack (500 levels overflowed it at about 50).
    budget.max_depth = 32;
    budget.max_nodes = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_total_scalar_bytes = 2 * MAX_FILE_BYTES as usize;
    budget.max_merge_keys = 1_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.alias_limits.max_total_replayed_events = 100_000;
    options.alias_limits.max_replay_stack_depth = 16;
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.with_snippet = false;
    options
}

/// One YAML document of a file: its tree with positions and the same value as JSON.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    /// The file it came from.
    pub file: PathBuf,
    /// The root node.
    pub root: Node,
    /// The document as a JSON value (what the schema checks and the typed object is built from).
    pub json: serde_json::Value,
}

/// Parses every non-empty document of `text`; a syntax or budget error fails the whole file.
pub(crate) fn parse_documents(file: &Path, text: &str) -> Result<Vec<Document>, Diagnostic> {
    let nodes: Vec<Node> = serde_saphyr::from_multiple_with_options(text, parse_options())
        .map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
            let message: String = UserMessageFormatter
                .format_message(e.without_snippet())
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            Diagnostic::file_error(file, line, column, format!("invalid YAML: {message}"))
        })?;
    Ok(nodes
        .into_iter()
        .map(|root| Document {
            file: file.to_path_buf(),
            json: root.to_json(),
            root,
        })
        .collect())
}

/// A YAML node with the 1-based position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The explicit YAML tag written on the node, resolved (`tag:yaml.org,2002:binary`, `!foo`); `None`
    /// when it has none. Validation refuses tags other than the core ones.
    pub tag: Option<String>,
    /// The value.
    pub value: NodeValue,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeValue {
    /// `null`, `~` or empty.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key as text.
    pub key: String,
    /// 1-based line of the key.
    pub key_line: usize,
    /// 1-based column of the key.
    pub key_column: usize,
    /// The explicit YAML tag written on the key, resolved; `None` when it has none.
    pub key_tag: Option<String>,
    /// The value.
    pub value: Node,
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Renders a path the way diagnostics show it: `spec.users[1].passwordHash`.
pub(crate) fn path_to_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Key(k) => {
                out.push_str(&format!("[\"{}\"]", k.escape_debug()));
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

impl Node {
    /// The node as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::UInt(u) => Value::from(*u),
            NodeValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node at `path`, if it exists.
    pub fn get(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = node.child(seg)?;
        }
        Some(node)
    }

    fn child(&self, seg: &Seg) -> Option<&Node> {
        match (&self.value, seg) {
            (NodeValue::Map(entries), Seg::Key(k)) => {
                entries.iter().rev().find(|e| &e.key == k).map(|e| &e.value)
            }
            (NodeValue::Seq(items), Seg::Index(i)) => items.get(*i),
            _ => None,
        }
    }

    /// Position of the node at `path`, or of its nearest existing ancestor.
    pub fn position(&self, path: &[Seg]) -> (usize, usize) {
        let mut node = self;
        for seg in path {
            match node.child(seg) {
                Some(n) => node = n,
                None => break,
            }
        }
        (node.line, node.column)
    }

    /// Position of the key `path`'s last step names (for mapping entries), else of the node itself.
    pub fn key_position(&self, path: &[Seg]) -> (usize, usize) {
        if let Some((Seg::Key(k), parent)) = path.split_last()
            && let Some(Node {
                value: NodeValue::Map(entries),
                ..
            }) = self.get(parent)
            && let Some(e) = entries.iter().rev().find(|e| &e.key == k)
        {
            return (e.key_line, e.key_column);
        }
        self.position(path)
    }
}

fn location_to_position(loc: &serde_saphyr::Location) -> (usize, usize) {
    (
        usize::try_from(loc.line()).unwrap_or(usize::MAX).max(1),
        usize::try_from(loc.column()).unwrap_or(usize::MAX).max(1),
    )
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Tagged<NodeValue>>::deserialize(deserializer)?;
        let (line, column) = location_to_position(&spanned.referenced);
        let Tagged(value, tag) = spanned.value;
        Ok(Node {
            line,
            column,
            tag,
            value,
        })
    }
}

struct NodeValueVisitor;

impl<'de> Visitor<'de> for NodeValueVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(if v < 0 {
            NodeValue::Int(v)
        } else {
            NodeValue::UInt(v as u64)
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        Ok(NodeValue::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeValue, E> {
        Ok(match (i64::try_from(v), u64::try_from(v)) {
            (_, Ok(u)) => NodeValue::UInt(u),
            (Ok(i), _) => NodeValue::Int(i),
            _ => NodeValue::Float(v as f64),
        })
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeValue, E> {
        Ok(u64::try_from(v).map_or(NodeValue::Float(v as f64), NodeValue::UInt))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        d.deserialize_any(NodeValueVisitor)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        d.deserialize_any(NodeValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Tagged<KeyText>>>()? {
            let value: Node = map.next_value()?;
            let (key_line, key_column) = location_to_position(&key.referenced);
            let Tagged(KeyText(key), key_tag) = key.value;
            entries.push(Entry {
                key,
                key_line,
                key_column,
                key_tag,
                value,
            });
        }
        Ok(NodeValue::Map(entries))
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeValueVisitor)
    }
}

/// A mapping key: scalars only, as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a plain mapping key (complex keys are not supported)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyText, E> {
                Ok(KeyText(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<KeyText, E> {
                Ok(KeyText(String::from_utf8_lossy(v).into_owned()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
            fn visit_none<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<KeyText, D::Error> {
                KeyText::deserialize(d)
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<KeyText, D::Error> {
                KeyText::deserialize(d)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn many_findings_are_capped_per_document_with_a_count() {
        let mut text = String::from(
            "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: web}\nspec:\n  image: web\n",
        );
        for i in 0..250 {
            text.push_str(&format!("  bogus{i}: 1\n"));
        }
        let loaded = load_str(Path::new("h.yaml"), &text);
        let errors: Vec<_> = loaded.errors().collect();
        assert_eq!(errors.len(), crate::spec::validate::MAX_FINDINGS + 1);
        let last = errors.last().expect("summary");
        assert_eq!(
            last.problem,
            "and 150 more findings in this document (only the first 100 are shown)"
        );
    }

    #[test]
    fn positions_of_keys_and_values() {
        let text = "a: 1\nb:\n  c: [x, {d: true}]\n  e: \"s\"\n";
        let docs = parse_documents(Path::new("t.yaml"), text).unwrap();
        let root = &docs[0].root;
        let p = |s: &[Seg]| root.position(s);
        assert_eq!(p(&[Seg::Key("a".into())]), (1, 4));
        assert_eq!(root.key_position(&[Seg::Key("b".into())]), (2, 1));
        let c = [Seg::Key("b".into()), Seg::Key("c".into())];
        assert_eq!(p(&c), (3, 6));
        let d = [
            c[0].clone(),
            c[1].clone(),
            Seg::Index(1),
            Seg::Key("d".into()),
        ];
        assert_eq!(p(&d), (3, 14));
        assert_eq!(root.key_position(&d), (3, 11));
        assert_eq!(
            docs[0].json,
            serde_json::json!({"a": 1, "b": {"c": ["x", {"d": true}], "e": "s"}})
        );
    }

    #[test]
    fn field_positions_from_stdin() {
        let text = "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: a}\nspec:\n  image: web:v1\n  volumes:\n    - {name: d, mountPath: /d}\n    - {hostPath: /srv, mountPath: /srv}\n";
        let mut reads = 0;
        let read = load_with_positions(&[PathBuf::from("-"), PathBuf::from("-")], || {
            reads += 1;
            Ok(text.to_owned())
        });
        assert_eq!(reads, 1);
        assert!(read.loaded.is_valid(), "{:?}", read.loaded.diagnostics);
        assert_eq!(read.loaded.objects.len(), 1);
        let p = read.positions[0].as_ref().unwrap();
        assert_eq!(p.file(), Path::new(STDIN_NAME));
        assert_eq!(p.key_position("spec.volumes[1].hostPath"), Some((8, 8)));
        assert_eq!(p.key_position("spec.image"), Some((5, 3)));
        assert_eq!(p.key_position("spec.init"), None);
        assert_eq!(p.key_position("spec..x"), None);
        let broken = load_with_positions(&[PathBuf::from("-")], || Ok("a: [".to_owned()));
        assert!(!broken.loaded.is_valid());
        assert_eq!(broken.loaded.diagnostics[0].file, Path::new(STDIN_NAME));
    }

    #[test]
    fn multiple_and_empty_documents() {
        let text = "---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n";
        let docs = parse_documents(Path::new("t.yaml"), text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].root.line, 7);
    }

    #[test]
    fn refuses_duplicate_keys_and_alias_bombs() {
        let err = parse_documents(Path::new("t.yaml"), "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 1), "{err}");
        assert!(err.problem.contains("duplicate"), "{err}");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_documents(Path::new("t.yaml"), &bomb).unwrap_err();
        assert!(err.problem.starts_with("invalid YAML"), "{err}");
    }
}
