//! What goes over the wire: the generic JSON payload, and the short human line chat services and email
//! get, in each service's documented form.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::event::{Event, EventKind};
use super::target::{Endpoint, Service, Target};

/// One notification: an event with where and when it happened. The generic service's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// What happened.
    pub event: EventKind,
    /// The object.
    pub object: String,
    /// The machine's hostname.
    pub host: String,
    /// The digest the event is about.
    pub digest: Option<String>,
    /// The digest before.
    pub previous_digest: Option<String>,
    /// The app version reported.
    pub version: Option<String>,
    /// Why.
    pub reason: String,
    /// A short line for people.
    pub message: String,
    /// When, RFC 3339 UTC.
    pub time: String,
}

impl Message {
    /// The message of `event` on `host` at `at`.
    pub fn new(event: Event, host: &str, at: DateTime<Utc>) -> Self {
        Message {
            event: event.kind,
            object: event.object,
            host: host.to_owned(),
            digest: event.digest,
            previous_digest: event.previous_digest,
            version: event.version,
            reason: event.reason,
            message: event.message,
            time: at.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }

    /// The one-line human form: `[host] object rolled_back: ...`.
    pub fn line(&self) -> String {
        format!(
            "[{}] {} {}: {}",
            self.host,
            self.object,
            self.event.as_str(),
            self.message
        )
    }

    /// The title chat and push services show.
    pub fn title(&self) -> String {
        format!("dockop: {} {}", self.object, self.event.as_str())
    }
}

/// A rendered HTTP request body with its content type and extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Headers besides the target's own.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

fn json(v: &impl Serialize) -> Rendered {
    Rendered {
        content_type: "application/json",
        headers: Vec::new(),
        body: serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// ntfy tags (emoji short codes) per event.
fn ntfy_tags(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Updated => "arrow_up,dockop",
        EventKind::RolledBack => "rewind,warning,dockop",
        EventKind::PreflightRejected => "no_entry,dockop",
        EventKind::UpdateAvailable => "package,dockop",
        EventKind::Degraded => "warning,dockop",
        EventKind::Recovered => "white_check_mark,dockop",
        EventKind::InvalidSpec => "x,dockop",
        EventKind::Orphaned => "ghost,dockop",
    }
}

/// The HTTP body of `msg` for `target`'s service.
pub fn render(target: &Target, msg: &Message) -> Rendered {
    match target.service {
        Service::Generic | Service::Smtp => json(msg),
        Service::Slack => match &target.endpoint {
            Endpoint::Http {
                channel: Some(ch), ..
            } => json(&serde_json::json!({"channel": ch, "text": msg.line()})),
            _ => json(&serde_json::json!({"text": msg.line()})),
        },
        Service::Discord => json(&serde_json::json!({"content": msg.line()})),
        Service::Ntfy => {
            let o = &target.ntfy;
            let priority = if msg.event.is_problem() { "4" } else { "3" };
            Rendered {
                content_type: "text/plain; charset=utf-8",
                headers: vec![
                    (
                        "Title".into(),
                        o.title.clone().unwrap_or_else(|| msg.title()),
                    ),
                    (
                        "Tags".into(),
                        o.tags
                            .clone()
                            .unwrap_or_else(|| ntfy_tags(msg.event).to_owned()),
                    ),
                    (
                        "Priority".into(),
                        o.priority.clone().unwrap_or_else(|| priority.to_owned()),
                    ),
                ],
                body: msg.line().into_bytes(),
            }
        }
    }
}

/// The email of `msg`: subject and plain-text body (the line, then every field).
pub fn email(subject: &str, msg: &Message) -> (String, String) {
    let fields = serde_json::to_string_pretty(msg).unwrap_or_default();
    (
        format!("{subject}: {} {}", msg.object, msg.event.as_str()),
        format!("{}\n\n{fields}\n", msg.line()),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn msg(kind: EventKind) -> Message {
        Message::new(
            Event {
                kind,
                object: "web".into(),
                digest: Some("sha256:2".into()),
                previous_digest: Some("sha256:1".into()),
                version: None,
                reason: "health: HTTP 500".into(),
                message: "update failed".into(),
            },
            "box",
            DateTime::from_timestamp(0, 0).unwrap_or_default(),
        )
    }

    #[test]
    fn generic_body_has_every_field() {
        let t = Target::parse("generic+http://h:1/x").unwrap();
        let r = render(&t, &msg(EventKind::RolledBack));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["event"], "rolled_back");
        assert_eq!(v["previousDigest"], "sha256:1");
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        for k in ["object", "host", "digest", "version", "reason", "message"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(r.content_type, "application/json");
    }

    #[test]
    fn chat_bodies() {
        let m = msg(EventKind::RolledBack);
        let t = Target::parse("slack://hook:a-b-c@webhook?base=http://h:1").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&render(&t, &m).body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"text": "[box] web rolled_back: update failed"})
        );
        let t = Target::parse("discord://t@1?base=http://h:1").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&render(&t, &m).body).unwrap();
        assert_eq!(v["content"], "[box] web rolled_back: update failed");
        let t = Target::parse("ntfy://h:1/t?scheme=http&priority=5").unwrap();
        let r = render(&t, &m);
        assert_eq!(
            r.headers[0],
            ("Title".into(), "dockop: web rolled_back".into())
        );
        assert_eq!(r.headers[1].1, "rewind,warning,dockop");
        assert_eq!(r.headers[2].1, "5");
        assert_eq!(String::from_utf8(r.body).unwrap(), m.line());
    }
}
