//! Reading configuration files: regular files only, each at most [`MAX_FILE_BYTES`].
//!
//! A FIFO with no writer would block the reload forever and `/dev/zero` would fill memory,
//! so the type is checked on the path (following symlinks) before opening, and again on the
//! opened handle in case the path was swapped in between; the handle is opened
//! non-blocking so even a swapped-in FIFO cannot hang the open. The read stops one byte past
//! the cap, so a file that grows after the check is refused as well.

use std::fmt;
use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::path::Path;

/// The largest configuration file read (the main file and each included one): 16 MiB.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The most all the files of one configuration may hold together: 64 MiB.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// Why a configuration file was not read; its `Display` follows "cannot read `path`: ".
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A directory, FIFO, device or socket.
    NotRegular(&'static str),
    /// Larger than the cap (`None`: it grew past the cap while being read).
    TooLarge(Option<u64>),
    /// Not UTF-8, first bad byte at this offset.
    NotUtf8(usize),
    /// The operating system's error.
    Io(std::io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            ReadError::TooLarge(Some(n)) => write!(
                f,
                "it is {n} bytes, more than the {} MiB a configuration file may hold: split it into several files with `includes:`",
                MAX_FILE_BYTES >> 20
            ),
            ReadError::TooLarge(None) => write!(
                f,
                "it grew past the {} MiB a configuration file may hold while being read",
                MAX_FILE_BYTES >> 20
            ),
            ReadError::NotUtf8(at) => {
                write!(f, "it is not UTF-8 text (bad byte at offset {at})")
            }
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads the file at `path` as UTF-8 text, refusing anything but a regular file of at most
/// [`MAX_FILE_BYTES`].
pub(crate) fn read_config_file(path: &Path) -> Result<String, ReadError> {
    regular(&std::fs::metadata(path).map_err(ReadError::Io)?)?;
    let file = open_nonblocking(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    regular(&meta)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(Some(meta.len())));
    }
    let bytes = read_capped(file, MAX_FILE_BYTES, meta.len())?;
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// Reads at most `cap` bytes, refusing a source that has more (one that grew since it was
/// measured, or never ends).
fn read_capped(source: impl Read, cap: u64, expected: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::with_capacity(expected.min(cap) as usize);
    source
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge(None));
    }
    Ok(bytes)
}

fn regular(meta: &Metadata) -> Result<(), ReadError> {
    let t = meta.file_type();
    if t.is_file() {
        Ok(())
    } else {
        Err(ReadError::NotRegular(kind(&t)))
    }
}

fn kind(t: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, "apps: []\n").unwrap();
        assert_eq!(read_config_file(&p).unwrap(), "apps: []\n");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_before_any_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // A FIFO with no writer: opening it for a blocking read would never return.
        let link = dir.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (&link, "a character device"),
            (&fifo, "a FIFO (named pipe)"),
            (dir.path(), "a directory"),
        ] {
            match read_config_file(path) {
                Err(e @ ReadError::NotRegular(k)) => {
                    assert_eq!(k, kind, "{}", path.display());
                    assert!(e.to_string().contains("not a regular file"), "{e}");
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }

    #[test]
    fn files_past_the_cap_are_refused_and_reads_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.yaml");
        let f = File::create(&p).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        match read_config_file(&p) {
            Err(e @ ReadError::TooLarge(Some(n))) => {
                assert_eq!(n, MAX_FILE_BYTES + 1);
                assert!(e.to_string().contains("16 MiB"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        f.set_len(MAX_FILE_BYTES).unwrap();
        assert_eq!(read_config_file(&p).unwrap().len() as u64, MAX_FILE_BYTES);
    }

    #[test]
    fn a_source_longer_than_measured_is_cut_at_the_cap_and_refused() {
        // A file that grows after its size was checked reads like an endless source.
        match read_capped(std::io::repeat(b' '), 1024, 10) {
            Err(e @ ReadError::TooLarge(None)) => {
                assert!(e.to_string().contains("grew past"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_capped(&b"abc"[..], 3, 3).unwrap(), b"abc");
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("latin1.yaml");
        std::fs::write(&p, b"apps: [caf\xe9]\n").unwrap();
        assert!(matches!(read_config_file(&p), Err(ReadError::NotUtf8(10))));
    }
}
