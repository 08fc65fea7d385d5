//! Encoders and conditioners of AudioX-Turbo: T5, CLIP vision, Synchformer, and the video, text and audio-prompt conditioners.
