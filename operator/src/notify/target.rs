//! Notification URLs (shoutrrr-style): parsing `generic`, `slack`, `discord`, `ntfy` and `smtp` forms into
//! a [`Target`] that knows where and how to deliver, and never shows its token.

use std::collections::BTreeSet;
use std::fmt;

use url::Url;

use super::event::EventKind;

/// A notification service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// A JSON POST to any HTTP endpoint.
    Generic,
    /// Slack (incoming webhook or bot token).
    Slack,
    /// A Discord webhook.
    Discord,
    /// An ntfy server topic.
    Ntfy,
    /// Email over SMTP.
    Smtp,
}

impl Service {
    /// The label of `dockop_notifications_total{service}` and of log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Generic => "generic",
            Service::Slack => "slack",
            Service::Discord => "discord",
            Service::Ntfy => "ntfy",
            Service::Smtp => "smtp",
        }
    }
}

/// Why a notification URL was refused. The messages never quote the URL (it carries tokens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("not a URL ({0})")]
    Syntax(String),
    /// A scheme dockop does not know.
    #[error(
        "unknown service {0:?}; use generic+http://, generic+https://, generic://, slack://, discord://, ntfy:// or smtp://"
    )]
    Scheme(String),
    /// A required part is missing or malformed.
    #[error("{0}")]
    Form(String),
    /// The mail server needs TLS (STARTTLS or SMTPS), which dockop's SMTP client does not speak.
    #[error(
        "{0}: dockop's SMTP client does not speak TLS (STARTTLS/SMTPS); send through a local relay (loopback), or pass ?encryption=none for a trusted network"
    )]
    Tls(String),
    /// `?events=` names an unknown event.
    #[error(
        "unknown event {0:?} in ?events=; known: updated, rolled_back, preflight_rejected, update_available, degraded, recovered, invalid_spec, orphaned"
    )]
    Event(String),
}

/// How a target is reached.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An HTTP POST.
    Http {
        /// The full request URL (carries the token for slack webhooks and discord).
        url: Url,
        /// Extra request headers (authorization, generic `@Header=value`).
        headers: Vec<(String, String)>,
        /// Slack bot API: the channel to post to (`None` for webhooks).
        channel: Option<String>,
    },
    /// SMTP over plain TCP.
    Smtp {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// `user`, `password` for AUTH PLAIN.
        auth: Option<(String, String)>,
        /// Envelope and header sender.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// Subject prefix (default `dockop`).
        subject: String,
    },
}

/// One place notifications go: a service, its endpoint, and the events it wants.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The service.
    pub service: Service,
    /// Host (and port) shown in logs and errors instead of the URL.
    pub host: String,
    /// Where and how to deliver.
    pub endpoint: Endpoint,
    /// `?events=`: only these events (`None`: all).
    pub events: Option<BTreeSet<EventKind>>,
    /// ntfy `?priority=`, `?tags=`, `?title=` overrides.
    pub ntfy: NtfyOptions,
}

/// ntfy options taken from the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NtfyOptions {
    /// `Priority` header (1-5) instead of the event's.
    pub priority: Option<String>,
    /// `Tags` header instead of the event's.
    pub tags: Option<String>,
    /// `Title` header instead of the event's.
    pub title: Option<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Http { url, .. } => f
                .debug_struct("Http")
                .field("host", &host_port(url))
                .finish_non_exhaustive(),
            Endpoint::Smtp { host, port, .. } => f
                .debug_struct("Smtp")
                .field("host", host)
                .field("port", port)
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("service", &self.service.as_str())
            .field("host", &self.host)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.service.as_str(), self.host)
    }
}

impl Target {
    /// True when this target wants `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }

    /// Parses a notification URL.
    pub fn parse(raw: &str) -> Result<Target, UrlError> {
        let raw = raw.trim();
        let (scheme, _) = raw
            .split_once("://")
            .ok_or_else(|| UrlError::Syntax("expected SERVICE://...".into()))?;
        let scheme = scheme.to_ascii_lowercase();
        // `generic+https://x` is parsed as `https://x`; the rest as given.
        // `generic://x` is `https://x` unless `?disabletls=yes`.
        let inner = match scheme.strip_prefix("generic+") {
            Some(rest) => format!("{rest}{}", &raw[scheme.len()..]),
            None if scheme == "generic" => format!("https{}", &raw[scheme.len()..]),
            None => raw.to_owned(),
        };
        let url = Url::parse(&inner).map_err(|e| UrlError::Syntax(e.to_string()))?;
        let mut q = Query::of(&url);
        let events = q.take("events").map(|v| parse_events(&v)).transpose()?;
        let base = q.take("base").map(|b| parse_base(&b)).transpose()?;
        let mut ntfy = NtfyOptions::default();
        let (service, endpoint) = match scheme.as_str() {
            "generic+http" | "generic+https" => (Service::Generic, generic(url, &mut q, true)?),
            "generic" => (Service::Generic, generic(url, &mut q, false)?),
            "slack" => (Service::Slack, slack(&url, base, &mut q)?),
            "discord" => (Service::Discord, discord(&url, base, &mut q)?),
            "ntfy" => {
                ntfy = NtfyOptions {
                    priority: q.take("priority"),
                    tags: q.take("tags"),
                    title: q.take("title"),
                };
                (Service::Ntfy, ntfy_endpoint(&url, base, &mut q)?)
            }
            "smtp" => (Service::Smtp, smtp(&url, &mut q)?),
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        let host = match &endpoint {
            Endpoint::Http { url, .. } => host_port(url),
            Endpoint::Smtp { host, port, .. } => format!("{host}:{port}"),
        };
        Ok(Target {
            service,
            host,
            endpoint,
            events,
            ntfy,
        })
    }
}

/// `host[:port]` of a URL.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// The query of a URL as ordered pairs, with the reserved ones taken out one by one.
struct Query(Vec<(String, String)>);

impl Query {
    fn of(url: &Url) -> Self {
        Query(url.query_pairs().into_owned().collect())
    }

    /// Removes and returns the value of `key` (case-insensitive).
    fn take(&mut self, key: &str) -> Option<String> {
        let i = self
            .0
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))?;
        Some(self.0.remove(i).1)
    }

    fn yes(&mut self, key: &str) -> bool {
        self.take(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "1"))
    }
}

fn parse_events(list: &str) -> Result<BTreeSet<EventKind>, UrlError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| EventKind::parse(s).ok_or_else(|| UrlError::Event(s.to_owned())))
        .collect()
}

fn parse_base(base: &str) -> Result<Url, UrlError> {
    let u = Url::parse(base).map_err(|e| UrlError::Form(format!("?base= is not a URL ({e})")))?;
    match u.scheme() {
        "http" => Ok(u),
        "https" => Ok(u),
        _ => Err(UrlError::Form(
            "?base= must be http(s)://HOST[:PORT]".into(),
        )),
    }
}

/// Joins `path` onto `base` (keeping any path prefix of `base`).
fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let prefix = base.path().trim_end_matches('/');
    u.set_path(&format!("{prefix}{path}"));
    u.set_query(None);
    u
}

fn default_base(service: &str, base: Option<Url>, default: &str) -> Result<Url, UrlError> {
    match base {
        Some(b) => Ok(b),
        None => Url::parse(default)
            .map_err(|e| UrlError::Form(format!("{service}: bad default address ({e})"))),
    }
}

fn generic(mut url: Url, q: &mut Query, shortcut: bool) -> Result<Endpoint, UrlError> {
    let mut headers = Vec::new();
    let mut forwarded = Vec::new();
    if !shortcut {
        let plain = q.yes("disabletls");
        let scheme = if plain { "http" } else { "https" };
        url.set_scheme(scheme)
            .map_err(|()| UrlError::Form("cannot use this address over HTTP".into()))?;
        // shoutrrr's own query props of the generic service are not forwarded.
        for k in [
            "template",
            "contenttype",
            "method",
            "titlekey",
            "messagekey",
            "title",
        ] {
            let _ = q.take(k);
        }
    }
    for (k, v) in q.0.drain(..) {
        match k.strip_prefix('@') {
            Some(h) => headers.push((h.to_owned(), v)),
            None => forwarded.push((k.strip_prefix('_').unwrap_or(&k).to_owned(), v)),
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Form("generic: missing host".into()));
    }
    url.set_query(None);
    if !forwarded.is_empty() {
        url.query_pairs_mut().extend_pairs(forwarded);
    }
    Ok(Endpoint::Http {
        url,
        headers,
        channel: None,
    })
}

fn slack(url: &Url, base: Option<Url>, q: &mut Query) -> Result<Endpoint, UrlError> {
    let bad = || {
        UrlError::Form(
            "slack: expected slack://hook:A-B-C@webhook (webhook token) or slack://xoxb:TOKEN@CHANNEL (bot token)".into(),
        )
    };
    let host = url.host_str().unwrap_or_default();
    let user = url.username();
    let pass = url.password().unwrap_or_default();
    let _ = (
        q.take("color"),
        q.take("botname"),
        q.take("icon"),
        q.take("title"),
    );
    match user {
        "hook" => {
            let parts: Vec<&str> = pass.splitn(3, '-').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(bad());
            }
            let base = default_base("slack", base, "https://hooks.slack.com")?;
            Ok(Endpoint::Http {
                url: join(&base, &format!("/services/{}", parts.join("/"))),
                headers: Vec::new(),
                channel: None,
            })
        }
        "xoxb" | "xoxp" => {
            if pass.is_empty() || host.is_empty() || host == "webhook" {
                return Err(bad());
            }
            let base = default_base("slack", base, "https://slack.com")?;
            Ok(Endpoint::Http {
                url: join(&base, "/api/chat.postMessage"),
                headers: vec![("Authorization".into(), format!("Bearer {user}-{pass}"))],
                channel: Some(host.to_uppercase()),
            })
        }
        "" => {
            // The old form slack://A/B/C.
            let path: Vec<&str> = url.path().trim_matches('/').split('/').collect();
            if host.is_empty() || path.len() != 2 || path.iter().any(|p| p.is_empty()) {
                return Err(bad());
            }
            let base = default_base("slack", base, "https://hooks.slack.com")?;
            Ok(Endpoint::Http {
                url: join(&base, &format!("/services/{host}/{}", path.join("/"))),
                headers: Vec::new(),
                channel: None,
            })
        }
        _ => Err(bad()),
    }
}

fn discord(url: &Url, base: Option<Url>, q: &mut Query) -> Result<Endpoint, UrlError> {
    let token = url.username();
    let id = url.host_str().unwrap_or_default();
    if token.is_empty() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::Form(
            "discord: expected discord://TOKEN@WEBHOOK_ID (the two parts of https://discord.com/api/webhooks/WEBHOOK_ID/TOKEN)".into(),
        ));
    }
    let base = default_base("discord", base, "https://discord.com")?;
    let mut u = join(&base, &format!("/api/webhooks/{id}/{token}"));
    if let Some(t) = q.take("thread_id") {
        u.query_pairs_mut().append_pair("thread_id", &t);
    }
    Ok(Endpoint::Http {
        url: u,
        headers: Vec::new(),
        channel: None,
    })
}

fn ntfy_endpoint(url: &Url, base: Option<Url>, q: &mut Query) -> Result<Endpoint, UrlError> {
    let topic = url.path().trim_matches('/');
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() || topic.is_empty() || topic.contains('/') {
        return Err(UrlError::Form(
            "ntfy: expected ntfy://[USER:PASSWORD@]HOST[:PORT]/TOPIC".into(),
        ));
    }
    let plain = q
        .take("scheme")
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
        | q.yes("disabletls");
    let base = match base {
        Some(b) => b,
        None if plain => Url::parse(&format!("http://{}", host_port(url)))
            .map_err(|e| UrlError::Form(format!("ntfy: bad host ({e})")))?,
        None => Url::parse(&format!("https://{}", host_port(url)))
            .map_err(|e| UrlError::Form(format!("ntfy: bad host ({e})")))?,
    };
    let mut headers = Vec::new();
    if let Some(t) = q.take("token") {
        headers.push(("Authorization".into(), format!("Bearer {t}")));
    } else if !url.username().is_empty() {
        use base64::Engine as _;
        let raw = format!(
            "{}:{}",
            decode(url.username()),
            decode(url.password().unwrap_or_default())
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        headers.push(("Authorization".into(), format!("Basic {b64}")));
    }
    Ok(Endpoint::Http {
        url: join(&base, &format!("/{topic}")),
        headers,
        channel: None,
    })
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn smtp(url: &Url, q: &mut Query) -> Result<Endpoint, UrlError> {
    let host = url.host_str().unwrap_or_default().to_owned();
    if host.is_empty() {
        return Err(UrlError::Form(
            "smtp: expected smtp://[USER:PASSWORD@]HOST[:PORT]/?from=ADDR&to=ADDR[,ADDR]".into(),
        ));
    }
    let from = q
        .take("from")
        .or_else(|| q.take("fromaddress"))
        .ok_or_else(|| UrlError::Form("smtp: missing ?from=ADDRESS".into()))?;
    let to: Vec<String> = q
        .take("to")
        .or_else(|| q.take("toaddresses"))
        .map(|t| {
            t.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if to.is_empty() {
        return Err(UrlError::Form("smtp: missing ?to=ADDRESS[,ADDRESS]".into()));
    }
    for a in to.iter().chain([&from]) {
        if !a.contains('@') || a.contains(['\r', '\n', '<', '>']) {
            return Err(UrlError::Form(format!(
                "smtp: {a:?} is not an email address"
            )));
        }
    }
    let encryption = q.take("encryption").unwrap_or_else(|| "auto".into());
    let loopback = url::Host::parse(&host).ok().is_some_and(|h| match h {
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
        url::Host::Domain(d) => d == "localhost",
    });
    if !encryption.eq_ignore_ascii_case("none") && !loopback {
        return Err(UrlError::Tls(
            "smtp:// to a remote server (pass ?encryption=none to send in clear text, e.g. to a local relay)"
                .into(),
        ));
    }
    let auth = (!url.username().is_empty()).then(|| {
        (
            decode(url.username()),
            decode(url.password().unwrap_or_default()),
        )
    });
    Ok(Endpoint::Smtp {
        host,
        port: url.port().unwrap_or(25),
        auth,
        from,
        to,
        subject: q.take("subject").unwrap_or_else(|| "dockop".into()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn http(t: &Target) -> (String, Vec<(String, String)>, Option<String>) {
        match &t.endpoint {
            Endpoint::Http {
                url,
                headers,
                channel,
            } => (url.to_string(), headers.clone(), channel.clone()),
            Endpoint::Smtp { .. } => panic!("not http"),
        }
    }

    #[test]
    fn every_form_parses_to_its_endpoint() {
        let table: &[(&str, Service, &str, &str)] = &[
            (
                "generic+http://127.0.0.1:9000/hook?x=1&events=rolled_back",
                Service::Generic,
                "127.0.0.1:9000",
                "http://127.0.0.1:9000/hook?x=1",
            ),
            (
                "generic://example.org/a?disabletls=yes&template=json&_method=y",
                Service::Generic,
                "example.org",
                "http://example.org/a?method=y",
            ),
            (
                "slack://hook:AAA-BBB-ccc-dd@webhook?base=http://127.0.0.1:7000",
                Service::Slack,
                "127.0.0.1:7000",
                "http://127.0.0.1:7000/services/AAA/BBB/ccc-dd",
            ),
            (
                "slack://xoxb:123-456-abc@C001?base=http://127.0.0.1:7000",
                Service::Slack,
                "127.0.0.1:7000",
                "http://127.0.0.1:7000/api/chat.postMessage",
            ),
            (
                "slack://AAA/BBB/CCC?base=http://127.0.0.1:7000/x",
                Service::Slack,
                "127.0.0.1:7000",
                "http://127.0.0.1:7000/x/services/AAA/BBB/CCC",
            ),
            (
                "discord://tok_en-1@123456?base=http://127.0.0.1:7001&thread_id=9",
                Service::Discord,
                "127.0.0.1:7001",
                "http://127.0.0.1:7001/api/webhooks/123456/tok_en-1?thread_id=9",
            ),
            (
                "ntfy://127.0.0.1:7002/alerts?scheme=http",
                Service::Ntfy,
                "127.0.0.1:7002",
                "http://127.0.0.1:7002/alerts",
            ),
            (
                "ntfy://ntfy.sh/alerts?base=http://127.0.0.1:7002",
                Service::Ntfy,
                "127.0.0.1:7002",
                "http://127.0.0.1:7002/alerts",
            ),
        ];
        for (raw, service, host, url) in table {
            let t = Target::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(t.service, *service, "{raw}");
            assert_eq!(t.host, *host, "{raw}");
            assert_eq!(http(&t).0, *url, "{raw}");
        }
    }

    #[test]
    fn headers_channel_and_filter() {
        let t = Target::parse(
            "slack://xoxb:123-456-abc@c001?base=http://127.0.0.1:1&events=degraded,recovered",
        )
        .unwrap();
        let (_, h, ch) = http(&t);
        assert_eq!(
            h,
            vec![("Authorization".into(), "Bearer xoxb-123-456-abc".into())]
        );
        assert_eq!(ch.as_deref(), Some("C001"));
        assert!(t.wants(EventKind::Degraded) && !t.wants(EventKind::Updated));
        let t =
            Target::parse("ntfy://al%40ice:p%3Ass@127.0.0.1:5/t?scheme=http&priority=5").unwrap();
        let (_, h, _) = http(&t);
        // base64("al@ice:p:ss")
        assert_eq!(h[0].1, "Basic YWxAaWNlOnA6c3M=");
        assert_eq!(t.ntfy.priority.as_deref(), Some("5"));
        let t = Target::parse("ntfy://127.0.0.1:5/t?scheme=http&token=tk_1").unwrap();
        assert_eq!(http(&t).1[0].1, "Bearer tk_1");
        let t = Target::parse("generic+http://h:1/p?@X-Key=v").unwrap();
        assert_eq!(http(&t).1, vec![("X-Key".into(), "v".into())]);
        assert!(
            Target::parse("generic+http://h/p")
                .unwrap()
                .events
                .is_none()
        );
    }

    #[test]
    fn smtp_form() {
        let t = Target::parse("smtp://u%40x:pw@127.0.0.1:2525/?from=a@x.org&to=b@x.org,c@x.org")
            .unwrap();
        assert_eq!(t.host, "127.0.0.1:2525");
        match t.endpoint {
            Endpoint::Smtp { auth, to, from, .. } => {
                assert_eq!(auth, Some(("u@x".into(), "pw".into())));
                assert_eq!(to, vec!["b@x.org", "c@x.org"]);
                assert_eq!(from, "a@x.org");
            }
            Endpoint::Http { .. } => panic!("smtp"),
        }
    }

    #[test]
    fn bad_forms_say_what_is_wrong_without_the_token() {
        let table: &[(&str, &str)] = &[
            ("nonsense", "not a URL"),
            ("telegram://SECRET@telegram", "unknown service \"telegram\""),
            (
                "slack://hook:SECRET@webhook?base=http://h:1",
                "slack: expected",
            ),
            (
                "slack://nope:SECRET@webhook?base=http://h:1",
                "slack: expected",
            ),
            (
                "discord://SECRET@notanid?base=http://h:1",
                "discord: expected",
            ),
            ("ntfy://h/", "ntfy: expected"),
            ("generic+http://h/p?events=SECRETevent", "unknown event"),
            ("slack://hook:SECRET@webhook?base=ftp://h", "?base= must be"),
            (
                "smtp://u:SECRET@mail.example.org/?from=a@x&to=b@x",
                "clear text",
            ),
            ("smtp://u:SECRET@127.0.0.1/?to=b@x", "missing ?from="),
            ("smtp://u:SECRET@127.0.0.1/?from=a@x", "missing ?to="),
        ];
        for (raw, want) in table {
            let e = Target::parse(raw).expect_err(raw).to_string();
            assert!(e.contains(want), "{raw}: {e}");
            assert!(
                !e.contains("SECRET") || want.contains("event"),
                "{raw}: token in {e}"
            );
        }
    }

    #[test]
    fn https_by_default_at_the_services_own_addresses() {
        for (raw, want) in [
            (
                "slack://hook:A-B-SECRET@webhook",
                "https://hooks.slack.com/services/A/B/SECRET",
            ),
            (
                "discord://SECRET@123",
                "https://discord.com/api/webhooks/123/SECRET",
            ),
            ("ntfy://ntfy.sh/alerts", "https://ntfy.sh/alerts"),
            ("generic+https://h.example/hook", "https://h.example/hook"),
            ("generic://h.example/hook", "https://h.example/hook"),
            (
                "generic://h.example/hook?disabletls=yes",
                "http://h.example/hook",
            ),
        ] {
            let t = Target::parse(raw).expect(raw);
            match &t.endpoint {
                Endpoint::Http { url, .. } => assert_eq!(url.as_str(), want, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_and_display_redact() {
        let t = Target::parse("discord://SECRET@123?base=http://127.0.0.1:9").unwrap();
        for s in [format!("{t:?}"), t.to_string(), format!("{:?}", t.endpoint)] {
            assert!(!s.contains("SECRET"), "{s}");
        }
    }
}
