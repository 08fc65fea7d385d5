//! audiox-encoders
