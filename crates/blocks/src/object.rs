//! The object-store backend: chunks at `chunks/ORIGIN/INDEX-GEN`, written with
//! `PutMode::Create` so a second writer fails instead of overwriting; manifests at
//! `manifests/DISK`, replaced only if unchanged since this writer read them.
//!
//! The volumes' I/O is synchronous (it runs on blocking threads), so object-store calls
//! run on a small runtime of their own and the caller waits for the answer.

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures_util::stream::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Error as ObjectError, ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion,
};
use tokio::runtime::Runtime;

use crate::error::BlockError;
use crate::files::make_dir;
use crate::manifest::{valid_origin, Version, UNIT};

/// Chunk uploads in flight at once during a flush.
const PARALLEL_UPLOADS: usize = 8;

pub(crate) struct Objects {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// Taken on drop, which may happen inside another runtime.
    runtime: Option<Runtime>,
}

impl Drop for Objects {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn backend_error(e: ObjectError) -> BlockError {
    match e {
        ObjectError::AlreadyExists { path, .. } | ObjectError::Precondition { path, .. } => {
            BlockError::Conflict(path)
        }
        e => BlockError::Backend(e.to_string()),
    }
}

fn chunk_path(name: &str) -> Path {
    Path::from(format!("chunks/{name}"))
}

fn manifest_path(disk: &str) -> Path {
    Path::from(format!("manifests/{disk}"))
}

impl Objects {
    /// The store at `url`: `az://CONTAINER`, `s3://BUCKET` or `file:///PATH`, configured by
    /// the `object_store` crate's environment variables (`AZURE_STORAGE_*`, `AWS_*`).
    pub(crate) fn from_url(url: &str) -> Result<Self, BlockError> {
        let bad = |reason: String| BlockError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "s3" | "s3a" => Arc::new(
                AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                make_dir(&dir)?;
                Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?)
            }
            other => {
                return Err(bad(format!(
                    "the scheme '{other}' is not one of az, s3, file"
                )))
            }
        };
        Self::with_store(store, url)
    }

    fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Result<Self, BlockError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("atrest-blob")
            .enable_all()
            .build()?;
        Ok(Objects {
            store,
            url: url.to_owned(),
            runtime: Some(runtime),
        })
    }

    #[cfg(test)]
    pub(crate) fn in_memory(store: Arc<object_store::memory::InMemory>) -> Self {
        Self::with_store(store, "memory:").expect("a runtime")
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Runs `work` on the store's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        self.run_within(work, None)
            .expect("without a limit, the store's runtime finishes what it starts")
    }

    /// [`Self::run`], giving up (and dropping the work) after `limit`, if one.
    fn run_within<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
        limit: Option<std::time::Duration>,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
            .spawn(async move {
                let _ = tx.send(work.await);
            });
        let answer = match limit {
            Some(limit) => rx.recv_timeout(limit).ok(),
            None => rx.recv().ok(),
        };
        task.abort();
        answer
    }

    /// Uploads each `(name, local file)`, refusing to replace an existing chunk.
    pub(crate) fn put_chunks(&self, chunks: Vec<(String, PathBuf)>) -> Result<(), BlockError> {
        let store = self.store.clone();
        self.run(async move {
            futures_util::stream::iter(chunks)
                .map(|(name, file)| {
                    let store = store.clone();
                    async move {
                        let bytes = tokio::fs::read(&file).await?;
                        let path = chunk_path(&name);
                        let put = store
                            .put_opts(
                                &path,
                                PutPayload::from(bytes.clone()),
                                PutMode::Create.into(),
                            )
                            .await;
                        match put {
                            Ok(_) => Ok(()),
                            // A flush that failed after this upload is being retried: the
                            // chunk is this writer's if it holds exactly these bytes.
                            Err(ObjectError::AlreadyExists { .. }) => {
                                let stored = store.get(&path).await.map_err(backend_error)?;
                                if stored.bytes().await.map_err(backend_error)? == bytes {
                                    Ok(())
                                } else {
                                    Err(BlockError::Conflict(path.to_string()))
                                }
                            }
                            Err(e) => Err(backend_error(e)),
                        }
                    }
                })
                .buffer_unordered(PARALLEL_UPLOADS)
                .try_collect::<()>()
                .await
        })
    }

    /// Downloads chunk `name` into `dest` (through a temporary file, so a reader never
    /// sees half of it).
    pub(crate) fn get_chunk(&self, name: &str, dest: &FsPath) -> Result<(), BlockError> {
        let (store, path) = (self.store.clone(), chunk_path(name));
        let bytes = self.run(async move {
            match store.get(&path).await {
                Ok(found) => found.bytes().await.map_err(backend_error),
                Err(ObjectError::NotFound { path, .. }) => Err(BlockError::Missing(path)),
                Err(e) => Err(backend_error(e)),
            }
        })?;
        write_chunk_file(dest, &bytes)?;
        Ok(())
    }

    /// Whether the store answers a read within `limit` (the client retries an unreachable
    /// store for minutes; a readiness probe cannot wait that long).
    pub(crate) fn probe(&self, limit: std::time::Duration) -> Result<(), BlockError> {
        let (store, path) = (self.store.clone(), manifest_path("readiness-probe"));
        let answer = self.run_within(
            async move {
                match store.head(&path).await {
                    Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(backend_error(e)),
                }
            },
            Some(limit),
        );
        answer.unwrap_or_else(|| {
            Err(BlockError::Backend(format!(
                "no answer within {} s",
                limit.as_secs()
            )))
        })
    }

    pub(crate) fn get_manifest(
        &self,
        disk: &str,
    ) -> Result<Option<(Vec<u8>, Version)>, BlockError> {
        let (store, path) = (self.store.clone(), manifest_path(disk));
        self.run(async move {
            match store.get(&path).await {
                Ok(found) => {
                    let version = Version {
                        e_tag: found.meta.e_tag.clone(),
                        version: found.meta.version.clone(),
                    };
                    let bytes = found.bytes().await.map_err(backend_error)?;
                    Ok(Some((bytes.to_vec(), version)))
                }
                Err(ObjectError::NotFound { .. }) => Ok(None),
                Err(e) => Err(backend_error(e)),
            }
        })
    }

    pub(crate) fn put_manifest(
        &self,
        disk: &str,
        bytes: Vec<u8>,
        previous: Option<Version>,
    ) -> Result<Version, BlockError> {
        let (store, path) = (self.store.clone(), manifest_path(disk));
        let mode = match previous {
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: v.e_tag,
                version: v.version,
            }),
            None => PutMode::Create,
        };
        self.run(async move {
            let payload = PutPayload::from(bytes);
            let put = match store.put_opts(&path, payload.clone(), mode.into()).await {
                // A store without conditional replaces (a plain directory): the chunks'
                // create-only writes still catch a second writer.
                Err(ObjectError::NotImplemented { .. }) => {
                    store
                        .put_opts(&path, payload, PutMode::Overwrite.into())
                        .await
                }
                other => other,
            }
            .map_err(backend_error)?;
            Ok(Version {
                e_tag: put.e_tag,
                version: put.version,
            })
        })
    }

    pub(crate) fn delete_manifest(&self, disk: &str) -> Result<(), BlockError> {
        self.delete(manifest_path(disk))
    }

    pub(crate) fn delete_chunk(&self, name: &str) -> Result<(), BlockError> {
        self.delete(chunk_path(name))
    }

    fn delete(&self, path: Path) -> Result<(), BlockError> {
        let store = self.store.clone();
        self.run(async move {
            match store.delete(&path).await {
                Ok(()) | Err(ObjectError::NotFound { .. }) => Ok(()),
                Err(e) => Err(backend_error(e)),
            }
        })
    }

    /// The names of the objects under `prefix/`, relative to it.
    fn list(&self, prefix: String) -> Result<Vec<String>, BlockError> {
        let store = self.store.clone();
        self.run(async move {
            let base = Path::from(prefix);
            let strip = format!("{base}/");
            store
                .list(Some(&base))
                .map_ok(|meta| {
                    let full = meta.location.to_string();
                    full.strip_prefix(&strip).unwrap_or(&full).to_owned()
                })
                .try_collect::<Vec<String>>()
                .await
                .map_err(backend_error)
        })
    }

    pub(crate) fn list_chunks(&self, origin: Option<&str>) -> Result<Vec<String>, BlockError> {
        match origin {
            Some(o) => Ok(self
                .list(format!("chunks/{o}"))?
                .into_iter()
                .map(|n| format!("{o}/{n}"))
                .collect()),
            None => self.list("chunks".into()),
        }
    }

    pub(crate) fn list_manifests(&self) -> Result<Vec<String>, BlockError> {
        Ok(self
            .list("manifests".into())?
            .into_iter()
            .filter(|n| valid_origin(n))
            .collect())
    }
}

/// Writes a downloaded chunk to `dest` through a temporary file, leaving its all-zero
/// units as holes.
fn write_chunk_file(dest: &FsPath, bytes: &[u8]) -> io::Result<()> {
    let temp = dest.with_extension("part");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.set_len(bytes.len() as u64)?;
    for (i, unit) in bytes.chunks(UNIT).enumerate() {
        if unit.iter().any(|b| *b != 0) {
            file.write_all_at(unit, (i * UNIT) as u64)?;
        }
    }
    fs::rename(&temp, dest)
}
