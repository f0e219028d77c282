//! Where the file sinks (Iceberg, Parquet) keep their files: a local directory (`/path`,
//! `file:///path`) or an S3 bucket (`s3://bucket/prefix`, on AWS or any S3-compatible store).
//!
//! Both give the same guarantees the sinks' commit protocols rely on: a file appears whole or
//! not at all (locally: written under a hidden temporary name, synced, then renamed; on S3 a
//! PutObject is atomic), and [`Files::put_new`] writes only if the name is free (locally a
//! hard link, on S3 `If-None-Match: *`), so a retried or doubled write never replaces a file.

mod credentials;
mod profiles;
mod s3;
mod sigv4;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use sluice_core::redact::Secret;
use sluice_core::retry::{Classify, ErrorKind};

use crate::http::HttpError;

/// `s3 = { … }` of a file sink: how to reach S3 when a location is `s3://`. Anything not given
/// comes from the environment as AWS's own tools read it (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3` or
/// `AWS_ENDPOINT_URL`); an Iceberg catalog that vends credentials for a table overrides both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// An S3-compatible store's URL (`http://127.0.0.1:9000` for MinIO); default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region. Default `AWS_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Bucket in the path (`endpoint/bucket/key`) rather than the host name. Default: true
    /// when an endpoint is given, false for AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// File whose content (trailing newline trimmed) is the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// File whose content is a session token (temporary credentials).
    #[serde(default)]
    pub session_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the endpoint's certificate (https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl S3Config {
    /// The config's files, for making them relative to the config file's directory.
    pub fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        self.secret_access_key_file
            .iter_mut()
            .chain(self.session_token_file.iter_mut())
            .chain(self.ca_file.iter_mut())
    }
}

/// Why a file could not be written, read, listed or removed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A local file (retried: a full disk may be freed).
    #[error("{0}")]
    Local(String),
    #[error(transparent)]
    S3(#[from] HttpError),
    /// A location the settings cannot reach (S3 without credentials, an unknown scheme).
    #[error("{0}")]
    Config(String),
}

impl Classify for FilesError {
    fn kind(&self) -> ErrorKind {
        match self {
            FilesError::Local(_) => ErrorKind::Transient,
            FilesError::S3(err) => err.kind(),
            FilesError::Config(_) => ErrorKind::Definite,
        }
    }
}

/// A location, parsed.
enum Place<'a> {
    Local(PathBuf),
    S3 { bucket: &'a str, key: &'a str },
}

fn place(uri: &str) -> Result<Place<'_>, FilesError> {
    for scheme in ["s3://", "s3a://", "s3n://"] {
        if let Some(rest) = uri.strip_prefix(scheme) {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(FilesError::Config(format!(
                    "{uri}: no bucket after {scheme}"
                )));
            }
            return Ok(Place::S3 { bucket, key });
        }
    }
    let path = uri
        .strip_prefix("file://")
        .or_else(|| uri.strip_prefix("file:"))
        .unwrap_or(uri);
    if !path.starts_with('/') {
        return Err(FilesError::Config(format!(
            "{uri}: a location is an absolute directory (/path or file:///path) or an S3 \
             bucket (s3://bucket/prefix); other schemes (gs://, abfss://) are not supported"
        )));
    }
    Ok(Place::Local(PathBuf::from(path)))
}

/// True when `uri` names an S3 location.
pub fn is_s3(uri: &str) -> bool {
    matches!(place(uri), Ok(Place::S3 { .. }))
}

/// A file a listing found: its location, its path under the listed one, its size.
pub struct Listed {
    pub uri: String,
    pub relative: String,
    pub size: u64,
}

/// The file sinks' storage: local directories, and S3 through one client.
pub struct Files {
    /// The S3 client, or why there is none (said when an s3:// location is used).
    s3: Result<s3::S3, String>,
}

/// A setting from `vended` (an Iceberg catalog's per-table config), the config or the
/// environment, in that order.
fn setting(
    vended: &HashMap<String, String>,
    vended_key: &str,
    configured: Option<String>,
    env: &[&str],
) -> Option<String> {
    vended
        .get(vended_key)
        .cloned()
        .or(configured)
        .or_else(|| env.iter().find_map(|name| std::env::var(name).ok()))
        .filter(|v| !v.is_empty())
}

fn read_secret(path: &Path, what: &str) -> Result<Secret, String> {
    std::fs::read_to_string(path)
        .map(|text| Secret::new(text.trim_end_matches(['\n', '\r'])))
        .map_err(|e| format!("s3.{what} {}: {e}", path.display()))
}

impl Files {
    /// Storage for `config`; `vended` holds the `s3.*` properties an Iceberg catalog gave
    /// for a table (credentials it vends), which win over the config.
    pub fn new(config: &S3Config, vended: &HashMap<String, String>) -> Files {
        Files {
            s3: Files::s3_client(config, vended),
        }
    }

    fn s3_client(config: &S3Config, vended: &HashMap<String, String>) -> Result<s3::S3, String> {
        let secret = match (
            vended.get("s3.secret-access-key"),
            &config.secret_access_key_file,
        ) {
            (Some(text), _) => Some(Secret::new(text.clone())),
            (None, Some(path)) => Some(read_secret(path, "secret_access_key_file")?),
            (None, None) => std::env::var("AWS_SECRET_ACCESS_KEY")
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        };
        let token = match (vended.get("s3.session-token"), &config.session_token_file) {
            (Some(text), _) => Some(Secret::new(text.clone())),
            (None, Some(path)) => Some(read_secret(path, "session_token_file")?),
            (None, None) => std::env::var("AWS_SESSION_TOKEN")
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        };
        let key = setting(
            vended,
            "s3.access-key-id",
            config.access_key_id.clone(),
            &["AWS_ACCESS_KEY_ID"],
        );
        let none_given = "no S3 credentials: set s3 = { access_key_id = \"…\", \
                          secret_access_key_file = \"…\" } on the sink, or AWS_ACCESS_KEY_ID \
                          and AWS_SECRET_ACCESS_KEY in sluice's environment, or keys in an AWS \
                          profile (~/.aws/credentials, AWS_PROFILE), or run where an instance \
                          or container role gives them";
        let credentials = match (key, secret) {
            (Some(id), Some(secret)) => credentials::Credentials::Fixed(Arc::new(
                credentials::Keys::fixed(id, secret, token),
            )),
            (None, None) => {
                let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                match profiles::profile_keys(&env)? {
                    Some(keys) => credentials::Credentials::Fixed(Arc::new(keys)),
                    None => credentials::Credentials::discover(none_given)?,
                }
            }
            (Some(_), None) => {
                return Err(format!(
                    "{none_given} (an access key id is given, but no secret access key)"
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{none_given} (a secret access key is given, but no access key id)"
                ))
            }
        };
        let path_style = match vended.get("s3.path-style-access") {
            Some(text) => Some(text == "true"),
            None => config.path_style,
        };
        s3::S3::new(s3::S3Settings {
            endpoint: setting(
                vended,
                "s3.endpoint",
                config.endpoint.clone(),
                &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
            ),
            region: setting(
                vended,
                "s3.region",
                config.region.clone(),
                &["AWS_REGION", "AWS_DEFAULT_REGION"],
            )
            .or_else(|| vended.get("client.region").cloned())
            .unwrap_or_else(|| "us-east-1".into()),
            path_style,
            credentials,
            ca_file: config.ca_file.clone(),
        })
    }

    fn s3(&self, uri: &str) -> Result<&s3::S3, FilesError> {
        self.s3
            .as_ref()
            .map_err(|why| FilesError::Config(format!("{uri}: {why}")))
    }

    /// Whether `uri` is a location these settings can reach (a known scheme; S3 credentials
    /// when it is on S3), without asking the store.
    pub fn check(&self, uri: &str) -> Result<(), FilesError> {
        match place(uri)? {
            Place::Local(_) => Ok(()),
            Place::S3 { .. } => self.s3(uri).map(|_| ()),
        }
    }

    /// Where `uri`'s requests go, for messages: the S3 endpoint, or "local".
    pub fn describe(&self, uri: &str) -> String {
        match (place(uri), &self.s3) {
            (Ok(Place::S3 { .. }), Ok(s3)) => format!("S3 at {}", s3.endpoint()),
            _ => "local directory".into(),
        }
    }

    /// Writes `bytes` as `uri`, replacing what is there.
    pub async fn put(&self, uri: &str, bytes: Bytes) -> Result<(), FilesError> {
        match place(uri)? {
            Place::Local(path) => local_put(&path, &bytes, false).map(|_| ()),
            Place::S3 { bucket, key } => {
                self.s3(uri)?.put(bucket, key, bytes, false).await?;
                Ok(())
            }
        }
    }

    /// Writes `bytes` as `uri` unless a file has that name: false when one has.
    pub async fn put_new(&self, uri: &str, bytes: Bytes) -> Result<bool, FilesError> {
        match place(uri)? {
            Place::Local(path) => local_put(&path, &bytes, true),
            Place::S3 { bucket, key } => Ok(self.s3(uri)?.put(bucket, key, bytes, true).await?),
        }
    }

    /// The bytes of `uri`, which must exist.
    pub async fn get(&self, uri: &str) -> Result<Bytes, FilesError> {
        match place(uri)? {
            Place::Local(path) => std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| FilesError::Local(format!("{}: {e}", path.display()))),
            Place::S3 { bucket, key } => self.s3(uri)?.get(bucket, key).await?.ok_or_else(|| {
                FilesError::Config(format!(
                    "{uri} does not exist (removed by something other than sluice?)"
                ))
            }),
        }
    }

    /// Removes `uri` (nothing when it is gone already).
    pub async fn delete(&self, uri: &str) -> Result<(), FilesError> {
        match place(uri)? {
            Place::Local(path) => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(FilesError::Local(format!("{}: {e}", path.display()))),
            },
            Place::S3 { bucket, key } => Ok(self.s3(uri)?.delete(bucket, key).await?),
        }
    }

    /// Every file under the directory `uri`, at any depth (hidden ones included).
    pub async fn list(&self, uri: &str) -> Result<Vec<Listed>, FilesError> {
        let base = uri.trim_end_matches('/');
        match place(base)? {
            Place::Local(root) => {
                let mut found = Vec::new();
                local_walk(&root, "", &mut |relative, size| {
                    found.push(Listed {
                        uri: format!("{base}/{relative}"),
                        relative: relative.to_owned(),
                        size,
                    })
                })?;
                found.sort_by(|a, b| a.relative.cmp(&b.relative));
                Ok(found)
            }
            Place::S3 { bucket, key } => {
                let prefix = if key.is_empty() {
                    String::new()
                } else {
                    format!("{key}/")
                };
                let objects = self.s3(uri)?.list(bucket, &prefix).await?;
                Ok(objects
                    .into_iter()
                    .filter_map(|o| {
                        let relative = o.key.strip_prefix(&prefix)?.to_owned();
                        Some(Listed {
                            uri: format!("{base}/{relative}"),
                            relative,
                            size: o.size,
                        })
                    })
                    .collect())
            }
        }
    }
}

/// Writes `bytes` at `path` whole or not at all: under `.<name>.tmp`, synced, then renamed
/// (or, `only_new`, hard-linked so an existing file is never replaced: false then).
fn local_put(path: &Path, bytes: &[u8], only_new: bool) -> Result<bool, FilesError> {
    use std::io::Write;
    let shown = |e: std::io::Error| FilesError::Local(format!("{}: {e}", path.display()));
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(FilesError::Local(format!(
            "{}: not a file's path",
            path.display()
        )));
    };
    std::fs::create_dir_all(dir).map_err(shown)?;
    let temp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = std::fs::File::create(&temp).map_err(shown)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(shown)?;
    drop(file);
    let placed = if only_new {
        let linked = std::fs::hard_link(&temp, path);
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(shown(e)),
        }
    } else {
        std::fs::rename(&temp, path).map_err(shown)?;
        true
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(shown)?;
    Ok(placed)
}

fn local_walk(
    dir: &Path,
    relative: &str,
    found: &mut dyn FnMut(&str, u64),
) -> Result<(), FilesError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FilesError::Local(format!("{}: {e}", dir.display()))),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let inner = if relative.is_empty() {
            name
        } else {
            format!("{relative}/{name}")
        };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            local_walk(&entry.path(), &inner, found)?;
        } else {
            found(&inner, meta.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_files_are_written_whole_and_never_replaced_by_put_new() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("file://{}", dir.path().display());
        let files = Files::new(&S3Config::default(), &HashMap::new());
        let uri = format!("{base}/t/date=1/a.parquet");
        assert!(files
            .put_new(&uri, Bytes::from_static(b"one"))
            .await
            .unwrap());
        assert!(!files
            .put_new(&uri, Bytes::from_static(b"two"))
            .await
            .unwrap());
        assert_eq!(&files.get(&uri).await.unwrap()[..], b"one");
        files
            .put(&format!("{base}/m.json"), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let listed: Vec<String> = files
            .list(&base)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.relative)
            .collect();
        assert_eq!(listed, ["m.json", "t/date=1/a.parquet"]);
        files.delete(&uri).await.unwrap();
        files.delete(&uri).await.unwrap();
        assert!(files.get(&uri).await.is_err());
        let err = files.get("gs://b/x").await.err().unwrap();
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn s3_without_credentials_says_how_to_give_them() {
        let files = Files {
            s3: Err("no S3 credentials: set s3 = { … }".into()),
        };
        let err = files.s3("s3://b/k").err().unwrap();
        assert!(
            err.to_string().starts_with("s3://b/k: no S3 credentials"),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Definite);
        assert!(is_s3("s3a://b/k") && !is_s3("/tmp/x"));
    }
}
