//! Outgoing notifications: tell people when dockop changed something, held something back, or failed.
//! URL forms ([`target`]), the events and their dedupe ([`event`]), payloads ([`mod@format`]), and delivery
//! ([`deliver`]: a bounded queue and a retrying sender per target). Nothing here ever blocks a reconcile:
//! [`Notifier::observe`] only queues.

pub mod deliver;
pub mod event;
pub mod format;
pub mod smtp;
pub mod target;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::deliver::{Delivery, Lane, NetTransport, QUEUE_CAPACITY, RetryPolicy, Transport};
use self::event::{Observation, Tracker};
use self::format::Message;
use self::target::{Target, UrlError};
use crate::telemetry::Metrics;

/// Largest notify file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Time limit of reading the notify file.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// A `--notify` URL as given on the command line: its `Debug` never shows it (it carries tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyUrl(String);

impl FromStr for NotifyUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(NotifyUrl(s.to_owned()))
    }
}

impl fmt::Debug for NotifyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split_once("://").map(|(s, _)| s).unwrap_or("?");
        write!(f, "NotifyUrl({scheme}://<redacted>)")
    }
}

/// Why the notification settings were refused at startup.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Reading `--notify-file`.
    #[error("--notify-file {path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A URL of the file does not parse.
    #[error("{path}:{line}: {error}")]
    FileUrl {
        /// The file.
        path: PathBuf,
        /// Its line (1-based).
        line: usize,
        /// Why.
        #[source]
        error: UrlError,
    },
    /// A `--notify` URL does not parse.
    #[error("--notify #{index} ({scheme}://...): {error}")]
    ArgUrl {
        /// Its position among the `--notify` flags (1-based).
        index: usize,
        /// Its scheme (the rest is not shown).
        scheme: String,
        /// Why.
        #[source]
        error: UrlError,
    },
}

/// Parses the `--notify` URLs and the `--notify-file` lines (read on a blocking thread).
pub async fn load_targets(
    urls: &[NotifyUrl],
    file: Option<&Path>,
) -> Result<Vec<Target>, NotifyError> {
    let mut out = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        out.push(Target::parse(&u.0).map_err(|error| {
            NotifyError::ArgUrl {
                index: i + 1,
                scheme: u
                    .0
                    .split_once("://")
                    .map(|(s, _)| s)
                    .unwrap_or("")
                    .to_owned(),
                error,
            }
        })?);
    }
    if let Some(path) = file {
        let text = read_file(path).await?;
        out.extend(parse_file(path, &text)?);
    }
    Ok(out)
}

/// The targets of a notify file's text: one URL per line, blank lines and `#` comments skipped.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Target>, NotifyError> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(line, l)| {
            Target::parse(l).map_err(|error| NotifyError::FileUrl {
                path: path.to_owned(),
                line,
                error,
            })
        })
        .collect()
}

async fn read_file(path: &Path) -> Result<String, NotifyError> {
    let err = |problem: String| NotifyError::File {
        path: path.to_owned(),
        problem,
    };
    let p = path.to_owned();
    let read = tokio::task::spawn_blocking(move || -> Result<String, String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .map_err(|e| e.to_string())?;
        let meta = f.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        let mut text = String::new();
        f.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %p.display(),
                    "the notify file is readable by others; its URLs carry tokens (chmod 600)"
                );
            }
        }
        Ok(text)
    });
    match tokio::time::timeout(READ_LIMIT, read).await {
        Ok(Ok(Ok(t))) => Ok(t),
        Ok(Ok(Err(e))) => Err(err(e)),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err(format!("not read within {READ_LIMIT:?}"))),
    }
}

/// This machine's hostname (the `host` of every message).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A message not delivered before `apply` gave up waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    /// The service (never its URL).
    pub service: &'static str,
    /// Its host.
    pub host: String,
    /// The event.
    pub event: &'static str,
    /// The object.
    pub object: String,
}

impl fmt::Display for Unsent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {} {}",
            self.service, self.host, self.event, self.object
        )
    }
}

#[derive(Debug)]
struct Inner {
    lanes: Vec<Arc<Lane>>,
    tracker: Mutex<Tracker>,
    host: String,
}

/// The handle the controller and `apply` hand observations to. Cheap to clone; without targets every
/// call is a no-op.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// Starts one sender task per target over the network (needs a tokio runtime), counting deliveries
    /// in `metrics`.
    pub fn start(targets: Vec<Target>, metrics: Arc<Metrics>) -> Self {
        Self::start_with(
            targets,
            Arc::new(NetTransport::new()),
            RetryPolicy::default(),
            metrics,
        )
    }

    /// Starts one sender task per target over `transport`.
    pub fn start_with(
        targets: Vec<Target>,
        transport: Arc<dyn Transport>,
        policy: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        if targets.is_empty() {
            return Self::disabled();
        }
        let lanes: Vec<Arc<Lane>> = targets
            .into_iter()
            .map(|t| Arc::new(Lane::new(t, QUEUE_CAPACITY, Arc::clone(&metrics))))
            .collect();
        for lane in &lanes {
            tokio::spawn(lane.clone().run(transport.clone(), policy));
        }
        let services: Vec<String> = lanes.iter().map(|l| l.target.to_string()).collect();
        tracing::info!(targets = ?services, "notifications on");
        Notifier {
            inner: Some(Arc::new(Inner {
                lanes,
                tracker: Mutex::new(Tracker::default()),
                host: hostname(),
            })),
        }
    }

    /// True when there is somewhere to send to.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Derives the events of `obs` and queues them for every target that wants them. Never waits.
    pub fn observe(&self, obs: Observation<'_>) {
        let Some(inner) = &self.inner else {
            return;
        };
        let events = match inner.tracker.lock() {
            Ok(mut t) => t.observe(obs),
            Err(_) => return,
        };
        let now = chrono::Utc::now();
        for e in events {
            let msg = Arc::new(Message::new(e, &inner.host, now));
            for lane in &inner.lanes {
                if lane.target.wants(msg.event) {
                    lane.push(msg.clone());
                } else {
                    lane.count(Delivery::Filtered);
                }
            }
        }
    }

    /// Forgets an object's memory (it was pruned).
    pub fn forget(&self, object: &str) {
        if let Some(inner) = &self.inner
            && let Ok(mut t) = inner.tracker.lock()
        {
            t.forget(object);
        }
    }

    /// Waits until every queued message is delivered (or dropped), at most `limit`; what is still
    /// pending then.
    pub async fn flush(&self, limit: Duration) -> Vec<Unsent> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pending: Vec<Unsent> = inner
                .lanes
                .iter()
                .flat_map(|l| {
                    l.pending().into_iter().map(|m| Unsent {
                        service: l.target.service.as_str(),
                        host: l.target.host.clone(),
                        event: m.event.as_str(),
                        object: m.object.clone(),
                    })
                })
                .collect();
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Pending counts by (service, event), for a summary line.
    pub fn summarize(unsent: &[Unsent]) -> BTreeMap<(String, &'static str), usize> {
        let mut m = BTreeMap::new();
        for u in unsent {
            *m.entry((format!("{} ({})", u.service, u.host), u.event))
                .or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::deliver::SendError;
    use super::*;

    #[test]
    fn file_errors_name_the_line_not_the_token() {
        let text = "# comment\n\ngeneric+http://127.0.0.1:1/ok\nslack://hook:SECRETTOKEN@webhook\n";
        let e = parse_file(Path::new("/etc/dockop/notify"), text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/dockop/notify:4: "), "{e}");
        assert!(!e.contains("SECRETTOKEN"), "{e}");
        let ok = parse_file(Path::new("f"), "generic+http://h:1/a\n  # x\n").unwrap();
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn cli_url_debug_redacts() {
        let u: NotifyUrl = "discord://SECRET@123".parse().unwrap();
        assert_eq!(format!("{u:?}"), "NotifyUrl(discord://<redacted>)");
    }

    #[tokio::test]
    async fn file_must_be_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_targets(&[], Some(dir.path())).await.unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = load_targets(&[], Some(&fifo)).await.unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let e = load_targets(&[], Some(&big)).await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let bad: NotifyUrl = "slack://hook:SECRET@webhook".parse().unwrap();
        let e = load_targets(&[bad], None).await.unwrap_err().to_string();
        assert!(e.starts_with("--notify #1 (slack://...)"), "{e}");
        assert!(!e.contains("SECRET"));
    }

    #[derive(Debug, Default)]
    struct Count(AtomicUsize);

    #[async_trait]
    impl Transport for Count {
        async fn send(&self, _: &Target, _: &Message) -> Result<(), SendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn filter_and_flush() {
        use crate::notify::event::EventKind;
        let all = Target::parse("generic+http://127.0.0.1:1/a").unwrap();
        let only = Target::parse("generic+http://127.0.0.1:1/b?events=orphaned").unwrap();
        let t = Arc::new(Count::default());
        let n = Notifier::start_with(
            vec![all, only],
            t.clone(),
            RetryPolicy::default(),
            Arc::default(),
        );
        n.observe(Observation::Failed {
            object: "web",
            error: "engine down",
        });
        n.observe(Observation::Orphaned { object: "old" });
        assert!(n.flush(Duration::from_secs(5)).await.is_empty());
        // degraded to the first only; orphaned to both.
        assert_eq!(t.0.load(Ordering::SeqCst), 3);
        assert_eq!(EventKind::Degraded.as_str(), "degraded");
    }
}
