//! An int8 weight is held in a buffer of its own size: converting a `Linear` to int8 frees its
//! f32 weight and keeps one byte per value plus the block scales, not more (burn's quantised
//! tensor data leaves the values in a larger allocation: the scales are appended to the
//! values' buffer and split off again; at full size that was 0.7 GB of an int8 model's
//! 4.35 GB peak).
//!
//! A single test in its own binary: the counter sees every thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use audiox_core::precision::{WeightPrecision, convert_module};
use burn::nn::LinearConfig;
use burn::tensor::{DType, Device};

struct Counting;

/// Bytes allocated and not yet freed, by the allocations' own sizes.
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` was allocated here with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn an_int8_weight_is_held_in_a_buffer_of_its_own_size() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let device = Device::flex();
        // Sizes the AMX layout takes (k a multiple of 64) and one it does not (k = 1000):
        // both layouts are held exactly.
        for (k, n) in [(1024usize, 2048usize), (1000, 2048)] {
            let layer = LinearConfig::new(k, n).init(&device);
            // Parameters are initialised lazily: make the f32 weight exist first.
            drop(layer.weight.val());
            let before = LIVE.load(Ordering::SeqCst);
            let layer = convert_module(layer, WeightPrecision::Int8);
            let after = LIVE.load(Ordering::SeqCst);
            let weight = layer.weight.val();
            assert!(matches!(weight.dtype(), DType::QFloat(_)));
            // The f32 weight (4 bytes a value) is gone; the values (1 byte) and the block
            // scales (one f32 per column and block of at most 255 rows) are held.
            let values = (k * n) as isize;
            let scales = (4 * n * k.div_ceil(125)) as isize;
            let delta = after - before;
            eprintln!("[{k}, {n}]: {delta} bytes more live after converting");
            assert!(
                delta <= values + scales + (64 << 10) - 4 * values,
                "[{k}, {n}]: {delta} bytes more live; an exact int8 copy frees {} bytes",
                3 * values - scales
            );
            drop(layer);
        }
    });
}
