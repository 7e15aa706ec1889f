//! Object storage shared by the sink and the transform: `s3://bucket/prefix` through the AWS
//! SDK (AWS or any S3-compatible endpoint) and `file:///path` (atomic rename, same layout).
//!
//! Both honour "create only if absent", the primitive the sink's exactly-once protocol is
//! built on: S3 with `If-None-Match: *`, files with `link(2)`, which fails on an existing name.

mod file;
mod s3;

pub use file::FileStore;
pub use s3::{s3_client, S3Store};

use crate::config::S3Config;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid storage URI {0:?}: expected s3://bucket/prefix or file:///path")]
    BadUri(String),
    #[error("{op} {uri}: {message}")]
    S3 {
        op: &'static str,
        /// `s3://bucket/key`
        uri: String,
        message: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// An object that must exist and parse (a claim found in the way) does not.
    #[error("{key}: {why}")]
    Unreadable { key: String, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Server-side encryption of written objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    None,
    SseS3,
    SseKms(Option<String>),
}

impl Encryption {
    pub fn from_config(sse: &str, kms_key: Option<&str>) -> Self {
        match sse {
            "AES256" => Encryption::SseS3,
            "aws:kms" => Encryption::SseKms(kms_key.map(str::to_string)),
            _ => Encryption::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// `create_new` was asked and the key already existed; nothing was written.
    AlreadyExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Why [`Store::probe`] failed.
#[derive(Debug)]
pub enum Probe {
    /// The server answered and refused (its reason): retrying will not help.
    Refused(String),
    /// No answer, or a server error (why): it may answer later.
    Unreachable(String),
}

/// A place objects are written to: a bucket or a directory, plus a key prefix.
#[derive(Clone)]
pub enum Store {
    S3(S3Store),
    File(FileStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Store {
    /// Opens `uri` (`s3://bucket/prefix` or `file:///path`).
    pub async fn open(uri: &str, s3: &S3Config, encryption: Encryption) -> Result<Self> {
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::BadUri(uri.into()));
            }
            Ok(Store::S3(S3Store {
                client: s3_client(s3).await,
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                encryption,
                conditional: Default::default(),
            }))
        } else if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(Error::BadUri(uri.into()));
            }
            Ok(Store::File(FileStore::open(PathBuf::from(path))?))
        } else {
            Err(Error::BadUri(uri.into()))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix),
            Store::File(f) => format!("file://{}", f.root.display()),
        }
    }

    /// Writes `body` at `key`. With `create_new`, an existing object is left untouched and
    /// [`Put::AlreadyExists`] is returned.
    pub async fn put(&self, key: &str, body: Vec<u8>, create_new: bool) -> Result<Put> {
        match self {
            Store::S3(s) => s.put(key, body, create_new).await,
            Store::File(f) => f.put(key, body, create_new).await,
        }
    }

    /// Reads `key`, `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Store::S3(s) => s.get(key).await,
            Store::File(f) => f.get(key),
        }
    }

    /// Every object under `prefix` whose key sorts after `start_after`, in key order.
    pub async fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        match self {
            Store::S3(s) => s.list(prefix, start_after).await,
            Store::File(f) => f.list(prefix, start_after),
        }
    }

    /// Asks the store whether it will take requests, before any are needed. `Err(Refused)`
    /// means it never will as configured (no such bucket, credentials or access refused, wrong
    /// region: the server's 4xx answers); `Err(Unreachable)`, that it did not answer (yet).
    pub async fn probe(&self) -> std::result::Result<(), Probe> {
        match self {
            Store::S3(s) => {
                s.probe().await?;
                s.check_conditional().await
            }
            // `link(2)` never replaces a name.
            Store::File(_) => Ok(()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Store::S3(s) => s.delete(key).await,
            Store::File(f) => f.delete(key),
        }
    }
}

/// A store in a fresh temporary directory, for tests.
#[cfg(test)]
pub(crate) async fn temp_file_store() -> Store {
    let dir = std::env::temp_dir().join(format!("stockpipe-store-{}", rand::random::<u64>()));
    let uri = format!("file://{}", dir.display());
    Store::open(&uri, &tests::s3cfg(), Encryption::None)
        .await
        .expect("a temporary directory opens")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn s3cfg() -> S3Config {
        S3Config {
            endpoint_url: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            force_path_style: true,
        }
    }

    #[tokio::test]
    async fn file_store_creates_once_lists_and_reads() {
        let dir = std::env::temp_dir().join(format!("stockpipe-store-{}", rand::random::<u64>()));
        let uri = format!("file://{}", dir.display());
        let store = Store::open(&uri, &s3cfg(), Encryption::None).await.unwrap();
        assert_eq!(
            store.put("a/b/x.json", b"1".to_vec(), true).await.unwrap(),
            Put::Created
        );
        assert_eq!(
            store.put("a/b/x.json", b"2".to_vec(), true).await.unwrap(),
            Put::AlreadyExists
        );
        assert_eq!(store.get("a/b/x.json").await.unwrap(), Some(b"1".to_vec()));
        store.put("a/b/x.json", b"3".to_vec(), false).await.unwrap();
        assert_eq!(store.get("a/b/x.json").await.unwrap(), Some(b"3".to_vec()));
        store.put("a/c/y.json", b"4".to_vec(), false).await.unwrap();
        let keys: Vec<String> = store
            .list("a/", None)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec!["a/b/x.json", "a/c/y.json"]);
        let after: Vec<String> = store
            .list("a/", Some("a/b/x.json"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(after, vec!["a/c/y.json"]);
        assert_eq!(store.get("missing").await.unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_store_lists_from_the_prefix_directory_while_others_write() {
        let dir = std::env::temp_dir().join(format!("stockpipe-store-{}", rand::random::<u64>()));
        let store = Store::open(
            &format!("file://{}", dir.display()),
            &s3cfg(),
            Encryption::None,
        )
        .await
        .unwrap();
        for key in [
            "raw/year=1/a.json",
            "raw/year=2/b.json",
            "rawer/c.json",
            "out/d.json",
        ] {
            store.put(key, b"1".to_vec(), false).await.unwrap();
        }
        let keys = |metas: Vec<ObjectMeta>| metas.into_iter().map(|m| m.key).collect::<Vec<_>>();
        let listed = keys(store.list("raw/year=", None).await.unwrap());
        assert_eq!(listed, ["raw/year=1/a.json", "raw/year=2/b.json"]);
        let listed = keys(store.list("raw", None).await.unwrap());
        assert_eq!(
            listed,
            ["raw/year=1/a.json", "raw/year=2/b.json", "rawer/c.json"]
        );
        assert!(store.list("none/", None).await.unwrap().is_empty());

        // Another writer replaces and deletes files under the listed prefix all the while: an
        // entry that vanishes between readdir and stat is not an error.
        let churn = dir.join("raw/year=1");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = churn.join(format!("f-{}.json", i % 64));
                    std::fs::write(&path, b"x").unwrap();
                    std::fs::remove_file(&path).unwrap();
                    i += 1;
                }
            })
        };
        for _ in 0..2000 {
            store
                .list("raw/", None)
                .await
                .expect("a list beside a writer");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_session_token_goes_with_the_key_pair() {
        assert!(s3::configured_credentials(&s3cfg()).is_none());
        let cfg = S3Config {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("secret".into()),
            session_token: Some("token-of-an-assumed-role".into()),
            ..s3cfg()
        };
        let creds = s3::configured_credentials(&cfg).expect("the configured pair");
        assert_eq!(creds.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(creds.session_token(), Some("token-of-an-assumed-role"));
    }

    #[tokio::test]
    async fn bad_uris_are_refused() {
        assert!(matches!(
            Store::open("ftp://x", &s3cfg(), Encryption::None).await,
            Err(Error::BadUri(_))
        ));
    }
}
