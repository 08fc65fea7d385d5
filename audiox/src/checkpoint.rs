//! Where the weight files of a model are: the official download layout, or files given one by
//! one.

use std::path::{Path, PathBuf};

use audiox_core::{Error, Result};

/// Paths of every file a model is built from. [`CheckpointPaths::from_dir`] fills them from the
/// official layout; each can also be set on its own through the builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointPaths {
    /// The model config (official JSON schema): `config.json`.
    pub config: Option<PathBuf>,
    /// The student (AudioX-Turbo) weights: `audiox_turbo/audiox_turbo.ckpt` (or `.safetensors`).
    pub student: Option<PathBuf>,
    /// The VAE weights: `pretransform/vae.ckpt` (or `.safetensors`).
    pub vae: Option<PathBuf>,
    /// The Synchformer weights: `synchformer/synchformer_state_dict.pth` (video requests only).
    pub synchformer: Option<PathBuf>,
    /// The Hugging Face `t5-base` folder (`config.json`, `model.safetensors` or
    /// `pytorch_model.bin`, `tokenizer.json`).
    pub t5_dir: Option<PathBuf>,
    /// The Hugging Face `clip-vit-base-patch32` folder (`config.json`; its weights are used
    /// unless the student file carries its own copy, as the official one does).
    pub clip_dir: Option<PathBuf>,
    /// The teacher (AudioX base) weights: `pretrained_ckpt/pretrained_ckpt.ckpt` (or
    /// `.safetensors`); when set, the teacher replaces the student as the denoiser.
    pub teacher: Option<PathBuf>,
}

/// First existing file among `names` under `dir`.
fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

impl CheckpointPaths {
    /// The files of the official layout under `dir`. Files that are absent stay `None`; which
    /// are required is decided when the model is built ([`CheckpointPaths::require`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "checkpoint directory not found",
                ),
            ));
        }
        let config = first_existing(
            dir,
            &[
                "config.json",
                "audiox_turbo_infer_4step.json",
                "model_config.json",
            ],
        );
        Ok(CheckpointPaths {
            config,
            student: first_existing(
                dir,
                &[
                    "audiox_turbo/audiox_turbo.ckpt",
                    "audiox_turbo/audiox_turbo.safetensors",
                ],
            ),
            vae: first_existing(
                dir,
                &["pretransform/vae.ckpt", "pretransform/vae.safetensors"],
            ),
            synchformer: first_existing(
                dir,
                &[
                    "synchformer/synchformer_state_dict.pth",
                    "synchformer/synchformer_state_dict.safetensors",
                ],
            ),
            t5_dir: Some(dir.join("t5-base")).filter(|p| p.is_dir()),
            clip_dir: ["clip-vit-base-patch32", "openai/clip-vit-base-patch32"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_dir()),
            teacher: first_existing(
                dir,
                &[
                    "pretrained_ckpt/pretrained_ckpt.ckpt",
                    "pretrained_ckpt/pretrained_ckpt.safetensors",
                ],
            ),
        })
    }

    /// `self` with every path that `other` sets taken from `other`.
    pub fn overridden_by(mut self, other: &CheckpointPaths) -> Self {
        let take = |mine: &mut Option<PathBuf>, theirs: &Option<PathBuf>| {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        };
        take(&mut self.config, &other.config);
        take(&mut self.student, &other.student);
        take(&mut self.vae, &other.vae);
        take(&mut self.synchformer, &other.synchformer);
        take(&mut self.t5_dir, &other.t5_dir);
        take(&mut self.clip_dir, &other.clip_dir);
        take(&mut self.teacher, &other.teacher);
        self
    }

    /// The path of a required file, or an error that says what is missing and where it was
    /// looked for.
    pub fn require<'a>(
        &self,
        path: &'a Option<PathBuf>,
        what: &str,
        official: &str,
    ) -> Result<&'a Path> {
        let _ = self;
        match path {
            Some(p) if p.exists() => Ok(p),
            Some(p) => Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} not found")),
            )),
            None => Err(Error::InvalidRequest(format!(
                "no {what}: expected `{official}` in the checkpoint directory, or set it on the \
                 builder (see docs/weights.md)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_has_the_official_layout() {
        let dir = audiox_core::fixtures::FixtureSet::open_default()
            .unwrap()
            .bundle_dir();
        let p = CheckpointPaths::from_dir(&dir).unwrap();
        assert!(p.config.is_some());
        assert!(
            p.student
                .as_ref()
                .unwrap()
                .ends_with("audiox_turbo/audiox_turbo.ckpt")
        );
        assert!(p.vae.as_ref().unwrap().ends_with("pretransform/vae.ckpt"));
        assert!(p.synchformer.is_some());
        assert!(p.t5_dir.is_some() && p.clip_dir.is_some());
        assert!(p.teacher.is_none());
    }

    #[test]
    fn missing_directory_and_files_are_explained() {
        assert!(matches!(
            CheckpointPaths::from_dir("/nonexistent/ckpt"),
            Err(Error::Io { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        let p = CheckpointPaths::from_dir(empty.path()).unwrap();
        assert_eq!(p, CheckpointPaths::default());
        let err = p
            .require(
                &p.student,
                "student checkpoint",
                "audiox_turbo/audiox_turbo.ckpt",
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("audiox_turbo/audiox_turbo.ckpt"),
            "{err}"
        );
    }

    #[test]
    fn a_safetensors_teacher_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let teacher = dir.path().join("pretrained_ckpt");
        std::fs::create_dir_all(&teacher).unwrap();
        std::fs::write(teacher.join("pretrained_ckpt.safetensors"), b"x").unwrap();
        let p = CheckpointPaths::from_dir(dir.path()).unwrap();
        assert_eq!(p.teacher, Some(teacher.join("pretrained_ckpt.safetensors")));
        assert!(p.student.is_none());
    }

    #[test]
    fn explicit_paths_override_the_directory() {
        let base = CheckpointPaths {
            student: Some("a".into()),
            vae: Some("b".into()),
            ..Default::default()
        };
        let over = CheckpointPaths {
            vae: Some("c".into()),
            ..Default::default()
        };
        let merged = base.overridden_by(&over);
        assert_eq!(merged.student, Some("a".into()));
        assert_eq!(merged.vae, Some("c".into()));
    }
}
