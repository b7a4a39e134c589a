//! Reading values kept off the spec (`valueFrom.file`, `basicAuth.passwordFile`): regular files only, at
//! most [`MAX_BYTES`], one trailing newline dropped, never on the async runtime ([`read_async`] runs the
//! read on a blocking thread under [`READ_LIMIT`]). Errors name the path and the problem, never the content.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest value file read.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Time one read may take on its blocking thread.
pub const READ_LIMIT: Duration = Duration::from_secs(5);

/// Why a value file could not be read. Never carries the file's content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ValueFileError {
    /// Missing, unreadable, or another I/O failure.
    #[error("{0}")]
    Io(Arc<std::io::Error>),
    /// A FIFO, device, socket or directory: reading it could block forever or never end.
    #[error("not a regular file (it is a {0}): a value file must be a plain file")]
    NotRegular(&'static str),
    /// Larger than [`MAX_BYTES`].
    #[error("larger than {} KiB", MAX_BYTES / 1024)]
    TooLarge,
    /// Not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
    /// The read took longer than [`READ_LIMIT`] (a hung network file system).
    #[error("no answer within {} s", READ_LIMIT.as_secs())]
    TimedOut,
}

impl From<std::io::Error> for ValueFileError {
    fn from(e: std::io::Error) -> Self {
        ValueFileError::Io(Arc::new(e))
    }
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Reads `path` (blocking): a regular file of at most [`MAX_BYTES`], without one trailing `\n` / `\r\n`.
pub fn read(path: &Path) -> Result<String, ValueFileError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It changes nothing for a
    // regular file, and anything else is refused below before a byte is read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ValueFileError::NotRegular(kind_of(meta.file_type())));
    }
    if meta.len() > MAX_BYTES {
        return Err(ValueFileError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ValueFileError::TooLarge);
    }
    let mut text = String::from_utf8(bytes).map_err(|_| ValueFileError::NotText)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// [`read`] on a blocking thread, given up after [`READ_LIMIT`].
pub async fn read_async(path: PathBuf) -> Result<String, ValueFileError> {
    in_blocking(move || read(&path)).await?
}

/// Runs `f` on a blocking thread; [`ValueFileError::TimedOut`] when it takes longer than [`READ_LIMIT`]
/// (the thread finishes on its own; nothing waits for it).
pub async fn in_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ValueFileError> {
    match tokio::time::timeout(READ_LIMIT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(std::io::Error::other(e).into()),
        Err(_) => Err(ValueFileError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_newline_dropped_once() {
        let d = tempfile::tempdir().expect("dir");
        let p = d.path().join("v");
        std::fs::write(&p, "s3cret\r\n").expect("write");
        assert_eq!(read(&p).expect("read"), "s3cret");
        std::fs::write(&p, "a\n\n").expect("write");
        assert_eq!(read(&p).expect("read"), "a\n");
    }

    #[test]
    fn fifo_device_directory_and_big_files_refused_without_blocking() {
        let d = tempfile::tempdir().expect("dir");
        let fifo = d.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(ok.success());
        assert!(matches!(
            read(&fifo),
            Err(ValueFileError::NotRegular("FIFO"))
        ));
        assert!(matches!(
            read(Path::new("/dev/zero")),
            Err(ValueFileError::NotRegular("device"))
        ));
        assert!(matches!(
            read(d.path()),
            Err(ValueFileError::NotRegular("directory"))
        ));
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; (MAX_BYTES + 1) as usize]).expect("write");
        assert!(matches!(read(&big), Err(ValueFileError::TooLarge)));
        assert!(matches!(
            read(&d.path().join("missing")),
            Err(ValueFileError::Io(_))
        ));
    }

    #[test]
    fn errors_never_carry_the_content() {
        let d = tempfile::tempdir().expect("dir");
        let p = d.path().join("v");
        std::fs::write(&p, [0xff, b'p', b'w']).expect("write");
        let e = read(&p).expect_err("not text");
        assert!(!e.to_string().contains("pw"));
    }
}
