//! Local file helpers: private directories, durable renames, sparse copies.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::Path;

use rustix::fs::{seek, SeekFrom};
use rustix::io::Errno;

/// Creates `dir` (mode 0700) and its parents.
pub(crate) fn make_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes a directory's entries (new or renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Names of the entries of `dir`; none if it does not exist.
pub(crate) fn entries(dir: &Path) -> io::Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies the data of `len` bytes of `src` at `at` into `dst` at 0, skipping holes (they
/// read as zeros in both). Returns how many bytes of data there were.
pub(crate) fn copy_sparse(src: &File, at: u64, dst: &File, len: u64) -> io::Result<u64> {
    let end = at + len;
    let mut pos = at;
    let mut copied = 0;
    let mut buf = Vec::new();
    while pos < end {
        let data = match seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d.min(end),
            Err(Errno::NXIO) => end,
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = seek(src, SeekFrom::Hole(data))
            .map_err(io::Error::from)?
            .min(end);
        buf.resize((hole - data) as usize, 0);
        src.read_exact_at(&mut buf, data)?;
        dst.write_all_at(&buf, data - at)?;
        copied += hole - data;
        pos = hole;
    }
    Ok(copied)
}
