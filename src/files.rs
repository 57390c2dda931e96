//! Writing generated files (`gatehouse certs`, `gatehouse apiserver-config`): nothing existing
//! is replaced without `--force`, secrets are created with mode 0600 (never created open and
//! tightened afterwards), and a replaced file is swapped in whole by a rename.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Why files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Files are in the way and `--force` was not given; nothing was written.
    #[error("{} already exist{}; nothing was written (--force replaces them)", list(.0), if .0.len() == 1 { "s" } else { "" })]
    Exists(Vec<PathBuf>),
    /// The output directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An input file is larger than it can reasonably be.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One file to write.
#[derive(Clone, Debug)]
pub struct OutFile {
    /// File name inside the output directory.
    pub name: &'static str,
    /// Contents.
    pub contents: Vec<u8>,
    /// A private key or anything holding one: mode 0600 instead of 0644.
    pub secret: bool,
}

impl OutFile {
    /// A file anyone may read (certificates, configuration without keys).
    pub fn public(name: &'static str, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            name,
            contents: contents.into(),
            secret: false,
        }
    }

    /// A file only its owner may read.
    pub fn secret(name: &'static str, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            name,
            contents: contents.into(),
            secret: true,
        }
    }

    fn mode(&self) -> u32 {
        if self.secret {
            0o600
        } else {
            0o644
        }
    }
}

/// Writes `files` into `dir` (created mode 0700 when missing). Without `force`, refuses before
/// writing anything when one of them exists. Returns the paths written, in order.
pub fn write_all(dir: &Path, files: &[OutFile], force: bool) -> Result<Vec<PathBuf>, FileError> {
    create_dir(dir)?;
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f.name)).collect();
    if !force {
        // symlink_metadata: a dangling symlink is in the way too.
        let existing: Vec<PathBuf> = paths
            .iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Err(FileError::Exists(existing));
        }
    }
    for (file, path) in files.iter().zip(&paths) {
        let result = if force {
            replace(path, file)
        } else {
            // create_new: a file that appeared since the check above is not overwritten either.
            create(path, file).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => FileError::Exists(vec![path.clone()]),
                _ => FileError::Write {
                    path: path.clone(),
                    source: e,
                },
            })
        };
        result?;
    }
    Ok(paths)
}

fn create_dir(dir: &Path) -> Result<(), FileError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| FileError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Creates `path`, which must not exist, with the file's mode from the start.
fn create(path: &Path, file: &OutFile) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, file.mode());
    let mut out = options.open(path)?;
    out.write_all(&file.contents)?;
    out.sync_all()
}

/// Writes a fresh file beside `path` and renames it over `path`: the old file's (perhaps looser)
/// mode is not inherited, and a reader never sees half a file.
fn replace(path: &Path, file: &OutFile) -> Result<(), FileError> {
    let write_err = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover from a crashed run would make create_new fail.
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = create(&tmp, file).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    Ok(())
}

/// Reads a small input file (a certificate, a key), at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut out))
        .map_err(read_err)?;
    if out.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_replace_without_force_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), "old").unwrap();
        let files = [OutFile::public("a", "new a"), OutFile::secret("b", "new b")];
        let err = write_all(dir.path(), &files, false).unwrap_err();
        assert!(matches!(&err, FileError::Exists(p) if p == &[dir.path().join("b")]));
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(!dir.path().join("a").exists(), "nothing may be written");
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"old");

        write_all(dir.path(), &files, true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"new b");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_0600_even_when_replacing_an_open_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_all(dir.path(), &[OutFile::secret("k", "new")], true).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, [b'x'; 11]).unwrap();
        assert!(matches!(
            read_limited(&path, 10),
            Err(FileError::TooLarge { limit: 10, .. })
        ));
        assert_eq!(read_limited(&path, 11).unwrap().len(), 11);
    }
}
