//! systemd's readiness protocol (`Type=notify`): `READY=1` once the first sync is done, `STOPPING=1` when
//! a shutdown starts. A datagram to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace); without it (not under systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// What dockop tells systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Startup finished: the first sync is done.
    Ready,
    /// A shutdown started (in-flight reconciles are finishing).
    Stopping,
}

impl State {
    /// The protocol's text.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "READY=1",
            State::Stopping => "STOPPING=1",
        }
    }
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The socket could not be created, addressed or written.
    #[error("cannot notify systemd at {socket}: {source}")]
    Io {
        /// `$NOTIFY_SOCKET`.
        socket: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Sends `state` to `$NOTIFY_SOCKET`; `Ok(false)` when the variable is unset (not under systemd). Never
/// blocks: the socket is non-blocking and a datagram goes out whole or not at all.
pub fn notify(state: State) -> Result<bool, NotifyError> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(socket) if !socket.is_empty() => send(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the socket `socket` (a path, or `@name` for the abstract namespace).
pub fn send(socket: &str, state: State) -> Result<(), NotifyError> {
    let io = |source| NotifyError::Io {
        socket: socket.to_owned(),
        source,
    };
    let sock = UnixDatagram::unbound().map_err(io)?;
    sock.set_nonblocking(true).map_err(io)?;
    let addr = match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?
        }
        None => std::os::unix::net::SocketAddr::from_pathname(socket).map_err(io)?,
    };
    sock.send_to_addr(state.as_str().as_bytes(), &addr)
        .map_err(io)?;
    Ok(())
}

/// [`notify()`], logging a failure (a lost notification is systemd's timeout to report, not a reason to
/// stop).
pub fn notify_logged(state: State) {
    match notify(state) {
        Ok(true) => tracing::debug!(state = state.as_str(), "notified systemd"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "systemd notification failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_and_stopping_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let p = path.to_str().unwrap();
        send(p, State::Ready).unwrap();
        send(p, State::Stopping).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn abstract_socket() {
        let name = format!("dockop-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), State::Ready).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn missing_socket_is_an_error() {
        assert!(send("/nonexistent/dockop-notify", State::Ready).is_err());
    }
}
