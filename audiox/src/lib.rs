//! audiox
