//! A minimal SMTP client over plain TCP (RFC 5321: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT), enough for
//! a local relay or a loopback receiver; no TLS (see docs/notifications.md).

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why an SMTP delivery failed. Never carries the credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    /// Connecting.
    #[error("connect: {0}")]
    Connect(String),
    /// Reading or writing the conversation.
    #[error("{step}: {error}")]
    Io {
        /// The command being sent.
        step: &'static str,
        /// What went wrong.
        error: String,
    },
    /// The server refused a command.
    #[error("{step}: the server answered {code}")]
    Refused {
        /// The command.
        step: &'static str,
        /// The reply code.
        code: u16,
    },
}

struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Reads one (possibly multi-line) reply; its code.
    async fn reply(&mut self, step: &'static str) -> Result<u16, SmtpError> {
        let io = |e: std::io::Error| SmtpError::Io {
            step,
            error: e.to_string(),
        };
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.map_err(io)? == 0 {
                return Err(SmtpError::Io {
                    step,
                    error: "connection closed".into(),
                });
            }
            if line.len() < 3 || line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or(SmtpError::Io {
                    step,
                    error: "malformed reply".into(),
                });
        }
    }

    /// Sends `line` and expects a reply code in `ok`.
    async fn command(
        &mut self,
        step: &'static str,
        line: &str,
        ok: &[u16],
    ) -> Result<(), SmtpError> {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| SmtpError::Io {
                step,
                error: e.to_string(),
            })?;
        let code = self.reply(step).await?;
        if ok.contains(&code) {
            Ok(())
        } else {
            Err(SmtpError::Refused { step, code })
        }
    }
}

/// Sends one plain-text email.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    host: &str,
    port: u16,
    auth: Option<&(String, String)>,
    from: &str,
    to: &[String],
    subject: &str,
    body: &str,
    client_name: &str,
) -> Result<(), SmtpError> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| SmtpError::Connect(e.to_string()))?;
    let mut c = Conn {
        reader: BufReader::new(stream),
    };
    let code = c.reply("greeting").await?;
    if code != 220 {
        return Err(SmtpError::Refused {
            step: "greeting",
            code,
        });
    }
    let helo = if client_name.is_empty() {
        "localhost"
    } else {
        client_name
    };
    c.command("EHLO", &format!("EHLO {helo}"), &[250]).await?;
    if let Some((user, pass)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        c.command("AUTH", &format!("AUTH PLAIN {token}"), &[235])
            .await?;
    }
    c.command("MAIL", &format!("MAIL FROM:<{from}>"), &[250])
        .await?;
    for r in to {
        c.command("RCPT", &format!("RCPT TO:<{r}>"), &[250, 251])
            .await?;
    }
    c.command("DATA", "DATA", &[354]).await?;
    let subject: String = subject.chars().filter(|c| !c.is_control()).collect();
    let mut data = format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        to.iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
        chrono::Utc::now().to_rfc2822(),
    );
    for line in body.lines() {
        // Dot-stuffing (RFC 5321 4.5.2).
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push('.');
    c.command("message", &data, &[250]).await?;
    let _ = c.command("QUIT", "QUIT", &[221]).await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A loopback SMTP receiver that accepts one message and returns the conversation it saw.
    async fn receiver() -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut r = BufReader::new(s);
            let mut seen = Vec::new();
            r.get_mut().write_all(b"220 test ESMTP\r\n").await.unwrap();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                let line = line.trim_end().to_owned();
                seen.push(line.clone());
                let reply: &[u8] = if in_data {
                    if line == "." {
                        in_data = false;
                        b"250 queued\r\n"
                    } else {
                        continue;
                    }
                } else if line.starts_with("EHLO") {
                    b"250-test\r\n250 AUTH PLAIN\r\n"
                } else if line.starts_with("AUTH") {
                    b"235 ok\r\n"
                } else if line == "DATA" {
                    in_data = true;
                    b"354 go\r\n"
                } else if line == "QUIT" {
                    r.get_mut().write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    b"250 ok\r\n"
                };
                r.get_mut().write_all(reply).await.unwrap();
            }
            seen
        });
        (port, task)
    }

    #[tokio::test]
    async fn sends_one_message() {
        let (port, task) = receiver().await;
        let auth = ("u".to_owned(), "p".to_owned());
        send(
            "127.0.0.1",
            port,
            Some(&auth),
            "dockop@x.org",
            &["ops@x.org".into()],
            "dockop: web rolled_back",
            "line one\n.dot line\n",
            "box",
        )
        .await
        .unwrap();
        let seen = task.await.unwrap();
        assert_eq!(seen[0], "EHLO box");
        assert_eq!(seen[1], "AUTH PLAIN AHUAcA==");
        assert_eq!(seen[2], "MAIL FROM:<dockop@x.org>");
        assert_eq!(seen[3], "RCPT TO:<ops@x.org>");
        assert!(
            seen.contains(&"Subject: dockop: web rolled_back".to_owned()),
            "{seen:?}"
        );
        assert!(seen.contains(&"..dot line".to_owned()), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("QUIT"));
    }

    #[tokio::test]
    async fn an_smtp_url_delivers_through_the_transport() {
        use crate::notify::deliver::{NetTransport, Transport};
        use crate::notify::event::{Event, EventKind};
        use crate::notify::format::Message;
        use crate::notify::target::Target;
        let (port, task) = receiver().await;
        let t = Target::parse(&format!(
            "smtp://ops:pw@127.0.0.1:{port}/?from=dockop@x.org&to=ops@x.org&subject=box"
        ))
        .unwrap();
        let msg = Message::new(
            Event {
                kind: EventKind::Updated,
                object: "web".into(),
                digest: Some("sha256:2".into()),
                previous_digest: Some("sha256:1".into()),
                version: Some("2".into()),
                reason: "Updated".into(),
                message: "updated".into(),
            },
            "host-1",
            chrono::Utc::now(),
        );
        NetTransport::new().send(&t, &msg).await.unwrap();
        let seen = task.await.unwrap();
        assert!(
            seen.contains(&"Subject: box: web updated".to_owned()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"[host-1] web updated: updated".to_owned()),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|l| l.contains("\"previousDigest\": \"sha256:1\"")),
            "{seen:?}"
        );
    }
}
