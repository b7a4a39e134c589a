//! Field-by-field differences between two specs, for `dockop plan` (as `kubectl diff` / `terraform
//! plan` show them): `~ spec.env[TZ].value: "UTC" -> "Europe/Paris"`, `+ spec.ports[1]: {...}`.
//! Secret values are never shown: a `passwordHash` prints as `(changed)`; `valueFrom.file` and
//! `passwordFile` are paths, printed as they are.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::Container;

/// Fields whose value is never printed.
const SECRET_FIELDS: &[&str] = &["passwordHash"];

/// What happened to one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// Present now, absent before.
    Added,
    /// Absent now, present before.
    Removed,
    /// Present on both sides with different values.
    Changed,
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// What happened.
    pub kind: ChangeKind,
    /// Path such as `spec.env[TZ].value` or `spec.ports[1]` (lists of named items are keyed by name).
    pub field: String,
    /// The old value as compact JSON (`(secret)` for secret fields), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The new value as compact JSON (`(changed)` for secret fields), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = String::new();
        match self.kind {
            ChangeKind::Added => write!(
                f,
                "+ {}: {}",
                self.field,
                self.new.as_ref().unwrap_or(&none)
            ),
            ChangeKind::Removed => write!(
                f,
                "- {}: {}",
                self.field,
                self.old.as_ref().unwrap_or(&none)
            ),
            ChangeKind::Changed => write!(
                f,
                "~ {}: {} -> {}",
                self.field,
                self.old.as_ref().unwrap_or(&none),
                self.new.as_ref().unwrap_or(&none)
            ),
        }
    }
}

/// The changes from `old` to `new` in `metadata.labels` and `spec`, in field order.
pub fn diff(old: &Container, new: &Container) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return out;
    };
    for top in ["metadata", "spec"] {
        walk(top, old.get(top), new.get(top), false, &mut out);
    }
    out
}

fn walk(
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    secret: bool,
    out: &mut Vec<FieldChange>,
) {
    let shown = |v: &Value, word: &str| {
        if secret {
            word.to_owned()
        } else {
            redacted(v).to_string()
        }
    };
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    match (old, new) {
        (None, None) => {}
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.dedup();
            let mut seen = std::collections::BTreeSet::new();
            for k in keys {
                if !seen.insert(k) {
                    continue;
                }
                let child = format!("{path}.{k}");
                let secret = secret || SECRET_FIELDS.contains(&k.as_str());
                walk(&child, a.get(k), b.get(k), secret, out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => walk_list(path, a, b, secret, out),
        // A list that appears or goes shows item by item, as one that grows or shrinks.
        (None, Some(Value::Array(b))) => walk_list(path, &[], b, secret, out),
        (Some(Value::Array(a)), None) => walk_list(path, a, &[], secret, out),
        (Some(a), Some(b)) if a == b => {}
        (Some(a), Some(b)) => out.push(FieldChange {
            kind: ChangeKind::Changed,
            field: path.to_owned(),
            old: Some(shown(a, "(secret)")),
            new: Some(shown(b, "(changed)")),
        }),
        (None, Some(b)) => out.push(FieldChange {
            kind: ChangeKind::Added,
            field: path.to_owned(),
            old: None,
            new: Some(shown(b, "(set)")),
        }),
        (Some(a), None) => out.push(FieldChange {
            kind: ChangeKind::Removed,
            field: path.to_owned(),
            old: Some(shown(a, "(secret)")),
            new: None,
        }),
    }
}

/// `v` with every secret field's value replaced by `"(secret)"`.
fn redacted(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if SECRET_FIELDS.contains(&k.as_str()) {
                        Value::String("(secret)".into())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// The `name` of a list item, when every item of both lists has a distinct one.
fn item_name(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

fn keyed(items: &[Value]) -> Option<Vec<(&str, &Value)>> {
    let named: Vec<(&str, &Value)> = items
        .iter()
        .map(|v| item_name(v).map(|n| (n, v)))
        .collect::<Option<_>>()?;
    let distinct: std::collections::BTreeSet<&str> = named.iter().map(|(n, _)| *n).collect();
    (distinct.len() == named.len()).then_some(named)
}

fn walk_list(path: &str, a: &[Value], b: &[Value], secret: bool, out: &mut Vec<FieldChange>) {
    if let (Some(ka), Some(kb)) = (keyed(a), keyed(b)) {
        for (name, old) in &ka {
            let new = kb.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            walk(&format!("{path}[{name}]"), Some(old), new, secret, out);
        }
        for (name, new) in kb.iter().filter(|(n, _)| !ka.iter().any(|(m, _)| m == n)) {
            walk(&format!("{path}[{name}]"), None, Some(new), secret, out);
        }
        return;
    }
    for i in 0..a.len().max(b.len()) {
        walk(&format!("{path}[{i}]"), a.get(i), b.get(i), secret, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Object `web` with `extra` (spec lines).
    fn obj(extra: &str) -> Container {
        crate::testing::object("web").spec(extra).validated()
    }

    fn lines(a: &Container, b: &Container) -> Vec<String> {
        diff(a, b).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn env_by_name_ports_by_index() {
        let a =
            obj("env: [{name: TZ, value: UTC}]\nports: [{containerPort: 8080, hostPort: 18080}]\n");
        let b = obj(
            "env: [{name: TZ, value: Europe/Paris}, {name: K, valueFrom: {file: /etc/dockop/secrets/k}}]\nports: [{containerPort: 8080, hostPort: 18080}, {containerPort: 9090, hostPort: 19090}]\n",
        );
        let l = lines(&a, &b);
        assert!(
            l.contains(&r#"~ spec.env[TZ].value: "UTC" -> "Europe/Paris""#.to_owned()),
            "{l:?}"
        );
        assert!(
            l.iter()
                .any(|x| x.starts_with("+ spec.env[K]: ") && x.contains("/etc/dockop/secrets/k")),
            "{l:?}"
        );
        assert!(
            l.iter()
                .any(|x| x.starts_with("+ spec.ports[1]: ") && x.contains("9090")),
            "{l:?}"
        );
        assert!(lines(&a, &a).is_empty());
    }

    #[test]
    fn password_hashes_never_printed() {
        let h1 = "$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let h2 = "$6$saltsalt$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let a = obj(&format!("users: [{{name: alice, passwordHash: '{h1}'}}]\n"));
        let b = obj(&format!(
            "users: [{{name: alice, passwordHash: '{h2}'}}, {{name: bob, passwordHash: '{h2}'}}]\n"
        ));
        let text = lines(&a, &b).join("\n");
        assert!(!text.contains("saltsalt"), "{text}");
        assert!(
            text.contains("~ spec.users[alice].passwordHash: (secret) -> (changed)"),
            "{text}"
        );
        assert!(text.contains("+ spec.users[bob]: "), "{text}");
    }
}
