//! One product with an int8 weight reads the weight where burn's flex backend holds it: the
//! bytes it allocates (counted by a global allocator) stay far below the weight's own size, so
//! a per-product copy of the i8 values out of the tensor would fail this test.
//!
//! A single test in its own binary: the counter sees every thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use audiox_core::precision::{WeightPrecision, convert_module, linear};
use audiox_kernels::int8::Int8Kernel;
use burn::nn::LinearConfig;
use burn::tensor::{DType, Device, Tensor, TensorData};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            BYTES.fetch_add(new_size.saturating_sub(layout.size()), Ordering::Relaxed);
        }
        // SAFETY: `ptr` was allocated here with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated while `f` runs (frees not subtracted).
fn allocated<R>(f: impl FnOnce() -> R) -> (usize, R) {
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (BYTES.load(Ordering::SeqCst), r)
}

#[test]
fn one_int8_product_allocates_far_less_than_the_weight() {
    // One worker thread: the kernel's per-thread scratch (one packed 32-column panel each) is
    // then a fixed, small amount instead of growing with the machine's core count.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let device = Device::flex();
        let (k, n, tokens) = (1024, 2048, 4);
        let layer = convert_module(LinearConfig::new(k, n).init(&device), WeightPrecision::Int8);
        let weight = layer.weight.val();
        assert!(matches!(weight.dtype(), DType::QFloat(_)));
        // One byte per stored value.
        let weight_bytes = weight.shape().num_elements();
        let x = Tensor::<3>::from_data(
            TensorData::new(
                (0..tokens * k)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                    .collect(),
                [1, tokens, k],
            ),
            &device,
        );

        // The counter sees a copy of the values: reading the weight out does allocate it all.
        let (copy, data) = allocated(|| weight.clone().into_data());
        drop(data);
        assert!(copy >= weight_bytes, "{copy} < {weight_bytes}");

        // Warm up (first-use set-up, the pool's thread), then one product counted.
        drop(linear(&layer, x.clone()));
        let (bytes, out) = allocated(|| linear(&layer, x.clone()));
        assert_eq!(out.dims(), [1, tokens, n]);
        eprintln!(
            "one int8 product: {bytes} bytes allocated for a weight of {weight_bytes} bytes \
             (kernel: {})",
            Int8Kernel::current().name()
        );
        // Blocks of 128 rows: every integer kernel takes this weight wherever the CPU has it.
        if Int8Kernel::current().quantizes_activations() {
            // Scratch: activations quantised, one packed panel, the output, the bias values
            // and burn's clone of the block scales (~3 % of the weight here).
            assert!(
                bytes < weight_bytes / 4,
                "{bytes} bytes allocated: the weight ({weight_bytes} bytes) was copied"
            );
        } else {
            // The portable path widens the weight to f32 for the product (4 bytes a value);
            // a copy of the values on top would add at least the weight's size again.
            assert!(
                bytes < 4 * weight_bytes + weight_bytes / 4,
                "{bytes} bytes allocated: the weight ({weight_bytes} bytes) was copied"
            );
        }
    });
}
