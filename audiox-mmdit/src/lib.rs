//! audiox-mmdit
