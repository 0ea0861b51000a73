//! Where chunks and manifests are kept: the data directory (the default), or an object
//! store with the data directory as the local cache. Either way a chunk being written
//! lives in a local file first; flushing makes it durable (an `fsync`, or an upload that
//! refuses to overwrite) before the manifest that names it is committed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::BlockError;
use crate::files::{copy_sparse, entries, make_dir, remove_if_present, sync_dir};
use crate::manifest::{
    chunk_name, parse_chunk_name, valid_origin, ChunkRef, Manifest, Version, CHUNK,
};

enum Backend {
    /// Chunks and manifests are files under the data directory.
    Local,
    /// Chunks and manifests are objects; the data directory caches chunks.
    #[cfg(feature = "object-store")]
    Object(crate::object::Objects),
}

/// What one garbage collection pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Chunks no manifest references that were deleted.
    pub deleted: usize,
    /// Unreferenced chunks kept until their grace period ends.
    pub waiting: usize,
}

/// Every disk's blocks.
pub struct BlockStore {
    root: PathBuf,
    backend: Backend,
    /// Unreferenced chunks and when a collection first found them so.
    unreferenced: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("root", &self.root)
            .field("backend", &self.describe())
            .finish()
    }
}

impl BlockStore {
    /// The store under `root` (the data directory's `blocks`), on the object store at `url`
    /// when one is given (`az://`, `s3://` or `file://`, configured by the `object_store`
    /// crate's environment variables), else on `root` itself.
    pub fn open(root: &Path, url: Option<&str>) -> Result<Arc<Self>, BlockError> {
        make_dir(root)?;
        let backend = match url {
            None => Backend::Local,
            #[cfg(feature = "object-store")]
            Some(url) => Backend::Object(crate::object::Objects::from_url(url)?),
            #[cfg(not(feature = "object-store"))]
            Some(url) => {
                return Err(BlockError::BadUrl {
                    url: url.to_owned(),
                    reason: "this build has no object storage support".into(),
                })
            }
        };
        Ok(Self::with_backend(root, backend))
    }

    fn with_backend(root: &Path, backend: Backend) -> Arc<Self> {
        Arc::new(BlockStore {
            root: root.to_owned(),
            backend,
            unreferenced: Mutex::new(HashMap::new()),
        })
    }

    /// A store whose objects live in memory, for tests of conditional writes.
    #[cfg(all(test, feature = "object-store"))]
    pub(crate) fn in_memory(
        root: &Path,
        objects: Arc<object_store::memory::InMemory>,
    ) -> Arc<Self> {
        make_dir(root).expect("a test directory");
        Self::with_backend(
            root,
            Backend::Object(crate::object::Objects::in_memory(objects)),
        )
    }

    /// Where the blocks are kept, for people.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local => format!("the data directory ({})", self.root.display()),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.url().to_owned(),
        }
    }

    /// Whether the store answers: the data directory exists, and the object store answers
    /// a read (of a manifest no disk has) within 5 seconds.
    pub fn check(&self) -> Result<(), BlockError> {
        fs::metadata(&self.root)?;
        match &self.backend {
            Backend::Local => Ok(()),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.probe(std::time::Duration::from_secs(5)),
        }
    }

    /// Whether a committed chunk that nothing else names may be rewritten in place: on
    /// the data directory (as a disk file is); never on an object store, whose objects
    /// are written once.
    pub(crate) fn rewrites_in_place(&self) -> bool {
        matches!(self.backend, Backend::Local)
    }

    /// The directory holding local chunk files: the chunks themselves, or the cache.
    fn chunk_dir(&self) -> PathBuf {
        match &self.backend {
            Backend::Local => self.root.join("chunks"),
            #[cfg(feature = "object-store")]
            Backend::Object(_) => self.root.join("cache"),
        }
    }

    fn manifest_path(&self, disk: &str) -> PathBuf {
        self.root.join("manifests").join(disk)
    }

    /// The local file of a chunk.
    pub(crate) fn local_path(&self, origin: &str, index: u32, gen: u64) -> PathBuf {
        self.chunk_dir().join(chunk_name(origin, index, gen))
    }

    /// Makes the written chunks durable in the store; `chunks` are `(origin, index, gen)`.
    pub(crate) fn persist(&self, chunks: &[(Arc<str>, u32, u64)]) -> Result<(), BlockError> {
        match &self.backend {
            Backend::Local => {
                let mut dirs: Vec<PathBuf> = Vec::new();
                for (origin, index, gen) in chunks {
                    File::open(self.local_path(origin, *index, *gen))?.sync_data()?;
                    let dir = self.chunk_dir().join(&**origin);
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
                for dir in dirs {
                    sync_dir(&dir)?;
                }
                Ok(())
            }
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.put_chunks(
                chunks
                    .iter()
                    .map(|(origin, index, gen)| {
                        (
                            chunk_name(origin, *index, *gen),
                            self.local_path(origin, *index, *gen),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// Brings a chunk into its local file, if it is not there yet.
    pub(crate) fn fetch(&self, origin: &str, index: u32, gen: u64) -> Result<PathBuf, BlockError> {
        let path = self.local_path(origin, index, gen);
        if path.exists() {
            return Ok(path);
        }
        match &self.backend {
            Backend::Local => Err(BlockError::Missing(chunk_name(origin, index, gen))),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => {
                make_dir(path.parent().expect("a chunk file has a directory"))?;
                o.get_chunk(&chunk_name(origin, index, gen), &path)?;
                Ok(path)
            }
        }
    }

    /// The stored manifest of `disk` and its version, if it has one.
    pub(crate) fn load_manifest(
        &self,
        disk: &str,
    ) -> Result<Option<(Manifest, Version)>, BlockError> {
        let stored = match &self.backend {
            Backend::Local => match fs::read(self.manifest_path(disk)) {
                Ok(bytes) => Some((bytes, Version::default())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.get_manifest(disk)?,
        };
        stored
            .map(|(bytes, version)| {
                Manifest::decode(&bytes)
                    .map(|m| (m, version))
                    .map_err(|reason| BlockError::Manifest {
                        disk: disk.to_owned(),
                        reason,
                    })
            })
            .transpose()
    }

    /// Commits `manifest` as disk's; `previous` is the version this writer last saw (none
    /// for a disk's first manifest): an object store refuses the commit if another writer
    /// replaced it since.
    pub(crate) fn save_manifest(
        &self,
        disk: &str,
        manifest: &Manifest,
        previous: Option<&Version>,
    ) -> Result<Version, BlockError> {
        let bytes = manifest.encode();
        match &self.backend {
            Backend::Local => {
                let path = self.manifest_path(disk);
                if previous.is_none() && path.exists() {
                    return Err(BlockError::Conflict(disk.to_owned()));
                }
                let dir = path.parent().expect("manifests have a directory");
                make_dir(dir)?;
                let temp = dir.join(format!(".{disk}.new"));
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temp)?;
                file.write_all(&bytes)?;
                file.sync_data()?;
                fs::rename(&temp, &path)?;
                sync_dir(dir)?;
                Ok(Version::default())
            }
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.put_manifest(disk, bytes, previous.cloned()),
        }
        .map_err(|e| match e {
            BlockError::Conflict(_) => BlockError::Conflict(disk.to_owned()),
            e => e,
        })
    }

    pub(crate) fn single_file(&self, disk: &str) -> PathBuf {
        self.root.join(format!("{disk}.blocks"))
    }

    /// Chunks from a disk's block file of the single-file layout (one sparse file, the
    /// same ciphertext at the same offsets), if it has one; else an empty manifest.
    pub(crate) fn migrate_single_file(
        &self,
        disk: &str,
        size: u64,
    ) -> Result<Manifest, BlockError> {
        let mut manifest = Manifest::empty(size);
        let old = match File::open(self.single_file(disk)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(manifest),
            Err(e) => return Err(e.into()),
        };
        let old_len = old.metadata()?.len().min(size);
        let origin: Arc<str> = disk.into();
        let mut written = Vec::new();
        for index in 0..Manifest::chunk_count(old_len) {
            let start = index * CHUNK;
            let len = CHUNK.min(size - start);
            let gen = manifest.next_gen;
            let path = self.local_path(disk, index as u32, gen);
            make_dir(path.parent().expect("a chunk file has a directory"))?;
            let new = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            new.set_len(len)?;
            if copy_sparse(&old, start, &new, len.min(old_len - start))? == 0 {
                drop(new);
                fs::remove_file(&path)?;
                continue;
            }
            manifest.next_gen += 1;
            manifest.chunks.insert(
                index as u32,
                ChunkRef {
                    origin: origin.clone(),
                    gen,
                },
            );
            written.push((origin.clone(), index as u32, gen));
        }
        self.persist(&written)?;
        tracing::info!(
            disk,
            chunks = written.len(),
            "moved a disk's block file into chunks"
        );
        Ok(manifest)
    }

    pub(crate) fn remove_single_file(&self, disk: &str) -> Result<(), BlockError> {
        Ok(remove_if_present(&self.single_file(disk))?)
    }

    /// Names of every chunk in the store, `ORIGIN/INDEX-GEN`, or only `origin`'s.
    pub(crate) fn list_chunks(&self, origin: Option<&str>) -> Result<Vec<String>, BlockError> {
        match &self.backend {
            Backend::Local => Ok(self.local_chunks(origin)?),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.list_chunks(origin),
        }
    }

    /// Names of the chunk files under the local chunk directory.
    fn local_chunks(&self, origin: Option<&str>) -> io::Result<Vec<String>> {
        let dir = self.chunk_dir();
        let origins = match origin {
            Some(o) => vec![o.to_owned()],
            None => entries(&dir)?,
        };
        let mut names = Vec::new();
        for o in origins {
            for file in entries(&dir.join(&o))? {
                names.push(format!("{o}/{file}"));
            }
        }
        Ok(names)
    }

    fn delete_chunk(&self, name: &str) -> Result<(), BlockError> {
        #[cfg(feature = "object-store")]
        if let Backend::Object(o) = &self.backend {
            o.delete_chunk(name)?;
        }
        Ok(remove_if_present(&self.chunk_dir().join(name))?)
    }

    /// Deletes the chunks of `disk` at or past `next_gen`, which no commit names: a writer
    /// wrote them and died before committing (or failed to).
    pub(crate) fn remove_orphans(&self, disk: &str, next_gen: u64) -> Result<(), BlockError> {
        let mut names = self.list_chunks(Some(disk))?;
        names.extend(self.local_chunks(Some(disk))?);
        names.sort();
        names.dedup();
        for name in names {
            match parse_chunk_name(&name) {
                Some((_, _, gen)) if gen >= next_gen => self.delete_chunk(&name)?,
                Some(_) => {}
                None => remove_if_present(&self.chunk_dir().join(&name))?,
            }
        }
        Ok(())
    }

    /// Forgets disk `disk`'s blocks: its manifest goes, and its chunks become garbage
    /// unless another manifest names them.
    pub fn delete_disk(&self, disk: &str) -> Result<(), BlockError> {
        match &self.backend {
            Backend::Local => remove_if_present(&self.manifest_path(disk))?,
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.delete_manifest(disk)?,
        }
        self.remove_single_file(disk)
    }

    /// Gives disk `to` the data `from` has now (its committed manifest; none: zeros), in
    /// constant time: the new manifest names the same chunks, which are never written again.
    /// `to` must not have a manifest yet.
    pub fn copy_manifest(&self, from: &str, to: &str, size: u64) -> Result<(), BlockError> {
        if !valid_origin(to) {
            return Err(BlockError::Manifest {
                disk: to.to_owned(),
                reason: "not a disk id".into(),
            });
        }
        let chunks = match self.load_manifest(from)? {
            Some((manifest, _)) => manifest.chunks,
            None => Default::default(),
        };
        let mut copy = Manifest::empty(size);
        copy.chunks = chunks;
        self.save_manifest(to, &copy, None)?;
        Ok(())
    }

    /// Ids of the disks with a stored manifest.
    fn disks(&self) -> Result<Vec<String>, BlockError> {
        match &self.backend {
            Backend::Local => Ok(entries(&self.root.join("manifests"))?
                .into_iter()
                .filter(|n| valid_origin(n))
                .collect()),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.list_manifests(),
        }
    }

    /// Deletes the chunks no manifest names once they have been found unreferenced for
    /// `grace` seconds (a reader holding an older manifest may still read them). Chunks a
    /// writer may still commit (its disk's generations at or past its manifest's
    /// `next_gen`) are never garbage.
    pub fn collect_garbage(&self, now: i64, grace: i64) -> Result<Collected, BlockError> {
        let mut referenced = std::collections::HashSet::new();
        let mut writers: HashMap<String, u64> = HashMap::new();
        // Chunks are listed before manifests are read: a chunk committed in between is
        // then seen referenced, never mistaken for garbage.
        let names = self.list_chunks(None)?;
        for disk in self.disks()? {
            let Some((manifest, _)) = self.load_manifest(&disk)? else {
                continue;
            };
            for (index, chunk) in &manifest.chunks {
                referenced.insert(chunk_name(&chunk.origin, *index, chunk.gen));
            }
            writers.insert(disk, manifest.next_gen);
        }
        let mut unreferenced = self.unreferenced.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashMap::new();
        let mut collected = Collected::default();
        for name in names {
            let Some((origin, _, gen)) = parse_chunk_name(&name) else {
                continue;
            };
            let pending = writers.get(origin).is_some_and(|next| gen >= *next);
            if referenced.contains(&name) || pending {
                continue;
            }
            let since = unreferenced.get(&name).copied().unwrap_or(now);
            if now - since >= grace {
                self.delete_chunk(&name)?;
                collected.deleted += 1;
            } else {
                collected.waiting += 1;
                seen.insert(name, since);
            }
        }
        *unreferenced = seen;
        Ok(collected)
    }
}
