//! Loading a model from memory (the path the embedded demo model takes) and the demo model
//! itself.
//!
//! The in-memory set is the tiny fixture bundle converted to what the demo crate embeds (bf16
//! safetensors in the official layout, `examples/demo_assets.rs` does the same), made at test
//! time from the vendored bundle so there is no second copy of it to keep in sync. Its files are
//! read into memory and deleted before the model is built, so nothing can come from disk.

use audiox::convert::{Precision, convert};
use audiox::{AudioX, CheckpointPaths, DenoiserKind, Error, MemoryCheckpoint, Request};
use audiox_core::fixtures::FixtureSet;

fn rain(model: &AudioX) -> Vec<Vec<f32>> {
    model.generate(Request::text("rain").seed(7)).unwrap().audio[0]
        .channels()
        .to_vec()
}

/// The tiny bundle converted to bf16 safetensors in a temporary folder (kept alive by the
/// returned guard).
fn converted_bundle() -> tempfile::TempDir {
    let bundle = FixtureSet::open_default().unwrap().bundle_dir();
    let out = tempfile::tempdir().unwrap();
    convert(
        &CheckpointPaths::from_dir(&bundle).unwrap(),
        out.path(),
        Precision::Bf16,
    )
    .unwrap();
    out
}

const STUDENT: &str = "audiox_turbo/audiox_turbo.safetensors";
const TEACHER: &str = "pretrained_ckpt/pretrained_ckpt.safetensors";

#[test]
fn a_model_in_memory_generates_what_the_same_folder_generates() {
    let dir = converted_bundle();
    let from_disk = AudioX::builder()
        .checkpoint_dir(dir.path())
        .build()
        .unwrap();
    let files = MemoryCheckpoint::read_dir(dir.path()).unwrap();
    // Nothing of the folder is left: the model below is built from memory alone.
    dir.close().unwrap();

    let from_memory = AudioX::builder()
        .checkpoint_memory(files.clone())
        .build()
        .unwrap();
    assert_eq!(from_memory.kind(), DenoiserKind::Student);
    assert_eq!(from_memory.sample_rate(), from_disk.sample_rate());
    assert_eq!(from_memory.supports_video(), from_disk.supports_video());
    let student = from_memory.paths().student.clone().unwrap();
    assert!(student.starts_with(files.label()) && student.ends_with(STUDENT));
    // Every weight came from one of the in-memory files.
    let report = from_memory.load_report();
    assert!(!report.applied.is_empty());
    for a in &report.applied {
        assert!(a.file.starts_with(files.label()), "{}", a.file.display());
    }
    assert_eq!(
        from_memory.held_weight_bytes(),
        from_disk.held_weight_bytes()
    );

    let audio = rain(&from_memory);
    assert_eq!(
        audio,
        rain(&from_disk),
        "memory and disk load the same weights"
    );
    let samples: Vec<f32> = audio.concat();
    assert!(samples.iter().all(|x| x.is_finite()));
    assert!(
        samples.iter().any(|&x| x != 0.0),
        "the output is not silence"
    );
}

#[test]
fn the_teacher_of_a_model_in_memory_is_chosen_with_denoiser() {
    let dir = converted_bundle();
    // The tiny bundle has no teacher; its student has the teacher's architecture.
    let mut files = MemoryCheckpoint::read_dir(dir.path()).unwrap();
    let err = AudioX::builder()
        .checkpoint_memory(files.clone())
        .denoiser(DenoiserKind::Teacher)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains(TEACHER), "{err}");

    let student = files.get(STUDENT).unwrap().to_vec();
    files.insert(TEACHER, student);
    let teacher = AudioX::builder()
        .checkpoint_memory(files.clone())
        .denoiser(DenoiserKind::Teacher)
        .build()
        .unwrap();
    assert_eq!(teacher.kind(), DenoiserKind::Teacher);
    assert!(teacher.paths().teacher.as_ref().unwrap().ends_with(TEACHER));
    // The same file as a teacher on disk.
    let on_disk = AudioX::builder()
        .checkpoint_dir(dir.path())
        .teacher_checkpoint(dir.path().join(STUDENT))
        .build()
        .unwrap();
    assert_eq!(on_disk.kind(), DenoiserKind::Teacher);
    let request = || Request::text("rain").seed(7).steps(3);
    let a = teacher.generate(request()).unwrap().audio[0]
        .channels()
        .to_vec();
    let b = on_disk.generate(request()).unwrap().audio[0]
        .channels()
        .to_vec();
    assert_eq!(a, b);
    // On disk, `denoiser(Student)` ignores a teacher that is set.
    let student_on_disk = AudioX::builder()
        .checkpoint_dir(dir.path())
        .teacher_checkpoint(dir.path().join(STUDENT))
        .denoiser(DenoiserKind::Student)
        .build()
        .unwrap();
    assert_eq!(student_on_disk.kind(), DenoiserKind::Student);
    assert!(student_on_disk.paths().teacher.is_none());
    // Without `denoiser`, memory loads the student even when a teacher is there.
    let default = AudioX::builder().checkpoint_memory(files).build().unwrap();
    assert_eq!(default.kind(), DenoiserKind::Student);
}

#[test]
fn bad_files_in_memory_are_reported_by_name() {
    let dir = converted_bundle();
    let files = MemoryCheckpoint::read_dir(dir.path()).unwrap();

    // A torch pickle where safetensors is expected.
    let bundle = FixtureSet::open_default().unwrap().bundle_dir();
    let ckpt = std::fs::read(bundle.join("audiox_turbo/audiox_turbo.ckpt")).unwrap();
    let torch = files.clone().with_file(STUDENT, ckpt);
    let err = AudioX::builder()
        .checkpoint_memory(torch)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::WeightFile { .. }), "{err}");
    assert!(err.to_string().contains(STUDENT), "{err}");

    // A config that is not JSON.
    let broken = files
        .clone()
        .with_file("config.json", b"{ not json".to_vec());
    let err = AudioX::builder()
        .checkpoint_memory(broken)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");

    // A missing tokenizer.
    let mut without = MemoryCheckpoint::new("partial");
    for (path, _) in files
        .files()
        .filter(|(p, _)| *p != "t5-base/tokenizer.json")
    {
        without.insert(path, files.get(path).unwrap().to_vec());
    }
    let err = AudioX::builder()
        .checkpoint_memory(without)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("t5-base/tokenizer.json"), "{err}");

    // Memory and disk at once.
    let err = AudioX::builder()
        .checkpoint_memory(files)
        .checkpoint_dir(dir.path())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
}

/// The embedded demo model when this build has it; otherwise the typed error that says how to
/// produce it. Which branch runs depends on `audiox-demo/assets/` at build time (CI runs the
/// other one in a fresh project built with `AUDIOX_DEMO_ASSETS`, see `.ci/package`).
#[test]
fn the_demo_model_loads_or_its_absence_is_explained() {
    match AudioX::demo() {
        Ok(model) => {
            assert!(audiox::demo::is_available());
            assert_eq!(model.kind(), DenoiserKind::Student);
            let label = model.paths().student.clone().unwrap();
            assert!(label.starts_with(audiox::demo::LABEL));
            let out = model
                .generate(Request::text("three high beeps").seed(1))
                .unwrap();
            let samples: Vec<f32> = out.audio[0].channels().concat();
            assert!(samples.iter().all(|x| x.is_finite()));
            assert!(samples.iter().any(|&x| x != 0.0));
        }
        Err(Error::DemoModelMissing { reason }) => {
            assert!(!audiox::demo::is_available());
            assert!(
                reason.contains("AUDIOX_DEMO_ASSETS") || reason.contains("`demo` feature"),
                "{reason}"
            );
            let err = AudioX::builder()
                .demo()
                .denoiser(DenoiserKind::Teacher)
                .build()
                .unwrap_err();
            assert!(matches!(err, Error::DemoModelMissing { .. }), "{err}");
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// A folder holding both denoisers runs the student unless the teacher is asked for; a folder
/// holding only a teacher runs it.
#[test]
fn a_folder_with_both_denoisers_runs_the_student_by_default() {
    let dir = converted_bundle();
    std::fs::create_dir_all(dir.path().join("pretrained_ckpt")).unwrap();
    std::fs::copy(dir.path().join(STUDENT), dir.path().join(TEACHER)).unwrap();
    let both = AudioX::builder()
        .checkpoint_dir(dir.path())
        .build()
        .unwrap();
    assert_eq!(both.kind(), DenoiserKind::Student);
    let asked = AudioX::builder()
        .checkpoint_dir(dir.path())
        .denoiser(DenoiserKind::Teacher)
        .build()
        .unwrap();
    assert_eq!(asked.kind(), DenoiserKind::Teacher);
    let set = AudioX::builder()
        .checkpoint_dir(dir.path())
        .teacher_checkpoint(dir.path().join(TEACHER))
        .build()
        .unwrap();
    assert_eq!(set.kind(), DenoiserKind::Teacher);

    std::fs::remove_file(dir.path().join(STUDENT)).unwrap();
    let only_teacher = AudioX::builder()
        .checkpoint_dir(dir.path())
        .build()
        .unwrap();
    assert_eq!(only_teacher.kind(), DenoiserKind::Teacher);
    let err = AudioX::builder()
        .checkpoint_dir(dir.path())
        .denoiser(DenoiserKind::Student)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("student"), "{err}");
}
