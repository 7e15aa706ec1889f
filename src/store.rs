//! Object storage shared by the sink and the transform: `s3://bucket/prefix` through the AWS
//! SDK (AWS or any S3-compatible endpoint) and `file:///path` (atomic rename, same layout).
//!
//! Both honour "create only if absent", the primitive the sink's exactly-once protocol is
//! built on: S3 with `If-None-Match: *`, files with `link(2)`, which fails on an existing name.

use crate::config::S3Config;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        encryption: Encryption,
    },
    File {
        root: PathBuf,
    },
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
            Ok(Store::S3 {
                client: s3_client(s3).await,
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                encryption,
            })
        } else if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(Error::BadUri(uri.into()));
            }
            let root = PathBuf::from(path);
            std::fs::create_dir_all(&root).map_err(|source| Error::Io {
                op: "create directory",
                path: root.display().to_string(),
                source,
            })?;
            Ok(Store::File { root })
        } else {
            Err(Error::BadUri(uri.into()))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
            Store::File { root } => format!("file://{}", root.display()),
        }
    }

    fn full_key(prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        }
    }

    fn path(root: &Path, key: &str) -> PathBuf {
        root.join(key)
    }

    /// Writes `body` at `key`. With `create_new`, an existing object is left untouched and
    /// [`Put::AlreadyExists`] is returned.
    pub async fn put(&self, key: &str, body: Vec<u8>, create_new: bool) -> Result<Put> {
        match self {
            Store::S3 {
                client,
                bucket,
                prefix,
                encryption,
            } => {
                let full = Self::full_key(prefix, key);
                let mut req = client
                    .put_object()
                    .bucket(bucket)
                    .key(&full)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(body));
                if create_new {
                    req = req.if_none_match("*");
                }
                req = match encryption {
                    Encryption::None => req,
                    Encryption::SseS3 => req.server_side_encryption(ServerSideEncryption::Aes256),
                    Encryption::SseKms(id) => req
                        .server_side_encryption(ServerSideEncryption::AwsKms)
                        .set_ssekms_key_id(id.clone()),
                };
                // The CRC32 checksum (a signed header, checked by the server) covers the body:
                // hashing it again with SHA-256 for the signature would only cost CPU.
                match req.customize().disable_payload_signing().send().await {
                    Ok(_) => Ok(Put::Created),
                    Err(e) => {
                        let status = e.raw_response().map(|r| r.status().as_u16());
                        if create_new && matches!(status, Some(412) | Some(409)) {
                            return Ok(Put::AlreadyExists);
                        }
                        Err(s3_error("put", bucket, &full, &e))
                    }
                }
            }
            Store::File { root } => {
                let path = Self::path(root, key);
                let root = root.clone();
                let key = key.to_string();
                tokio::task::spawn_blocking(move || {
                    write_file(&root, &path, &key, &body, create_new)
                })
                .await
                .map_err(|e| Error::Io {
                    op: "write",
                    path: "(task)".into(),
                    source: std::io::Error::other(e.to_string()),
                })?
            }
        }
    }

    /// Reads `key`, `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Store::S3 {
                client,
                bucket,
                prefix,
                ..
            } => {
                let full = Self::full_key(prefix, key);
                match client.get_object().bucket(bucket).key(&full).send().await {
                    Ok(out) => {
                        let data = out.body.collect().await.map_err(|e| Error::S3 {
                            op: "get",
                            uri: format!("s3://{bucket}/{full}"),
                            message: e.to_string(),
                        })?;
                        Ok(Some(data.into_bytes().to_vec()))
                    }
                    Err(e) => {
                        if e.raw_response().map(|r| r.status().as_u16()) == Some(404) {
                            Ok(None)
                        } else {
                            Err(s3_error("get", bucket, &full, &e))
                        }
                    }
                }
            }
            Store::File { root } => match std::fs::read(Self::path(root, key)) {
                Ok(data) => Ok(Some(data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Io {
                    op: "read",
                    path: key.into(),
                    source,
                }),
            },
        }
    }

    /// Every object under `prefix` whose key sorts after `start_after`, in key order.
    pub async fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        match self {
            Store::S3 {
                client,
                bucket,
                prefix: base,
                ..
            } => {
                let full_prefix = Self::full_key(base, prefix);
                let strip = if base.is_empty() { 0 } else { base.len() + 1 };
                let mut out = Vec::new();
                let mut token = None;
                loop {
                    let mut req = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(&full_prefix)
                        .set_continuation_token(token.clone());
                    if let Some(after) = start_after {
                        req = req.start_after(Self::full_key(base, after));
                    }
                    let page = req
                        .send()
                        .await
                        .map_err(|e| s3_error("list", bucket, &full_prefix, &e))?;
                    for obj in page.contents() {
                        if let Some(key) = obj.key() {
                            out.push(ObjectMeta {
                                key: key[strip.min(key.len())..].to_string(),
                                size: obj.size().unwrap_or(0).max(0) as u64,
                            });
                        }
                    }
                    match page.next_continuation_token() {
                        Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                        _ => break,
                    }
                }
                Ok(out)
            }
            Store::File { root } => {
                let mut out = Vec::new();
                walk(root, root, &mut out).map_err(|source| Error::Io {
                    op: "list",
                    path: root.display().to_string(),
                    source,
                })?;
                out.retain(|m| {
                    m.key.starts_with(prefix)
                        && start_after.is_none_or(|a| m.key.as_str() > a)
                        && !m.key.rsplit('/').next().unwrap_or("").starts_with(".tmp-")
                });
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            }
        }
    }

    /// Asks the store whether it will take requests, before any are needed. `Err(Refused)`
    /// means it never will as configured (no such bucket, credentials or access refused, wrong
    /// region: the server's 4xx answers); `Err(Unreachable)`, that it did not answer (yet).
    pub async fn probe(&self) -> std::result::Result<(), Probe> {
        match self {
            Store::S3 {
                client,
                bucket,
                prefix,
                ..
            } => {
                let request = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix.as_str())
                    .max_keys(1)
                    .send();
                match tokio::time::timeout(Duration::from_secs(10), request).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => {
                        let status = e.raw_response().map(|r| r.status().as_u16());
                        let error = match s3_error("list", bucket, prefix, &e) {
                            Error::S3 { message, .. } => message,
                            other => other.to_string(),
                        };
                        match status {
                            Some(300..=499) if !matches!(status, Some(408 | 429)) => {
                                Err(Probe::Refused(error))
                            }
                            _ => Err(Probe::Unreachable(error)),
                        }
                    }
                    Err(_) => Err(Probe::Unreachable("no answer within 10s".into())),
                }
            }
            Store::File { .. } => Ok(()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Store::S3 {
                client,
                bucket,
                prefix,
                ..
            } => {
                let full = Self::full_key(prefix, key);
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(&full)
                    .send()
                    .await
                    .map_err(|e| s3_error("delete", bucket, &full, &e))?;
                Ok(())
            }
            Store::File { root } => match std::fs::remove_file(Self::path(root, key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                    op: "delete",
                    path: key.into(),
                    source: e,
                }),
                _ => Ok(()),
            },
        }
    }
}

fn s3_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    bucket: &str,
    key: &str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error {
    let message = match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => format!(
            "{} ({})",
            se.err().message().unwrap_or("service error"),
            se.err().code().unwrap_or("?")
        ),
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    };
    Error::S3 {
        op,
        uri: format!("s3://{bucket}/{key}"),
        message,
    }
}

fn write_file(root: &Path, path: &Path, key: &str, body: &[u8], create_new: bool) -> Result<Put> {
    use std::io::Write;
    let io = |op: &'static str, source: std::io::Error| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
    let name = key.rsplit('/').next().unwrap_or(key);
    let tmp = dir.join(format!(".tmp-{name}-{}", rand::random::<u64>()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(body).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    drop(f);
    let result = if create_new {
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(Put::Created),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Put::AlreadyExists),
            Err(e) => Err(io("link", e)),
        }
    } else {
        std::fs::rename(&tmp, path)
            .map(|_| Put::Created)
            .map_err(|e| io("rename", e))
    };
    let _ = std::fs::remove_file(&tmp);
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    result
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(ObjectMeta {
                key: rel.to_string_lossy().replace('\\', "/"),
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// The key pair of `[s3]` (with its session token, for temporary credentials), when set; else
/// the SDK's default chain applies (environment, profile, instance role).
fn configured_credentials(cfg: &S3Config) -> Option<aws_sdk_s3::config::Credentials> {
    let (id, secret) = (cfg.access_key_id.as_ref()?, cfg.secret_access_key.as_ref()?);
    Some(aws_sdk_s3::config::Credentials::new(
        id,
        secret,
        cfg.session_token.clone(),
        None,
        "stockpipe-config",
    ))
}

/// An S3 client for the configured endpoint, region and credentials.
pub async fn s3_client(cfg: &S3Config) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(cfg.region.clone()));
    if let Some(credentials) = configured_credentials(cfg) {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(cfg.force_path_style)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(endpoint) = &cfg.endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3cfg() -> S3Config {
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

    #[test]
    fn a_session_token_goes_with_the_key_pair() {
        assert!(configured_credentials(&s3cfg()).is_none());
        let cfg = S3Config {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("secret".into()),
            session_token: Some("token-of-an-assumed-role".into()),
            ..s3cfg()
        };
        let creds = configured_credentials(&cfg).expect("the configured pair");
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
