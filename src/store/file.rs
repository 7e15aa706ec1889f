//! `file:///path`: the same layout as a bucket, in a directory. An object is written to a
//! temporary name, synced, then renamed into place; "create only if absent" is `link(2)`, which
//! fails on an existing name.

use super::{Error, ObjectMeta, Put, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A directory holding objects at their keys.
#[derive(Clone, Debug)]
pub struct FileStore {
    pub(super) root: PathBuf,
}

impl FileStore {
    /// Opens `root`, creating it when missing.
    pub fn open(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|source| Error::Io {
            op: "create directory",
            path: root.display().to_string(),
            source,
        })?;
        Ok(Self { root })
    }

    pub async fn put(&self, key: &str, body: Vec<u8>, create_new: bool) -> Result<Put> {
        let path = self.root.join(key);
        let root = self.root.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || write_file(&root, &path, &key, &body, create_new))
            .await
            .map_err(|e| Error::Io {
                op: "write",
                path: "(task)".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(key)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                op: "read",
                path: key.into(),
                source,
            }),
        }
    }

    /// The objects whose keys start with `prefix` (after `start_after`), in key order. Only the
    /// directory the prefix names is walked, and a file that goes away while it is walked (an
    /// object replaced or deleted by another writer) is left out rather than failing the list.
    pub fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let dir = match prefix.rfind('/') {
            Some(end) => self.root.join(&prefix[..end]),
            None => self.root.clone(),
        };
        walk(&self.root, &dir, &mut out).map_err(|source| Error::Io {
            op: "list",
            path: dir.display().to_string(),
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

    pub fn delete(&self, key: &str) -> Result<()> {
        match std::fs::remove_file(self.root.join(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                op: "delete",
                path: key.into(),
                source: e,
            }),
            _ => Ok(()),
        }
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
    make_durable(root, dir).map_err(|e| io("sync directory", e))?;
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
    let put = result?;
    // The name is durable only once its directory is: a failure here fails the put.
    sync_dir(dir).map_err(|e| io("sync directory", e))?;
    Ok(put)
}

/// The size of the regular file a link resolves to, when that file lies inside the root.
fn file_inside(root: &Path, link: &Path) -> Option<u64> {
    let target = std::fs::canonicalize(link).ok()?;
    let meta = std::fs::metadata(&target).ok()?;
    (meta.is_file() && target.starts_with(std::fs::canonicalize(root).ok()?)).then_some(meta.len())
}

/// A directory's entry lives in its parent: each directory below the root that holds an object is
/// synced into its parent once (whoever made it, and again after a failed attempt), or a day
/// directory could vanish on power loss after its objects' offsets were committed.
fn make_durable(root: &Path, dir: &Path) -> std::io::Result<()> {
    static DURABLE: std::sync::Mutex<BTreeSet<PathBuf>> = std::sync::Mutex::new(BTreeSet::new());
    let below: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| *d != root && d.starts_with(root))
        .collect();
    for d in below.into_iter().rev() {
        if DURABLE.lock().is_ok_and(|s| s.contains(d)) {
            continue;
        }
        sync_dir(d.parent().unwrap_or(root))?;
        if let Ok(mut s) = DURABLE.lock() {
            s.insert(d.to_path_buf());
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        let size = if meta.is_dir() {
            walk(root, &path, out)?;
            continue;
        } else if meta.is_file() {
            meta.len()
        } else if let Some(size) = file_inside(root, &path) {
            size
        } else {
            // Objects are regular files. A link out of the lake (or to a directory, a device that
            // never ends) is not followed; a FIFO would block its reader for ever.
            log::warn!(
                "skipping {}: not a regular file of the lake (a link out of it or to a directory, \
                 a FIFO, socket or device)",
                path.display()
            );
            continue;
        };
        if let Ok(rel) = path.strip_prefix(root) {
            let Some(key) = rel.to_str() else {
                log::warn!(
                    "skipping {}: its name is not UTF-8, so it cannot be an object key",
                    path.display()
                );
                continue;
            };
            out.push(ObjectMeta {
                key: key.replace('\\', "/"),
                size,
            });
        }
    }
    Ok(())
}
