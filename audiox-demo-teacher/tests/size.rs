//! The embedded files stay within crates.io's limit: every byte that `cargo package` puts in
//! the crate is counted (the packaged list comes from the manifest's `include`), and the
//! embedded teacher alone stays within [`audiox_demo_teacher::SIZE_BUDGET`].

use std::path::Path;

/// Bytes of every file under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                bytes_under(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

#[test]
fn the_embedded_teacher_fits_the_budget() {
    let total = audiox_demo_teacher::total_bytes();
    assert!(
        total <= audiox_demo_teacher::SIZE_BUDGET,
        "the embedded demo teacher takes {total} bytes, over the {} byte budget",
        audiox_demo_teacher::SIZE_BUDGET
    );
}

#[test]
fn the_packaged_files_fit_the_budget() {
    // Uncompressed sizes: an upper bound of the `.crate` (gzip only shrinks it).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let packaged = bytes_under(&root.join("assets"))
        + bytes_under(&root.join("src"))
        + ["Cargo.toml", "build.rs", "README.md"]
            .iter()
            .map(|f| {
                std::fs::metadata(root.join(f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum::<u64>();
    let limit = audiox_demo_teacher::SIZE_BUDGET as u64 + 1_000_000;
    assert!(
        packaged <= limit,
        "audiox-demo-teacher would package {packaged} bytes, over crates.io's {limit}"
    );
    // The embedded files are the assets (or another folder given at build time).
    if audiox_demo_teacher::source_dir() == root.join("assets").to_string_lossy() {
        assert!(audiox_demo_teacher::total_bytes() as u64 <= packaged);
    }
}
