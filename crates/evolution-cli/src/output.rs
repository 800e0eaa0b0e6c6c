//! Writing results: to stdout without panicking when the reader goes away,
//! and to files that a reader never sees half-written.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::exit::CliError;

/// Writes `text` to stdout and flushes. A reader that went away (`| head`)
/// got what it wanted: that is not an error worth a message.
pub fn print_text(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::failure(format!("cannot write to stdout: {e}"))),
    }
}

/// Replaces the file at `path` with what `fill` writes, through a temporary
/// file next to it, synced and renamed over it: a reader of `path` never
/// sees part of the new content, and a crash leaves the old one whole.
/// `fill` returns its result and whether to replace the file at all; when
/// it says not to (nothing changed) or fails, the temporary file is removed
/// and `path` is left as it was.
pub fn replace_file<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<(T, bool)>,
) -> io::Result<T> {
    let temp = temp_path(path);
    let result = (|| {
        let mut out = BufWriter::new(File::create(&temp)?);
        let (value, replace) = fill(&mut out)?;
        if replace {
            out.into_inner().map_err(io::Error::from)?.sync_all()?;
            fs::rename(&temp, path)?;
        } else {
            drop(out);
            fs::remove_file(&temp)?;
        }
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// A temporary file next to `path`, for its replacement: hidden, and named
/// after this process so two processes never share one.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_or_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        fs::write(&path, "old\n").unwrap();
        let entries = || fs::read_dir(dir.path()).unwrap().count();

        let value = replace_file(&path, |out| out.write_all(b"new\n").map(|()| (7, true)));
        assert_eq!(value.unwrap(), 7);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(entries(), 1, "the temporary file was left behind");

        // Told not to replace: the file is untouched.
        replace_file(&path, |out| out.write_all(b"other\n").map(|()| ((), false))).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(entries(), 1);

        // A failure: the file is untouched, the error comes back.
        let error = replace_file(&path, |out| -> io::Result<((), bool)> {
            out.write_all(b"half")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "boom");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(entries(), 1);

        // A file that did not exist is created.
        let fresh = dir.path().join("fresh.env");
        replace_file(&fresh, |out| out.write_all(b"A=1\n").map(|()| ((), true))).unwrap();
        assert_eq!(fs::read_to_string(&fresh).unwrap(), "A=1\n");
    }
}
