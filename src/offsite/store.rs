//! The object store client, built from `[offsite]` in the config.
//!
//! Invariant: every object is written create-only, so the appliance can never replace one. Small
//! objects (audit notes) with `PUT` and `If-None-Match: *`; files (recordings) streamed as a
//! multipart upload to `staging/NAME`, then copied to `NAME` by a multipart copy whose
//! `CompleteMultipartUpload` carries `If-None-Match: *`. An object already there with the same
//! bytes is a retry whose answer was lost; with other bytes the write is refused
//! ([`OffsiteError::Overwrite`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::config::OffsiteConfig;
use crate::ids::SessionId;
use crate::secrets::{SecretError, read_secret};

#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    #[error("off-site store: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("off-site store: {0}")]
    Config(String),
    #[error("off-site store: {name} exists with other content; the create-only write was refused")]
    Overwrite { name: String },
    #[error("off-site copy of {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Size of a multipart upload's parts (S3's minimum is 5 MiB).
const PART: usize = 8 << 20;
/// Parts in flight at once: what a recording's upload holds in memory is about this many parts.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone, Debug)]
pub struct Offsite {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    pub endpoint: String,
}

impl Offsite {
    pub fn new(cfg: &OffsiteConfig) -> Result<Self, OffsiteError> {
        let (_, secret) = read_secret("offsite_secret", &cfg.secret_access_key_file)?;
        let http = cfg.endpoint.starts_with("http://");
        // The client keeps its own copy of the secret for request signing; ours is wiped here.
        let store = AmazonS3Builder::new()
            .with_endpoint(&cfg.endpoint)
            .with_allow_http(http)
            .with_region(&cfg.region)
            .with_bucket_name(&cfg.bucket)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(secret.expose().trim())
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .build()?;
        let prefix = cfg.prefix.trim_matches('/').to_owned();
        if prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(OffsiteError::Config(format!("bad prefix {:?}", cfg.prefix)));
        }
        Ok(Self {
            store: Arc::new(store),
            prefix,
            endpoint: cfg.endpoint.clone(),
        })
    }

    /// A store in memory (create-only like S3 with conditional writes), for unit tests.
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: "test".into(),
            endpoint: "memory".into(),
        }
    }

    fn path(&self, rest: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{rest}", self.prefix))
    }

    pub fn note_name(seq: u64) -> String {
        format!("audit/{seq:012}.note")
    }

    pub fn recording_name(id: &SessionId, ext: &str) -> String {
        format!("recordings/{id}.{ext}")
    }

    /// Stores `data` as `name`, create-only.
    pub async fn put(&self, name: &str, data: Vec<u8>) -> Result<(), OffsiteError> {
        let path = self.path(name);
        let payload = PutPayload::from(data.clone());
        match self
            .store
            .put_opts(&path, payload, PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => match self.get(name).await? {
                Some(there) if there == data => Ok(()),
                _ => Err(OffsiteError::Overwrite {
                    name: name.to_owned(),
                }),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Streams the file at `local` to `name`, create-only, holding a few parts in memory.
    pub async fn put_file(&self, name: &str, local: &Path) -> Result<(), OffsiteError> {
        let io = |source| OffsiteError::Local {
            path: local.to_owned(),
            source,
        };
        let staging = self.path(&format!("staging/{name}"));
        let mut file = tokio::fs::File::open(local).await.map_err(io)?;
        let mut upload =
            WriteMultipart::new_with_chunk_size(self.store.put_multipart(&staging).await?, PART);
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(io(e));
                }
            };
            if n == 0 {
                break;
            }
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            upload.write(&buf[..n]);
        }
        upload.finish().await?;
        let to = self.path(name);
        match self.store.copy_if_not_exists(&staging, &to).await {
            Ok(()) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                if !self.same_as_file(&to, local).await? {
                    return Err(OffsiteError::Overwrite {
                        name: name.to_owned(),
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        // Best effort: a key without delete rights leaves it to the bucket's lifecycle rule.
        let _ = self.store.delete(&staging).await;
        Ok(())
    }

    /// Whether the object at `path` holds exactly the bytes of the file at `local`, compared
    /// as they stream in.
    async fn same_as_file(&self, path: &ObjectPath, local: &Path) -> Result<bool, OffsiteError> {
        let io = |source| OffsiteError::Local {
            path: local.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::open(local).await.map_err(io)?;
        let mut remote = self.store.get(path).await?.into_stream();
        let mut mine = Vec::new();
        while let Some(chunk) = remote.next().await {
            let chunk = chunk?;
            mine.resize(chunk.len(), 0);
            if file.read_exact(&mut mine).await.is_err() || mine != chunk {
                return Ok(false);
            }
        }
        Ok(file.read(&mut [0]).await.map_err(io)? == 0)
    }

    /// The object, or `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, OffsiteError> {
        match self.store.get(&self.path(name)).await {
            Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The SHA-256 of an object, read as a stream, or `None` when it does not exist.
    pub async fn digest(&self, name: &str) -> Result<Option<[u8; 32]>, OffsiteError> {
        let mut chunks = match self.store.get(&self.path(name)).await {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut digest = Sha256::new();
        while let Some(chunk) = chunks.try_next().await? {
            digest.update(&chunk);
        }
        Ok(Some(digest.finalize().into()))
    }

    /// Sequence numbers of the audit entries stored, ascending.
    pub async fn note_seqs(&self) -> Result<Vec<u64>, OffsiteError> {
        let prefix = self.path("audit");
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut seqs: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".note")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_create_only() {
        let o = Offsite::in_memory();
        o.put("audit/1.note", b"one".to_vec()).await.unwrap();
        // A retry whose answer was lost: the same bytes are already there.
        o.put("audit/1.note", b"one".to_vec()).await.unwrap();
        let refused = o.put("audit/1.note", b"two".to_vec()).await;
        assert!(
            matches!(refused, Err(OffsiteError::Overwrite { .. })),
            "{refused:?}"
        );
        assert_eq!(o.get("audit/1.note").await.unwrap().unwrap(), b"one");
    }

    #[tokio::test]
    async fn files_stream_in_parts_and_are_create_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.cast");
        // Three parts and a bit.
        let data: Vec<u8> = (0..(3 * PART + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let o = Offsite::in_memory();
        o.put_file("recordings/r.cast", &file).await.unwrap();
        assert_eq!(o.get("recordings/r.cast").await.unwrap().unwrap(), data);
        o.put_file("recordings/r.cast", &file).await.unwrap();
        let mut changed = data.clone();
        changed[PART + 7] ^= 1;
        std::fs::write(&file, &changed).unwrap();
        let refused = o.put_file("recordings/r.cast", &file).await;
        assert!(
            matches!(refused, Err(OffsiteError::Overwrite { .. })),
            "{refused:?}"
        );
        assert_eq!(o.get("recordings/r.cast").await.unwrap().unwrap(), data);
    }
}
