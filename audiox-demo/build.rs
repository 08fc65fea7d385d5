//! Lists the demo model's files for `include_bytes!`.
//!
//! The folder is `assets/` next to this file, or the one named by the environment variable
//! `AUDIOX_DEMO_ASSETS` (an absolute path; embeds another model of the same layout). Every file
//! under it except `README.md`, `manifest.json` (the converter's provenance record) and dot
//! files is embedded, keyed by its `/`-separated path relative to the
//! folder. Without a `config.json` there the list is empty and `audiox::AudioX::demo()` returns
//! `Error::DemoModelMissing`.
//!
//! Kept in step with `audiox-demo-teacher/build.rs` by hand (this one embeds everything but `pretrained_ckpt/`): each published crate
//! must build on its own with no dependencies, so the two cannot share a file or a helper crate
//! without a third crate to publish.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The teacher's folder in the official layout: `audiox-demo-teacher` embeds it.
const TEACHER_DIR: &str = "pretrained_ckpt";

fn main() {
    println!("cargo:rerun-if-env-changed=AUDIOX_DEMO_ASSETS");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = match std::env::var_os("AUDIOX_DEMO_ASSETS") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => manifest.join("assets"),
    };
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut files = Vec::new();
    if dir.join("config.json").is_file() {
        collect(&dir, &dir, &mut files);
    }
    files.sort();

    let mut out = String::from("&[\n");
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(
            out,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .expect("writing to a String");
    }
    out.push_str("]\n");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out_dir.join("files.rs"), out).expect("writing OUT_DIR/files.rs");
    let source = if files.is_empty() {
        String::new()
    } else {
        dir.display().to_string()
    };
    println!("cargo:rustc-env=AUDIOX_DEMO_SOURCE={source}");
}

/// Every file under `folder` (recursively, except `README.md`, `manifest.json`, dot files and
/// the root's teacher folder) as (path relative to `root` with `/` separators, absolute path).
fn collect(root: &Path, folder: &Path, files: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", folder.display());
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) => panic!("reading {}: {e}", folder.display()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "README.md" || name == "manifest.json" {
            continue;
        }
        if path.is_dir() {
            if folder == root && name == TEACHER_DIR {
                continue;
            }
            collect(root, &path, files);
        } else if path.is_file() {
            let rel: Vec<String> = path
                .strip_prefix(root)
                .expect("under the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let abs = path.canonicalize().unwrap_or(path);
            files.push((rel.join("/"), abs));
        }
    }
}
