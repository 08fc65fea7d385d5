//! The official weights in one line: download from the Hugging Face Hub, verify, cache
//! (feature `hub`, on by default).
//!
//! ```no_run
//! let model = audiox::AudioX::from_pretrained("HKUSTAudio/AudioX-Turbo")?;
//! # Ok::<(), audiox::Error>(())
//! ```
//!
//! Files go to the standard Hugging Face cache (`~/.cache/huggingface/hub`,
//! `models--{org}--{name}/{blobs,snapshots,refs}`), so a file that Python tools
//! (`huggingface_hub`, `transformers`) downloaded is reused, and the other way round. Only the
//! files the model reads are fetched (see [`Pretrained`]).
//!
//! The layout (`Repo`, `Cache`) and the progress bars come from the `hf-hub` crate. Its
//! downloader is not used, because it renames a download into the cache before anything can
//! check it (this module verifies every large file against the hub's sha256 first), and it
//! has no offline mode, no `HF_TOKEN`/`HF_HUB_CACHE`, no commit-hash revisions in the cache and
//! no file name in its errors. The small part that replaces it speaks the same protocol as
//! `huggingface_hub`: `HEAD /{repo}/resolve/{revision}/{file}` for the commit, the `ETag` /
//! `X-Linked-Etag` and the size, then `GET` with `Range` into `blobs/{etag}.incomplete`
//! (resumed from where an interrupted download stopped), verified, then renamed.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::{Progress, RepoInfo};
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use audiox_core::error::DownloadFailure;
use audiox_core::{Error, Result};

use crate::checkpoint::CheckpointPaths;
use crate::convert::with_paths;
use crate::model::{AudioX, AudioXBuilder};

/// The official model repository.
pub const OFFICIAL_REPO: &str = "HKUSTAudio/AudioX-Turbo";
/// The text encoder's repository (T5).
pub const T5_REPO: &str = "google-t5/t5-base";
/// The image encoder's repository (CLIP).
pub const CLIP_REPO: &str = "openai/clip-vit-base-patch32";
/// The hub's address unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The name used in errors about the repository listing (not a file of the repository).
const LISTING: &str = "(repository listing)";

/// Where the hub is, where its cache is, and how to talk to it. [`HubConfig::from_env`] reads
/// the usual environment; tests and programs that must not depend on the environment build one
/// with [`HubConfig::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The hub's base URL, without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache folder, the one holding `models--*` (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// The access token sent to the hub (`HF_TOKEN`, else the file `huggingface-cli login`
    /// wrote).
    pub token: Option<String>,
    /// Use the cache only and touch no network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw a progress bar per downloaded file on the terminal (off with
    /// `HF_HUB_DISABLE_PROGRESS_BARS=1`; never drawn when stderr is not a terminal).
    pub progress: bool,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .finish()
    }
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

impl HubConfig {
    /// The public hub, the given cache folder, no token, online, no progress bars.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            progress: false,
        }
    }

    /// The configuration `huggingface_hub` would use in this process: `HF_ENDPOINT`,
    /// `HF_HUB_CACHE` / `HF_HOME` (default `~/.cache/huggingface`), `HF_TOKEN` (else
    /// `HF_TOKEN_PATH` or `$HF_HOME/token`), `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_PROGRESS_BARS`.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`HubConfig::from_env`] with the variables looked up through `var` instead of the
    /// process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                var("HOME")
                    .or_else(|| var("USERPROFILE"))
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache")
            });
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join("token"));
                fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        HubConfig {
            endpoint: var("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            cache_dir,
            token,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            progress: !var("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| truthy(&v)),
        }
    }
}

/// The files of one revision of a repository: its commit and file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFiles {
    /// The commit the revision points to.
    pub commit: String,
    /// Every file name in the repository (online: the hub's listing; offline: the files in the
    /// cached snapshot).
    pub files: BTreeSet<String>,
}

/// What the hub says about one file (answer to `HEAD .../resolve/...`).
#[derive(Debug, Clone)]
struct FileMeta {
    commit: String,
    etag: String,
    size: u64,
    /// The sha256 of an LFS file (its `X-Linked-Etag`).
    sha256: Option<String>,
    /// Where the bytes are (the resolve URL, or the storage URL it redirects to).
    url: String,
}

/// A client of the hub and its cache. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    config: HubConfig,
    agent: ureq::Agent,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `s` with every byte outside `A-Za-z0-9-._~` (and `/` when `keep_slash`) percent-encoded.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A file name from a listing or a caller is a relative path without `..`: it becomes a path
/// in the cache.
fn safe_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// An ETag or commit becomes a file name in the cache: only `A-Za-z0-9-_.` (not all dots).
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.bytes().any(|b| b != b'.')
}

/// A revision that is already a commit hash.
fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The ETag as the cache names blobs: without `W/` and quotes.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// A lowercase 64-digit hex string (a sha256).
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Draws nothing.
struct NoProgress;

impl Progress for NoProgress {
    fn init(&mut self, _size: usize, _filename: &str) {}
    fn update(&mut self, _size: usize) {}
    fn finish(&mut self) {}
}

impl Hub {
    /// A client with this configuration.
    pub fn new(config: HubConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .accept_encoding("identity")
            .user_agent(format!("audiox/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build()
            .into();
        Hub { config, agent }
    }

    /// A client configured from the environment ([`HubConfig::from_env`]).
    pub fn from_env() -> Self {
        Self::new(HubConfig::from_env())
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn cache_repo(&self, repo: &str, revision: &str) -> hf_hub::CacheRepo {
        Cache::new(self.config.cache_dir.clone()).repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.config
            .cache_dir
            .join(Repo::model(repo.to_string()).folder_name())
    }

    /// The snapshot folder of a commit in the cache (`models--org--name/snapshots/{commit}`).
    pub fn snapshot_dir(&self, repo: &str, commit: &str) -> PathBuf {
        self.cache_repo(repo, commit).pointer_path(commit)
    }

    /// A request with the token when it goes to the hub itself (never to the storage host an
    /// LFS file redirects to).
    fn call(
        &self,
        method: &str,
        url: &str,
        range: Option<u64>,
    ) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = match method {
            "HEAD" => self.agent.head(url),
            _ => self.agent.get(url),
        };
        if let Some(token) = &self.config.token
            && origin(url) == origin(&self.config.endpoint)
        {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        if let Some(start) = range {
            request = request.header("Range", &format!("bytes={start}-"));
        }
        request.call()
    }

    /// The commit and file names of `revision`: from the hub (`/api/models/{repo}/revision/..`)
    /// or, offline, from the cache.
    pub fn repo_files(&self, repo: &str, revision: &str) -> Result<RepoFiles> {
        let fail = |reason| Error::Download {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: LISTING.to_string(),
            reason,
        };
        if self.config.offline {
            let commit = self
                .cached_commit(repo, revision)
                .ok_or(fail(DownloadFailure::NotCached))?;
            let snapshot = self.snapshot_dir(repo, &commit);
            if !snapshot.is_dir() {
                return Err(fail(DownloadFailure::NotCached));
            }
            let mut files = BTreeSet::new();
            walk(&snapshot, &snapshot, &mut files);
            return Ok(RepoFiles { commit, files });
        }
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.config.endpoint,
            encode(repo, true),
            encode(revision, false)
        );
        let response = self
            .call("GET", &url, None)
            .map_err(|e| fail(DownloadFailure::Network(e.to_string())))?;
        check_status(response.status().as_u16()).map_err(fail)?;
        let info: RepoInfo = response
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_json()
            .map_err(|e| fail(DownloadFailure::Protocol(format!("listing: {e}"))))?;
        if !safe_component(&info.sha) {
            return Err(fail(DownloadFailure::Protocol(format!(
                "listing: commit `{}` is not a commit hash",
                info.sha
            ))));
        }
        Ok(RepoFiles {
            commit: info.sha,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// The commit a revision points to in the cache (`refs/{revision}`), or the revision itself
    /// when it is a commit hash.
    fn cached_commit(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let commit = fs::read_to_string(self.repo_dir(repo).join("refs").join(revision)).ok()?;
        let commit = commit.trim().to_string();
        safe_component(&commit).then_some(commit)
    }

    /// The cached copy of `file` at `revision`, if there is one.
    pub fn cached(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        if !safe_relative(file) {
            return None;
        }
        let commit = self.cached_commit(repo, revision)?;
        let path = self.snapshot_dir(repo, &commit).join(file);
        path.is_file().then_some(path)
    }

    /// Makes `refs/{revision}` point to `commit` (what `huggingface_hub` does after a download
    /// by branch or tag name).
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<()> {
        if revision == commit || !safe_relative(revision) {
            return Ok(());
        }
        self.cache_repo(repo, revision)
            .create_ref(commit)
            .map_err(|e| Error::io(self.repo_dir(repo).join("refs").join(revision), e))
    }

    /// The path of `file` of `repo` at `revision` in the cache, downloaded first when it is not
    /// there (offline: an error). Large (LFS) files are verified against the hub's sha256
    /// before they are marked complete.
    pub fn download(&self, repo: &str, revision: &str, file: &str) -> Result<PathBuf> {
        if self.config.progress {
            let bar = indicatif::ProgressBar::new(0);
            let path = self.download_with_progress(repo, revision, file, bar.clone());
            bar.finish_and_clear();
            path
        } else {
            self.download_with_progress(repo, revision, file, NoProgress)
        }
    }

    /// [`Hub::download`] reporting progress to `progress` (`hf_hub`'s trait; implemented for
    /// `indicatif::ProgressBar`).
    pub fn download_with_progress(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        mut progress: impl Progress,
    ) -> Result<PathBuf> {
        let fail = |reason| Error::Download {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: file.to_string(),
            reason,
        };
        if !safe_relative(file) {
            return Err(fail(DownloadFailure::Protocol(
                "not a relative file name".into(),
            )));
        }
        if self.config.offline {
            return self
                .cached(repo, revision, file)
                .ok_or(fail(DownloadFailure::NotCached));
        }
        let meta = self.metadata(repo, revision, file).map_err(fail)?;
        let cache = self.cache_repo(repo, revision);
        let blob = cache.blob_path(&meta.etag);
        let blobs = self.repo_dir(repo).join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        if !complete(&blob, meta.size) {
            let locks = self
                .config
                .cache_dir
                .join(".locks")
                .join(Repo::model(repo.to_string()).folder_name());
            fs::create_dir_all(&locks).map_err(|e| Error::io(&locks, e))?;
            let lock_path = locks.join(format!("{}.lock", meta.etag));
            let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
            // Another process downloading the same blob finishes first.
            lock.lock().map_err(|e| Error::io(&lock_path, e))?;
            if !complete(&blob, meta.size) {
                self.fetch_blob(repo, revision, file, &meta, &blob, &mut progress)?;
            }
            drop(lock);
        }
        let pointer = cache.pointer_path(&meta.commit).join(file);
        link(&blob, &pointer, file).map_err(|e| Error::io(&pointer, e))?;
        self.write_ref(repo, revision, &meta.commit)?;
        Ok(pointer)
    }

    /// `HEAD` on the resolve URL, following the hub's relative redirects (renamed
    /// repositories); the headers of the last answer (a redirect to the storage host for LFS
    /// files) describe the file.
    fn metadata(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> std::result::Result<FileMeta, DownloadFailure> {
        let mut url = format!(
            "{}/{}/resolve/{}/{}",
            self.config.endpoint,
            encode(repo, true),
            encode(revision, false),
            encode(file, true)
        );
        for _ in 0..8 {
            let response = self
                .call("HEAD", &url, None)
                .map_err(|e| DownloadFailure::Network(e.to_string()))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let location = header("location");
            if (300..400).contains(&status) {
                let location = location.clone().ok_or_else(|| {
                    DownloadFailure::Protocol(format!("redirect {status} without a Location"))
                })?;
                if location.starts_with('/') {
                    url = format!("{}{location}", origin(&self.config.endpoint));
                    continue;
                }
            } else {
                check_status(status)?;
            }
            let commit = header("x-repo-commit")
                .ok_or_else(|| DownloadFailure::Protocol("no X-Repo-Commit header".to_string()))?;
            let linked = header("x-linked-etag");
            let etag = linked
                .clone()
                .or_else(|| header("etag"))
                .map(|e| normalize_etag(&e))
                .ok_or_else(|| DownloadFailure::Protocol("no ETag header".to_string()))?;
            let size = header("x-linked-size")
                .or_else(|| header("content-length"))
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| DownloadFailure::Protocol("no file size".to_string()))?;
            if !safe_component(&commit) || !safe_component(&etag) {
                return Err(DownloadFailure::Protocol(format!(
                    "commit `{commit}` or ETag `{etag}` cannot name a cache file"
                )));
            }
            let sha256 = linked.is_some().then(|| etag.to_ascii_lowercase());
            if let Some(sha) = &sha256
                && !is_sha256(sha)
            {
                return Err(DownloadFailure::Protocol(format!(
                    "X-Linked-Etag `{sha}` is not a sha256"
                )));
            }
            let url = match location {
                Some(l) if (300..400).contains(&status) => l,
                _ => url,
            };
            return Ok(FileMeta {
                commit,
                etag,
                size,
                sha256,
                url,
            });
        }
        Err(DownloadFailure::Protocol("too many redirects".to_string()))
    }

    /// Downloads the bytes into `{blob}.incomplete` (resuming what is there), checks the size
    /// and the sha256, then renames it to `blob`.
    fn fetch_blob(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        meta: &FileMeta,
        blob: &Path,
        progress: &mut impl Progress,
    ) -> Result<()> {
        let fail = |reason| Error::Download {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: file.to_string(),
            reason,
        };
        let mut part = blob.as_os_str().to_owned();
        part.push(".incomplete");
        let part = PathBuf::from(part);
        let io = |e| Error::io(&part, e);
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(io)?;
        let mut start = out.metadata().map_err(io)?.len();
        if start > meta.size {
            out.set_len(0).map_err(io)?;
            start = 0;
        }
        let mut hasher = Sha256::new();
        if start > 0 && meta.sha256.is_some() {
            let mut done = File::open(&part).map_err(io)?.take(start);
            std::io::copy(&mut done, &mut hasher).map_err(io)?;
        }
        progress.init(meta.size as usize, file);
        progress.update(start as usize);
        if start < meta.size {
            let response = self
                .call("GET", &meta.url, (start > 0).then_some(start))
                .map_err(|e| fail(DownloadFailure::Network(e.to_string())))?;
            let status = response.status().as_u16();
            match status {
                206 => {
                    let range = response
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if parse_content_range(range) != Some((start, meta.size)) {
                        return Err(fail(DownloadFailure::Protocol(format!(
                            "asked for bytes {start}- of {}, got Content-Range `{range}`",
                            meta.size
                        ))));
                    }
                }
                200 if start > 0 => {
                    // The server ignored the range: start over.
                    out.set_len(0).map_err(io)?;
                    hasher = Sha256::new();
                    progress.init(meta.size as usize, file);
                    start = 0;
                }
                _ => check_status(status).map_err(fail)?,
            }
            let mut body = response.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 20];
            let mut have = start;
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(fail(DownloadFailure::Network(format!(
                            "{e} after {have} of {} bytes (run again to resume)",
                            meta.size
                        ))));
                    }
                };
                if have + n as u64 > meta.size {
                    out.set_len(0).map_err(io)?;
                    return Err(fail(DownloadFailure::Protocol(format!(
                        "more than the announced {} bytes",
                        meta.size
                    ))));
                }
                out.write_all(&buf[..n]).map_err(io)?;
                if meta.sha256.is_some() {
                    hasher.update(&buf[..n]);
                }
                have += n as u64;
                progress.update(n);
            }
            if have != meta.size {
                return Err(fail(DownloadFailure::Network(format!(
                    "the connection ended after {have} of {} bytes (run again to resume)",
                    meta.size
                ))));
            }
        }
        out.sync_all().map_err(io)?;
        drop(out);
        if let Some(expected) = &meta.sha256 {
            let found = to_hex(&hasher.finalize());
            if &found != expected {
                fs::remove_file(&part).map_err(io)?;
                return Err(Error::Checksum {
                    repo: repo.to_string(),
                    file: file.to_string(),
                    expected: expected.clone(),
                    found,
                });
            }
        }
        fs::rename(&part, blob).map_err(io)?;
        progress.finish();
        Ok(())
    }
}

/// `Ok` for a success status, else why it failed.
fn check_status(status: u16) -> std::result::Result<(), DownloadFailure> {
    match status {
        200..=299 => Ok(()),
        404 => Err(DownloadFailure::NotFound),
        401 | 403 => Err(DownloadFailure::Unauthorized(status)),
        other => Err(DownloadFailure::Http(other)),
    }
}

/// `bytes a-b/total` -> `(a, total)`.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, _) = span.split_once('-')?;
    Some((a.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// A blob is complete when it exists with the announced size (it was verified when written).
fn complete(blob: &Path, size: u64) -> bool {
    fs::metadata(blob).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// `snapshots/{commit}/{file}` -> `blobs/{etag}`, as a relative symlink like
/// `huggingface_hub` makes (a copy where symlinks are not available).
fn link(blob: &Path, pointer: &Path, file: &str) -> std::io::Result<()> {
    if pointer.is_file() && fs::canonicalize(pointer)? == fs::canonicalize(blob)? {
        return Ok(());
    }
    if let Some(parent) = pointer.parent() {
        fs::create_dir_all(parent)?;
    }
    if pointer.symlink_metadata().is_ok() {
        fs::remove_file(pointer)?;
    }
    let mut target = PathBuf::new();
    for _ in 0..=file.split('/').count() {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap_or_default());
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, pointer)
    }
    #[cfg(not(unix))]
    {
        let _ = target;
        fs::copy(blob, pointer).map(|_| ())
    }
}

/// Every file (or link to one) under `dir`, as `/`-separated names relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if path.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            let name: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.insert(name.join("/"));
        }
    }
}

/// One file the model needs: the first of `candidates` the repository has.
struct Wanted {
    candidates: &'static [&'static str],
    required: bool,
}

/// Student candidates, in the order [`CheckpointPaths::from_dir`] uses.
const CONFIGS: &[&str] = &[
    "config.json",
    "audiox_turbo_infer_4step.json",
    "model_config.json",
];
const STUDENTS: &[&str] = &[
    "audiox_turbo/audiox_turbo.ckpt",
    "audiox_turbo/audiox_turbo.safetensors",
];
const VAES: &[&str] = &["pretransform/vae.ckpt", "pretransform/vae.safetensors"];
const SYNCHFORMERS: &[&str] = &[
    "synchformer/synchformer_state_dict.pth",
    "synchformer/synchformer_state_dict.safetensors",
];
const TEACHERS: &[&str] = &[
    "pretrained_ckpt/pretrained_ckpt.ckpt",
    "pretrained_ckpt/pretrained_ckpt.safetensors",
];

/// Downloads the first present candidate of each wanted file; returns their cache paths in
/// order (`None` for an absent optional file) and the snapshot folder.
fn fetch_wanted(
    hub: &Hub,
    repo: &str,
    revision: &str,
    wanted: &[Wanted],
) -> Result<(Vec<Option<PathBuf>>, PathBuf)> {
    let listing = hub.repo_files(repo, revision)?;
    let mut paths = Vec::with_capacity(wanted.len());
    for w in wanted {
        match w.candidates.iter().find(|c| listing.files.contains(**c)) {
            Some(name) => paths.push(Some(hub.download(repo, &listing.commit, name)?)),
            None if w.required => {
                return Err(Error::Download {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                    file: w.candidates.join("` or `"),
                    reason: if hub.config.offline {
                        DownloadFailure::NotCached
                    } else {
                        DownloadFailure::NotFound
                    },
                });
            }
            None => paths.push(None),
        }
    }
    if !hub.config.offline {
        hub.write_ref(repo, revision, &listing.commit)?;
    }
    Ok((paths, hub.snapshot_dir(repo, &listing.commit)))
}

/// Builder form of [`AudioX::from_pretrained`]: which repository and revision, how to reach
/// the hub, which parts to fetch, and the [`AudioXBuilder`] settings (device, ...).
///
/// Fetched from the model repository: `config.json` when it has one, the student (unless the
/// teacher is asked for), the VAE, the Synchformer (unless video is turned off), the teacher
/// (only when asked for); from [`T5_REPO`]: `config.json`, `model.safetensors` (or
/// `pytorch_model.bin`), `tokenizer.json`; from [`CLIP_REPO`]: `config.json`,
/// `model.safetensors`.
///
/// ```no_run
/// let model = audiox::AudioX::pretrained("HKUSTAudio/AudioX-Turbo")
///     .revision("main")
///     .video(false) // text/audio prompts only: no Synchformer download
///     .build()?;
/// # Ok::<(), audiox::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pretrained {
    repo: String,
    revision: String,
    hub: Option<HubConfig>,
    endpoint: Option<String>,
    cache_dir: Option<PathBuf>,
    token: Option<String>,
    offline: Option<bool>,
    progress: Option<bool>,
    teacher: bool,
    video: bool,
    t5_repo: String,
    clip_repo: String,
    builder: AudioXBuilder,
}

impl Pretrained {
    /// The model repository `repo` (`HKUSTAudio/AudioX-Turbo`) at `main`, the hub settings of
    /// the environment ([`HubConfig::from_env`], read at [`Pretrained::build`]).
    pub fn new(repo: impl Into<String>) -> Self {
        Pretrained {
            repo: repo.into(),
            revision: "main".to_string(),
            hub: None,
            endpoint: None,
            cache_dir: None,
            token: None,
            offline: None,
            progress: None,
            teacher: false,
            video: true,
            t5_repo: T5_REPO.to_string(),
            clip_repo: CLIP_REPO.to_string(),
            builder: AudioXBuilder::default(),
        }
    }

    /// A branch, tag or commit of the model repository (default `main`).
    pub fn revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = revision.into();
        self
    }

    /// Every hub setting at once, instead of the environment.
    pub fn hub_config(mut self, config: HubConfig) -> Self {
        self.hub = Some(config);
        self
    }

    /// The hub's URL (instead of `HF_ENDPOINT`).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into().trim_end_matches('/').to_string());
        self
    }

    /// The access token (instead of `HF_TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The hub cache folder, the one holding `models--*` (instead of `HF_HUB_CACHE` /
    /// `HF_HOME`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Use the cache only (instead of `HF_HUB_OFFLINE`).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = Some(offline);
        self
    }

    /// Draw progress bars on the terminal (default on).
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Fetch and use the teacher (AudioX base) as the denoiser; the student is not fetched.
    pub fn teacher(mut self, teacher: bool) -> Self {
        self.teacher = teacher;
        self
    }

    /// Fetch the Synchformer so that video and image requests can be served (default on).
    pub fn video(mut self, video: bool) -> Self {
        self.video = video;
        self
    }

    /// The text encoder repository (default [`T5_REPO`], at `main`).
    pub fn t5_repo(mut self, repo: impl Into<String>) -> Self {
        self.t5_repo = repo.into();
        self
    }

    /// The image encoder repository (default [`CLIP_REPO`], at `main`).
    pub fn clip_repo(mut self, repo: impl Into<String>) -> Self {
        self.clip_repo = repo.into();
        self
    }

    /// The builder the downloaded files are set on (device, chunked decoding, ...).
    pub fn builder(mut self, builder: AudioXBuilder) -> Self {
        self.builder = builder;
        self
    }

    /// The hub settings: the explicit ones over [`Pretrained::hub_config`] or the environment.
    pub fn resolved_hub_config(&self) -> HubConfig {
        let mut config = self.hub.clone().unwrap_or_else(HubConfig::from_env);
        if let Some(e) = &self.endpoint {
            config.endpoint.clone_from(e);
        }
        if let Some(d) = &self.cache_dir {
            config.cache_dir.clone_from(d);
        }
        if let Some(t) = &self.token {
            config.token = Some(t.clone());
        }
        if let Some(o) = self.offline {
            config.offline = o;
        }
        if let Some(p) = self.progress {
            config.progress = p;
        }
        config
    }

    /// Fetches (or finds in the cache) every file the model needs; returns their paths.
    pub fn download(&self) -> Result<CheckpointPaths> {
        let hub = Hub::new(self.resolved_hub_config());
        let mut wanted = vec![Wanted {
            candidates: CONFIGS,
            required: false,
        }];
        wanted.push(Wanted {
            candidates: VAES,
            required: true,
        });
        wanted.push(if self.teacher {
            Wanted {
                candidates: TEACHERS,
                required: true,
            }
        } else {
            Wanted {
                candidates: STUDENTS,
                required: true,
            }
        });
        if self.video {
            wanted.push(Wanted {
                candidates: SYNCHFORMERS,
                required: true,
            });
        }
        let (model, _) = fetch_wanted(&hub, &self.repo, &self.revision, &wanted)?;
        let (_, t5_dir) = fetch_wanted(
            &hub,
            &self.t5_repo,
            "main",
            &[
                Wanted {
                    candidates: &["config.json"],
                    required: true,
                },
                Wanted {
                    candidates: &["model.safetensors", "pytorch_model.bin"],
                    required: true,
                },
                Wanted {
                    candidates: &["tokenizer.json"],
                    required: true,
                },
            ],
        )?;
        let (_, clip_dir) = fetch_wanted(
            &hub,
            &self.clip_repo,
            "main",
            &[
                Wanted {
                    candidates: &["config.json"],
                    required: true,
                },
                Wanted {
                    candidates: &["model.safetensors"],
                    required: true,
                },
            ],
        )?;
        let mut model = model.into_iter();
        let config = model.next().flatten();
        let vae = model.next().flatten();
        let denoiser = model.next().flatten();
        let synchformer = model.next().flatten();
        let (student, teacher) = if self.teacher {
            (None, denoiser)
        } else {
            (denoiser, None)
        };
        Ok(CheckpointPaths {
            config,
            student,
            vae,
            synchformer,
            t5_dir: Some(t5_dir),
            clip_dir: Some(clip_dir),
            teacher,
        })
    }

    /// Downloads, then returns the builder with every file set (to change more before
    /// [`AudioXBuilder::build`]).
    pub fn into_builder(self) -> Result<AudioXBuilder> {
        let paths = self.download()?;
        Ok(with_paths(self.builder, &paths))
    }

    /// Downloads, then loads the model.
    pub fn build(self) -> Result<AudioX> {
        self.into_builder()?.build()
    }
}

impl AudioX {
    /// Downloads (or finds in the Hugging Face cache) the model `repo`
    /// (`"HKUSTAudio/AudioX-Turbo"`) and its two encoders, then loads it. The hub settings come
    /// from the environment (`HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN`, `HF_HUB_OFFLINE`, ...);
    /// [`AudioX::pretrained`] is the builder form.
    ///
    /// ```no_run
    /// let model = audiox::AudioX::from_pretrained("HKUSTAudio/AudioX-Turbo")?;
    /// # Ok::<(), audiox::Error>(())
    /// ```
    pub fn from_pretrained(repo: impl Into<String>) -> Result<AudioX> {
        Pretrained::new(repo).build()
    }

    /// The builder form of [`AudioX::from_pretrained`] (revision, token, cache folder,
    /// teacher, ...).
    pub fn pretrained(repo: impl Into<String>) -> Pretrained {
        Pretrained::new(repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_read_like_huggingface_hub() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = HubConfig::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert!(!c.offline && c.progress && c.token.is_none());
        let c = HubConfig::from_vars(vars(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "/data/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " hf_abc \n"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "true"),
        ]));
        assert_eq!(c.cache_dir, PathBuf::from("/data/hf/hub"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("hf_abc"));
        assert!(c.offline && !c.progress);
        assert!(!format!("{c:?}").contains("hf_abc"), "token never printed");
        let c = HubConfig::from_vars(vars(&[
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_CACHE", "/fast/hub"),
            ("HF_HUB_OFFLINE", "0"),
        ]));
        assert_eq!(c.cache_dir, PathBuf::from("/fast/hub"));
        assert!(!c.offline);
    }

    #[test]
    fn names_from_the_network_cannot_escape_the_cache() {
        assert!(safe_relative("audiox_turbo/audiox_turbo.ckpt"));
        for bad in ["", "/etc/passwd", "a/../b", "..", "a//b", "a\\b", "./a"] {
            assert!(!safe_relative(bad), "{bad}");
        }
        assert!(safe_component("0123abc"));
        for bad in ["", "..", "a/b", "a b"] {
            assert!(!safe_component(bad), "{bad}");
        }
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(encode("main/x y", false), "main%2Fx%20y");
        assert_eq!(origin("http://127.0.0.1:80/a/b"), "http://127.0.0.1:80");
    }
}
