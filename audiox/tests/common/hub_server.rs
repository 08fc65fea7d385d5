//! A small Hugging Face Hub on 127.0.0.1 for tests and demos: it speaks the hub's file protocol
//! (`HEAD`/`GET` with `Range` on `/{repo}/resolve/{revision}/{path}`, `ETag` /
//! `X-Linked-Etag` / `X-Linked-Size` / `X-Repo-Commit` / `Content-Range`, LFS files redirected
//! to a storage URL, `/api/models/{repo}/revision/{revision}`) and serves files from memory.
//! It can cut a download short, corrupt a file or forget one. It serves one connection at a
//! time (`Connection: close`), and stops when dropped or after its lifetime.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The official repository names the tiny bundle is served under.
pub const MODEL_REPO: &str = "HKUSTAudio/AudioX-Turbo";
/// The T5 repository name.
pub const T5_REPO: &str = "google-t5/t5-base";
/// The CLIP repository name.
pub const CLIP_REPO: &str = "openai/clip-vit-base-patch32";

struct File {
    bytes: Vec<u8>,
    sha256: String,
    lfs: bool,
}

struct ServedRepo {
    commit: String,
    files: BTreeMap<String, File>,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, ServedRepo>,
    /// `repo/file` -> bytes to send before closing the connection (once).
    cut: BTreeMap<String, usize>,
    /// `repo/file` whose bytes are served with one byte changed.
    corrupt: BTreeSet<String>,
    log: Vec<String>,
}

/// A running server. Dropping it stops it.
pub struct HubServer {
    endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir` (recursively), by `/`-separated relative name, skipping the
/// top-level folders in `skip`.
pub fn read_tree(dir: &Path, skip: &[&str]) -> BTreeMap<String, Vec<u8>> {
    fn go(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir)
            .expect("readable fixture folder")
            .flatten()
        {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if skip.iter().any(|s| rel == *s) {
                continue;
            }
            if path.is_dir() {
                go(root, &path, skip, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("readable fixture file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    go(dir, dir, skip, &mut out);
    out
}

/// The tiny bundle (`fixtures/tiny/bundle`) as the three repositories of the official model.
pub fn bundle_repos(bundle: &Path) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut repos = BTreeMap::new();
    repos.insert(
        MODEL_REPO.to_string(),
        read_tree(bundle, &["expected", "t5-base", "clip-vit-base-patch32"]),
    );
    repos.insert(T5_REPO.to_string(), read_tree(&bundle.join("t5-base"), &[]));
    repos.insert(
        CLIP_REPO.to_string(),
        read_tree(&bundle.join("clip-vit-base-patch32"), &[]),
    );
    repos
}

impl HubServer {
    /// Serves `repos` (name -> file name -> bytes) on a free port of 127.0.0.1 for at most
    /// `lifetime`.
    pub fn start(repos: BTreeMap<String, BTreeMap<String, Vec<u8>>>, lifetime: Duration) -> Self {
        let mut state = State::default();
        for (name, files) in repos {
            let commit = hex(&Sha256::digest(name.as_bytes()))[..40].to_string();
            let files = files
                .into_iter()
                .map(|(path, bytes)| {
                    let lfs = !path.ends_with(".json") && !path.ends_with(".txt");
                    let sha256 = hex(&Sha256::digest(&bytes));
                    (path, File { bytes, sha256, lfs })
                })
                .collect();
            state.repos.insert(name, ServedRepo { commit, files });
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, endpoint) = (state.clone(), stop.clone(), endpoint.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < lifetime {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve(stream, &state, &endpoint);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        HubServer {
            endpoint,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The base URL (`HF_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The commit `main` of `repo` points to.
    pub fn commit(&self, repo: &str) -> String {
        self.state.lock().unwrap().repos[repo].commit.clone()
    }

    /// The sha256 of a served file.
    pub fn sha256(&self, repo: &str, file: &str) -> String {
        self.state.lock().unwrap().repos[repo].files[file]
            .sha256
            .clone()
    }

    /// The next download of `file` sends `bytes` bytes and then closes the connection.
    pub fn cut_next_download(&self, repo: &str, file: &str, bytes: usize) {
        self.state
            .lock()
            .unwrap()
            .cut
            .insert(format!("{repo}/{file}"), bytes);
    }

    /// Serve `file` with one byte changed (its headers keep the true sha256).
    pub fn corrupt(&self, repo: &str, file: &str) {
        self.state
            .lock()
            .unwrap()
            .corrupt
            .insert(format!("{repo}/{file}"));
    }

    /// Forget `file`.
    pub fn remove(&self, repo: &str, file: &str) {
        if let Some(r) = self.state.lock().unwrap().repos.get_mut(repo) {
            r.files.remove(file);
        }
    }

    /// Every request so far, as `METHOD path [range]`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Stops serving (the port is closed when this returns).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut: Option<usize>,
}

impl Reply {
    fn status(status: &'static str) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, endpoint: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let mut range = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok());
        }
    }
    let reply = {
        let mut state = state.lock().unwrap();
        state.log.push(match range {
            Some(r) => format!("{method} {target} bytes={r}-"),
            None => format!("{method} {target}"),
        });
        route(&mut state, &method, &target, range, endpoint)
    };
    let head_only = method == "HEAD";
    let mut out = format!("HTTP/1.1 {}\r\nConnection: close\r\n", reply.status);
    let has_length = reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    if !head_only {
        let n = reply.cut.unwrap_or(reply.body.len()).min(reply.body.len());
        stream.write_all(&reply.body[..n])?;
    }
    stream.flush()?;
    Ok(())
}

fn not_found(code: &str) -> Reply {
    Reply::status("404 Not Found").header("X-Error-Code", code)
}

fn route(
    state: &mut State,
    method: &str,
    target: &str,
    range: Option<usize>,
    endpoint: &str,
) -> Reply {
    if let Some(rest) = target.strip_prefix("/api/models/") {
        let Some((repo, rev)) = rest.rsplit_once("/revision/") else {
            return not_found("RepositoryNotFound");
        };
        let Some(r) = state.repos.get(&decode(repo)) else {
            return not_found("RepositoryNotFound");
        };
        let rev = decode(rev);
        if rev != "main" && rev != r.commit {
            return not_found("RevisionNotFound");
        }
        let siblings: Vec<String> = r
            .files
            .keys()
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let mut reply = Reply::status("200 OK").header("Content-Type", "application/json");
        reply.body = format!(
            "{{\"id\":\"{}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
            decode(repo),
            r.commit,
            siblings.join(",")
        )
        .into_bytes();
        return reply;
    }
    // The storage host of LFS files: `/lfs/{repo}/{file}`.
    if let Some(rest) = target.strip_prefix("/lfs/") {
        let rest = decode(rest);
        let found = state.repos.iter().find_map(|(name, r)| {
            let file = rest.strip_prefix(name.as_str())?.strip_prefix('/')?;
            r.files.get(file).map(|_| (name.clone(), file.to_string()))
        });
        let Some((repo, file)) = found else {
            return not_found("EntryNotFound");
        };
        return bytes(state, &repo, &file, method, range);
    }
    let Some((repo, rest)) = target.split_once("/resolve/") else {
        return not_found("RepositoryNotFound");
    };
    let repo = decode(repo.trim_start_matches('/'));
    let Some((rev, file)) = rest.split_once('/') else {
        return not_found("EntryNotFound");
    };
    let (rev, file) = (decode(rev), decode(file));
    let Some(r) = state.repos.get(&repo) else {
        return not_found("RepositoryNotFound");
    };
    if rev != "main" && rev != r.commit {
        return not_found("RevisionNotFound");
    }
    let commit = r.commit.clone();
    let Some(f) = r.files.get(&file) else {
        return not_found("EntryNotFound").header("X-Repo-Commit", commit);
    };
    let git_etag = format!("\"{}\"", &f.sha256[..40]);
    if f.lfs {
        return Reply::status("302 Found")
            .header("Location", format!("{endpoint}/lfs/{repo}/{file}"))
            .header("X-Repo-Commit", commit)
            .header("ETag", git_etag)
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256))
            .header("X-Linked-Size", f.bytes.len().to_string());
    }
    let mut reply = bytes(state, &repo, &file, method, range);
    reply
        .headers
        .extend([("X-Repo-Commit".into(), commit), ("ETag".into(), git_etag)]);
    reply
}

fn bytes(state: &mut State, repo: &str, file: &str, method: &str, range: Option<usize>) -> Reply {
    let key = format!("{repo}/{file}");
    let f = &state.repos[repo].files[file];
    let mut body = f.bytes.clone();
    if state.corrupt.contains(&key) {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let total = body.len();
    let cut = if method == "GET" {
        state.cut.remove(&key)
    } else {
        None
    };
    let mut reply = match range {
        Some(start) if start < total => {
            let reply = Reply::status("206 Partial Content").header(
                "Content-Range",
                format!("bytes {start}-{}/{total}", total - 1),
            );
            Reply {
                body: body[start..].to_vec(),
                ..reply
            }
        }
        Some(_) => {
            return Reply::status("416 Range Not Satisfiable")
                .header("Content-Range", format!("bytes */{total}"));
        }
        None => Reply {
            body,
            ..Reply::status("200 OK")
        },
    };
    reply = reply.header("Accept-Ranges", "bytes");
    reply.cut = cut;
    reply
}
