//! Handing memory freed while loading back to the operating system.
//!
//! Loading converts each weight through f32 buffers of its own size (read, transposed,
//! quantised) that are freed as soon as the held tensor exists. On glibc, whose malloc raises
//! its mmap threshold after the first large buffer is freed (up to 32 MiB), most of those
//! buffers then come from the heap, between the long-lived weights, and the freed pages stay
//! resident: measured at full size with int8 weights, 4.98 GB peak resident for 3.41 GB of
//! weights, 3.64 GB with the threshold pinned (docs/performance.md, "int8 memory").
//! [`release_freed`] asks glibc to return every free page (`malloc_trim(0)`); the loader calls
//! it every [`RELEASE_EVERY_BYTES`] read and once when a model is built. Pinning the threshold
//! instead (`MALLOC_MMAP_THRESHOLD_`) would also do it, but it applies to the whole process
//! and makes every large activation of a request an mmap and page-fault round trip (the
//! sampling was 20-30 % slower in that measurement); this keeps inference as it was.
//! Elsewhere (other allocators, other systems) it does nothing.

/// Bytes of weights read between two calls of [`release_freed`] while loading.
pub const RELEASE_EVERY_BYTES: usize = 256 << 20;

/// Returns the heap's free pages to the operating system where the allocator supports it
/// (glibc on Linux: `malloc_trim(0)`); a no-op elsewhere. Returns whether memory was
/// released (glibc's answer; `false` where nothing can be done).
pub fn release_freed() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own free lists and madvises free pages; it
        // is thread safe (it takes each arena's lock).
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's resident set in bytes (`VmRSS` of `/proc/self/status`), where the system
/// reports it (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large buffers freed between small long-lived ones stay resident until released (on
    /// glibc); after `release_freed` most of them are gone.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_buffers_between_live_ones_are_returned() {
        const BIG: usize = 8 << 20;
        // Freeing one large mmapped buffer raises glibc's mmap threshold above BIG, so the
        // buffers below come from the heap, as during a load.
        drop(std::hint::black_box(vec![1u8; BIG]));
        let mut keep = Vec::new();
        let mut big = Vec::new();
        for i in 0..24 {
            big.push(std::hint::black_box(vec![i as u8 | 1; BIG]));
            keep.push(std::hint::black_box(vec![i as u8; 4096]));
        }
        drop(big);
        let before = resident_bytes().unwrap();
        release_freed();
        let after = resident_bytes().unwrap();
        assert!(
            before.saturating_sub(after) > 100 << 20,
            "resident {before} -> {after} bytes after freeing 192 MiB"
        );
        drop(keep);
    }

    #[test]
    fn resident_bytes_are_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().unwrap() > 0);
        }
    }
}
