//! Rate of the bf16- and int8-weight products against the f32 GEMM on the DiT's shapes.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p audiox-kernels --example reduced_gemm
//! ```
//!
//! For each shape: the f32 product (`gemm` crate, what burn's CPU backend runs), the bf16
//! weight widened per product (the portable path), the AVX2 kernel (the weight widened block
//! by block into an f32 register tile) and the AVX512-BF16 and AMX kernels (where the
//! CPU has them; AMX also on the weight held transposed, as the loader holds it for AMX), the
//! int8 weight (scale blocks of 192 or 128 rows, as the DiT's) with per-token
//! activation quantisation on AVX512-VNNI, on AVX-VNNI and AVX2 (the kernels for CPUs without
//! AVX512-VNNI), on AMX
//! (also on the weight held transposed) and dequantised to f32 (the portable path); best
//! of five after a warm-up, GFLOP/s (int8: multiply-adds x 2 per second, as for the floats).
//! The first line names the kernels the library chooses on this CPU. A second table times the
//! widened and AVX2 bf16 paths (row-major) and the native bf16 and int8 kernels on both
//! layouts (row-major and held transposed), the AVX-VNNI and AVX2 int8 kernels (both layouts)
//! and the f32 product on the student's shapes with the weight read from memory (each
//! repetition on another copy), as in a DiT step.

use audiox_kernels::bf16::{
    Bf16Kernel, matmul_transposed_with, matmul_widened, matmul_with, prefers_transposed,
};
use audiox_kernels::int8::{
    Int8Kernel, QuantizedWeight, TransposedView, matmul_transposed_with as int8_transposed,
    matmul_view_with,
};
use half::bf16;

mod common;
use common::{best, values};

fn f32_gemm(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    let threads = rayon::current_num_threads();
    // SAFETY: row-major [m, k] x [k, n] -> [m, n] within the buffers.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

fn main() {
    println!(
        "threads {}, kernels chosen: bf16 {}, int8 {}",
        rayon::current_num_threads(),
        Bf16Kernel::current().name(),
        Int8Kernel::current().name()
    );
    println!(
        "| shape [m,k]x[k,n] | f32 GFLOP/s | bf16 widened | bf16 AVX2 | bf16 AVX512-BF16 | bf16 AMX | bf16 AMX, weight transposed | best bf16 / f32 | int8 VNNI | int8 AVX-VNNI | int8 AVX2 | int8 dequantized | int8 AMX | int8 AMX, weight transposed | best int8 / f32 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // 620 tokens (236 latent + 384 context); DiT width 1536, FFN hidden 4096, qkv 3x1536.
    for (m, k, n) in [
        (620, 1536, 4608),
        (620, 1536, 1536),
        (620, 1536, 8192),
        (620, 4096, 1536),
        (1024, 2048, 2048),
        // One DiT step of the student: 237 tokens; token convolutions read 3 taps.
        (237, 1536, 4608),
        (237, 4608, 1536),
        (237, 4608, 4096),
        (237, 12288, 1536),
    ] {
        let x = values(m * k, 1);
        let w = values(k * n, 2);
        let wh: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut out = vec![0f32; m * n];
        let flop = 2.0 * (m * k * n) as f64 / 1e9;
        let f = flop / best(|| f32_gemm(&x, &w, m, k, n, &mut out));
        let wd = flop / best(|| matmul_widened(&x, m, &wh, k, n, &mut out));
        let mut rate = |kernel: Bf16Kernel| {
            kernel
                .is_supported()
                .then(|| flop / best(|| matmul_with(kernel, &x, m, &wh, k, n, &mut out)))
        };
        let (avx, amx) = (rate(Bf16Kernel::Avx512Bf16), rate(Bf16Kernel::Amx));
        let avx2_bf16 = rate(Bf16Kernel::Avx2);
        // The weight held transposed ([n, k]), as the loader holds it for AMX.
        let mut wt = vec![bf16::ZERO; k * n];
        for r in 0..k {
            for c in 0..n {
                wt[c * k + r] = wh[r * n + c];
            }
        }
        let amx_t = (Bf16Kernel::Amx.is_supported() && prefers_transposed(k, n)).then(|| {
            flop / best(|| matmul_transposed_with(Bf16Kernel::Amx, &x, m, &wt, k, n, &mut out))
        });
        let top = [Some(wd), avx2_bf16, avx, amx, amx_t]
            .into_iter()
            .flatten()
            .fold(0.0, f64::max);
        // Blocks of rows as the DiT's int8 weights have them (192 rows at width 1536).
        let q = int8_weight(&w, k, n);
        let mut int8 = |kernel: Int8Kernel| {
            kernel
                .is_supported()
                .then(|| flop / best(|| matmul_view_with(kernel, &x, m, q.view(), &mut out)))
        };
        let (vnni, amx8) = (int8(Int8Kernel::Vnni), int8(Int8Kernel::Amx));
        let avx_vnni = int8(Int8Kernel::AvxVnni);
        let (avx2, deq) = (int8(Int8Kernel::Avx2), int8(Int8Kernel::Dequantized));
        let qt = audiox_kernels::int8::transpose(&q.q, k, n);
        let view = TransposedView::from_parts(k, n, q.block, &qt, &q.scale).expect("sizes");
        let amx8_t = (Int8Kernel::Amx.is_supported()
            && audiox_kernels::int8::prefers_transposed(k, n, q.block))
        .then(|| flop / best(|| int8_transposed(Int8Kernel::Amx, &x, m, view, &mut out)));
        let top8 = [vnni, avx_vnni, avx2, amx8, amx8_t]
            .into_iter()
            .flatten()
            .fold(0.0, f64::max);
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "| [{m},{k}]x[{k},{n}] | {f:.0} | {wd:.0} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {:.2} |",
            show(avx2_bf16),
            show(avx),
            show(amx),
            show(amx_t),
            top / f,
            show(vnni),
            show(avx_vnni),
            show(avx2),
            show(deq),
            show(amx8),
            show(amx8_t),
            top8 / f,
        );
    }
    // A DiT step reads 4.4 GB of bf16 weights once each: the rates above reuse one weight that
    // may stay in the last-level cache between repetitions. Here every repetition multiplies
    // another copy (at least 512 MiB of copies), so the weight comes from memory.
    println!();
    println!(
        "| shape, weight from memory | f32 | bf16 widened | bf16 AVX2 | bf16 AVX512-BF16 | bf16 AVX512-BF16, weight transposed | bf16 AMX | bf16 AMX, weight transposed | int8 VNNI | int8 VNNI, weight transposed | int8 AVX-VNNI | int8 AVX-VNNI, weight transposed | int8 AVX2 | int8 AVX2, weight transposed | int8 AMX | int8 AMX, weight transposed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (m, k, n) in [
        (237, 1536, 4608),
        (237, 4608, 1536),
        (237, 4608, 4096),
        (237, 12288, 1536),
    ] {
        let x = values(m * k, 1);
        let w = values(k * n, 2);
        let wh: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut wt = vec![bf16::ZERO; k * n];
        for r in 0..k {
            for c in 0..n {
                wt[c * k + r] = wh[r * n + c];
            }
        }
        let copies = (512usize << 20).div_ceil(k * n * 2).max(2);
        let rows: Vec<Vec<bf16>> = (0..copies).map(|_| wh.clone()).collect();
        let cols: Vec<Vec<bf16>> = (0..copies).map(|_| wt.clone()).collect();
        let mut out = vec![0f32; m * n];
        let flop = 2.0 * (m * k * n) as f64 / 1e9;
        // The f32 product on copies of the f32 weight (the same 512 MiB at least).
        let f32_copies = (512usize << 20).div_ceil(k * n * 4).max(2);
        let f32_rows: Vec<Vec<f32>> = (0..f32_copies).map(|_| w.clone()).collect();
        let mut i = 0;
        let f = flop
            / best(|| {
                i += 1;
                f32_gemm(&x, &f32_rows[i % f32_copies], m, k, n, &mut out)
            });
        drop(f32_rows);
        let mut row_major = |kernel: Bf16Kernel| {
            kernel.is_supported().then(|| {
                flop / best(|| {
                    i += 1;
                    matmul_with(kernel, &x, m, &rows[i % copies], k, n, &mut out)
                })
            })
        };
        let (wide, avx2_bf16) = (row_major(Bf16Kernel::Widened), row_major(Bf16Kernel::Avx2));
        let mut from_memory = |kernel: Bf16Kernel| {
            if !kernel.is_supported() {
                return (None, None);
            }
            let a = flop
                / best(|| {
                    i += 1;
                    matmul_with(kernel, &x, m, &rows[i % copies], k, n, &mut out)
                });
            let t = flop
                / best(|| {
                    i += 1;
                    matmul_transposed_with(kernel, &x, m, &cols[i % copies], k, n, &mut out)
                });
            (Some(a), Some(t))
        };
        let (avx, avx_t) = from_memory(Bf16Kernel::Avx512Bf16);
        let (amx, amx_t) = from_memory(Bf16Kernel::Amx);
        drop((rows, cols));
        // Half the bytes of bf16: twice the copies for the same 512 MiB.
        let q = int8_weight(&w, k, n);
        let qt = audiox_kernels::int8::transpose(&q.q, k, n);
        let copies = (512usize << 20).div_ceil(k * n).max(2);
        let rows: Vec<Vec<i8>> = (0..copies).map(|_| q.q.clone()).collect();
        let cols: Vec<Vec<i8>> = (0..copies).map(|_| qt.clone()).collect();
        let mut int8_from_memory = |kernel: Int8Kernel| {
            if !kernel.is_supported() {
                return (None, None);
            }
            let a = flop
                / best(|| {
                    i += 1;
                    let view = audiox_kernels::int8::QuantizedView::from_parts(
                        k,
                        n,
                        q.block,
                        &rows[i % copies],
                        &q.scale,
                    )
                    .expect("sizes");
                    matmul_view_with(kernel, &x, m, view, &mut out)
                });
            // Every integer kernel reads the transposed weight in place (the dequantised path
            // would time a copy back to row-major).
            let in_place = kernel != Int8Kernel::Dequantized;
            let t = in_place.then(|| {
                flop / best(|| {
                    i += 1;
                    let view =
                        TransposedView::from_parts(k, n, q.block, &cols[i % copies], &q.scale)
                            .expect("sizes");
                    int8_transposed(kernel, &x, m, view, &mut out)
                })
            });
            (Some(a), t)
        };
        let (v8, vt8) = int8_from_memory(Int8Kernel::Vnni);
        let (a8, t8) = int8_from_memory(Int8Kernel::Amx);
        let (avx_vnni8, avx_vnni8_t) = int8_from_memory(Int8Kernel::AvxVnni);
        let (avx2_8, avx2_8_t) = int8_from_memory(Int8Kernel::Avx2);
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "| [{m},{k}]x[{k},{n}] | {f:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            show(wide),
            show(avx2_bf16),
            show(avx),
            show(avx_t),
            show(amx),
            show(amx_t),
            show(v8),
            show(vt8),
            show(avx_vnni8),
            show(avx_vnni8_t),
            show(avx2_8),
            show(avx2_8_t),
            show(a8),
            show(t8)
        );
    }
}

/// The int8 weight as the DiT holds it: scale blocks of 192 rows where they divide `k`, else
/// 128.
fn int8_weight(w: &[f32], k: usize, n: usize) -> QuantizedWeight {
    audiox_kernels::int8::quantize_weight_blocked(
        w,
        k,
        n,
        if k.is_multiple_of(192) { 192 } else { 128 },
    )
}
