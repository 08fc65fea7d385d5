//! Rate of the bf16- and int8-weight products against the f32 GEMM on the DiT's shapes.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p audiox-kernels --example reduced_gemm
//! ```
//!
//! For each shape: the f32 product (`gemm` crate, what burn's CPU backend runs), the bf16
//! weight widened per product (the portable path), the AVX512-BF16 and AMX kernels (where the
//! CPU has them; AMX also on the weight held transposed, as the loader holds it for AMX), the
//! int8 weight (scale blocks of 192 or 128 rows, as the DiT's) with per-token
//! activation quantisation on AVX512-VNNI and on AMX; best of five after a warm-up, GFLOP/s
//! (int8: multiply-adds x 2 per second, as for the floats). The first line names the kernels
//! the library chooses on this CPU. A second table times the two AMX bf16 layouts on the
//! student's shapes with the weight read from memory (each repetition on another copy), as in
//! a DiT step.

use std::time::Instant;

use audiox_kernels::bf16::{
    Bf16Kernel, matmul_transposed_with, matmul_widened, matmul_with, prefers_transposed,
};
use audiox_kernels::int8::{Int8Kernel, matmul_view_with};
use half::bf16;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

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
        "| shape [m,k]x[k,n] | f32 GFLOP/s | bf16 widened | bf16 AVX512-BF16 | bf16 AMX | bf16 AMX, weight transposed | best bf16 / f32 | int8 VNNI | int8 AMX | best int8 / f32 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
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
        let top = [Some(wd), avx, amx, amx_t]
            .into_iter()
            .flatten()
            .fold(0.0, f64::max);
        // Blocks of rows as the DiT's int8 weights have them (192 rows at width 1536).
        let q = audiox_kernels::int8::quantize_weight_blocked(
            &w,
            k,
            n,
            if k % 192 == 0 { 192 } else { 128 },
        );
        let mut int8 = |kernel: Int8Kernel| {
            kernel
                .is_supported()
                .then(|| flop / best(|| matmul_view_with(kernel, &x, m, q.view(), &mut out)))
        };
        let (vnni, amx8) = (int8(Int8Kernel::Vnni), int8(Int8Kernel::Amx));
        let top8 = [vnni, amx8].into_iter().flatten().fold(0.0, f64::max);
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "| [{m},{k}]x[{k},{n}] | {f:.0} | {wd:.0} | {} | {} | {} | {:.2} | {} | {} | {:.2} |",
            show(avx),
            show(amx),
            show(amx_t),
            top / f,
            show(vnni),
            show(amx8),
            top8 / f,
        );
    }
    // A DiT step reads 4.4 GB of bf16 weights once each: the rates above reuse one weight that
    // may stay in the last-level cache between repetitions. Here every repetition multiplies
    // another copy (at least 512 MiB of copies), so the weight comes from memory.
    println!();
    println!("| shape, weight from memory | bf16 AMX | bf16 AMX, weight transposed |");
    println!("|---|---|---|");
    for (m, k, n) in [
        (237, 1536, 4608),
        (237, 4608, 1536),
        (237, 4608, 4096),
        (237, 12288, 1536),
    ] {
        if !Bf16Kernel::Amx.is_supported() {
            println!("(no AMX on this CPU)");
            break;
        }
        let x = values(m * k, 1);
        let wh: Vec<bf16> = values(k * n, 2)
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
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
        let mut i = 0;
        let a = flop
            / best(|| {
                i += 1;
                matmul_with(Bf16Kernel::Amx, &x, m, &rows[i % copies], k, n, &mut out)
            });
        let t = flop
            / best(|| {
                i += 1;
                matmul_transposed_with(Bf16Kernel::Amx, &x, m, &cols[i % copies], k, n, &mut out)
            });
        println!("| [{m},{k}]x[{k},{n}] | {a:.0} | {t:.0} |");
    }
}
