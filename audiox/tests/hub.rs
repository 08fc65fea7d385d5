//! Downloading from the hub, against a local server on 127.0.0.1 that serves the tiny bundle
//! under the three official repository names (no internet): first download, offline reuse of
//! the cache, resumed download, corrupted and missing files, and the same audio as the bundle
//! folder.
#![cfg(feature = "hub")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use audiox::{AudioX, DownloadFailure, Error, Hub, HubConfig, Pretrained, Request};
use audiox_core::fixtures::FixtureSet;
use common::hub_server::{HubServer, MODEL_REPO, T5_REPO, bundle_repos};

fn bundle() -> PathBuf {
    FixtureSet::open_default().unwrap().bundle_dir()
}

fn server() -> HubServer {
    HubServer::start(bundle_repos(&bundle()), Duration::from_secs(300))
}

/// Explicit settings (tests never read or change the process environment).
fn config(server: &HubServer, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: server.endpoint(),
        ..HubConfig::new(cache)
    }
}

fn same_bytes(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        "{} vs {}",
        a.display(),
        b.display()
    );
}

#[test]
fn first_download_fills_the_standard_cache_then_works_offline() {
    let server = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = config(&server, cache.path());
    let paths = Pretrained::new(MODEL_REPO)
        .hub_config(hub.clone())
        .download()
        .unwrap();
    let b = bundle();
    same_bytes(paths.config.as_ref().unwrap(), &b.join("config.json"));
    same_bytes(
        paths.student.as_ref().unwrap(),
        &b.join("audiox_turbo/audiox_turbo.ckpt"),
    );
    same_bytes(
        paths.vae.as_ref().unwrap(),
        &b.join("pretransform/vae.ckpt"),
    );
    same_bytes(
        paths.synchformer.as_ref().unwrap(),
        &b.join("synchformer/synchformer_state_dict.pth"),
    );
    assert!(paths.teacher.is_none());
    let t5 = paths.t5_dir.as_ref().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        same_bytes(&t5.join(f), &b.join("t5-base").join(f));
    }
    // Only what the model reads: not the tokenizer's other files.
    assert!(!t5.join("spiece.model").exists());
    let clip = paths.clip_dir.as_ref().unwrap();
    for f in ["config.json", "model.safetensors"] {
        same_bytes(&clip.join(f), &b.join("clip-vit-base-patch32").join(f));
    }

    // The layout of huggingface_hub: refs/main -> commit, snapshot symlinks into blobs/ named
    // by the sha256 of LFS files.
    let repo_dir = cache.path().join("models--HKUSTAudio--AudioX-Turbo");
    let commit = server.commit(MODEL_REPO);
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        commit
    );
    let pointer = repo_dir.join(format!("snapshots/{commit}/audiox_turbo/audiox_turbo.ckpt"));
    assert_eq!(paths.student.as_deref(), Some(pointer.as_path()));
    assert!(pointer.symlink_metadata().unwrap().file_type().is_symlink());
    let blob = repo_dir
        .join("blobs")
        .join(server.sha256(MODEL_REPO, "audiox_turbo/audiox_turbo.ckpt"));
    assert_eq!(
        std::fs::canonicalize(&pointer).unwrap(),
        std::fs::canonicalize(&blob).unwrap()
    );
    assert!(
        cache
            .path()
            .join("models--google-t5--t5-base/refs/main")
            .is_file()
    );

    // A second online run reuses the cache: metadata requests only, no file bytes.
    let before = server.requests().len();
    let again = Pretrained::new(MODEL_REPO)
        .hub_config(hub.clone())
        .download()
        .unwrap();
    assert_eq!(again, paths);
    let gets: Vec<_> = server.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("GET") && !r.contains("/api/"))
        .cloned()
        .collect();
    assert!(gets.is_empty(), "cached files fetched again: {gets:?}");

    // Server gone: offline mode finds everything in the cache.
    server.stop();
    let offline = Pretrained::new(MODEL_REPO)
        .hub_config(HubConfig {
            offline: true,
            ..hub.clone()
        })
        .download()
        .unwrap();
    assert_eq!(offline, paths);
    // Online with no server is a network error, not a hang or a panic.
    let err = Pretrained::new(MODEL_REPO)
        .hub_config(hub)
        .download()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Download {
                reason: DownloadFailure::Network(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_interrupted_download_is_resumed() {
    let server = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(config(&server, cache.path()));
    let file = "audiox_turbo/audiox_turbo.ckpt";
    let size = std::fs::metadata(bundle().join(file)).unwrap().len() as usize;
    let cut = size / 3;
    server.cut_next_download(MODEL_REPO, file, cut);
    let err = hub.download(MODEL_REPO, "main", file).unwrap_err();
    match &err {
        Error::Download {
            file: f,
            reason: DownloadFailure::Network(_),
            ..
        } => assert_eq!(f, file),
        other => panic!("expected a network error, got {other}"),
    }
    let sha = server.sha256(MODEL_REPO, file);
    let part = cache
        .path()
        .join("models--HKUSTAudio--AudioX-Turbo/blobs")
        .join(format!("{sha}.incomplete"));
    assert_eq!(std::fs::metadata(&part).unwrap().len() as usize, cut);
    assert!(
        hub.cached(MODEL_REPO, "main", file).is_none(),
        "not complete"
    );

    let path = hub.download(MODEL_REPO, "main", file).unwrap();
    same_bytes(&path, &bundle().join(file));
    assert!(!part.exists());
    let resumed = format!("bytes={cut}-");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /lfs/") && r.ends_with(&resumed)),
        "no ranged request from byte {cut}: {:?}",
        server.requests()
    );
}

#[test]
fn a_corrupted_file_is_refused_and_not_kept() {
    let server = server();
    let cache = tempfile::tempdir().unwrap();
    let file = "pretransform/vae.ckpt";
    server.corrupt(MODEL_REPO, file);
    let err = Pretrained::new(MODEL_REPO)
        .hub_config(config(&server, cache.path()))
        .download()
        .unwrap_err();
    let sha = server.sha256(MODEL_REPO, file);
    match &err {
        Error::Checksum {
            file: f, expected, ..
        } => {
            assert_eq!(f, file);
            assert_eq!(expected, &sha);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(err.to_string().contains(file), "{err}");
    let blobs = cache.path().join("models--HKUSTAudio--AudioX-Turbo/blobs");
    assert!(!blobs.join(&sha).exists());
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    let hub = Hub::new(HubConfig {
        offline: true,
        ..config(&server, cache.path())
    });
    assert!(hub.cached(MODEL_REPO, "main", file).is_none());
}

#[test]
fn missing_files_are_named() {
    let server = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = config(&server, cache.path());

    // A file the model needs is not in the repository.
    server.remove(T5_REPO, "tokenizer.json");
    let err = Pretrained::new(MODEL_REPO)
        .hub_config(hub.clone())
        .download()
        .unwrap_err();
    match &err {
        Error::Download {
            repo, file, reason, ..
        } => {
            assert_eq!(repo, T5_REPO);
            assert_eq!(file, "tokenizer.json");
            assert_eq!(reason, &DownloadFailure::NotFound);
        }
        other => panic!("expected a download error, got {other}"),
    }
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    // The teacher is only fetched when asked for, and the tiny bundle has none.
    let err = Pretrained::new(MODEL_REPO)
        .hub_config(hub.clone())
        .teacher(true)
        .download()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("pretrained_ckpt/pretrained_ckpt.ckpt"),
        "{err}"
    );

    // A file asked for by name, a revision and a repository that do not exist.
    let client = Hub::new(hub.clone());
    let err = client.download(MODEL_REPO, "main", "nope.bin").unwrap_err();
    assert!(
        matches!(&err, Error::Download { file, reason: DownloadFailure::NotFound, .. } if file == "nope.bin"),
        "{err}"
    );
    assert!(
        Pretrained::new(MODEL_REPO)
            .hub_config(hub.clone())
            .revision("v9")
            .download()
            .is_err()
    );
    assert!(
        Pretrained::new("someone/else")
            .hub_config(hub.clone())
            .download()
            .is_err()
    );

    // Offline with an empty cache: says so, names the file.
    let empty = tempfile::tempdir().unwrap();
    let offline = Hub::new(HubConfig {
        offline: true,
        ..config(&server, empty.path())
    });
    let err = offline
        .download(MODEL_REPO, "main", "pretransform/vae.ckpt")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Download { file, reason: DownloadFailure::NotCached, .. } if file == "pretransform/vae.ckpt"),
        "{err}"
    );
}

#[test]
fn the_hub_model_gives_the_same_audio_as_the_bundle_folder() {
    let server = server();
    let cache = tempfile::tempdir().unwrap();
    let from_hub = AudioX::pretrained(MODEL_REPO)
        .hub_config(config(&server, cache.path()))
        .build()
        .unwrap();
    let from_dir = AudioX::builder().checkpoint_dir(bundle()).build().unwrap();
    let request = || Request::text("rain").seed(7);
    let a = from_hub.generate(request()).unwrap();
    let b = from_dir.generate(request()).unwrap();
    assert_eq!(a.audio[0].channels(), b.audio[0].channels());
    assert!(from_hub.supports_video());
}
