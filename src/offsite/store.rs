//! The object store client, built from `[offsite]` in the config.

use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

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
}

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

    fn path(&self, rest: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{rest}", self.prefix))
    }

    pub fn note_name(seq: u64) -> String {
        format!("audit/{seq:012}.note")
    }

    pub fn recording_name(id: &SessionId, ext: &str) -> String {
        format!("recordings/{id}.{ext}")
    }

    pub async fn put(&self, name: &str, data: Vec<u8>) -> Result<(), OffsiteError> {
        self.store
            .put(&self.path(name), PutPayload::from(data))
            .await?;
        Ok(())
    }

    /// The object, or `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, OffsiteError> {
        match self.store.get(&self.path(name)).await {
            Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
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
