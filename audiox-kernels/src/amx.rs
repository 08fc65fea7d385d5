//! Intel AMX (Advanced Matrix Extensions) bf16 tiles: the fastest bf16 product on CPUs that
//! have them (Sapphire Rapids and later Xeons).
//!
//! One `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one into a 16 x 16 f32 tile
//! (8,192 multiply-adds in one instruction; by Intel's figures about 16 times the multiply rate
//! of AVX-512 FMA, not measured here).
//! The products here keep a 32 x 32 block of output in the four accumulator tiles `tmm0-3`,
//! and per step of 32 input channels load two tiles of the left operand (`tmm4-5`, 16 rows
//! each) and two of the right one (`tmm6-7`, 16 columns each), stored as pairs of channels
//! (the layout `vdpbf16ps` reads too: one 32-bit word holds channels `2p` and `2p + 1`).
//!
//! The instructions are written with `asm!` (the compiler does not use the tile registers, so
//! the accumulators stay put between the calls of one block). Rust's AMX intrinsics and target
//! features are not stable, hence no `target_feature` here: [`available`] checks the CPU
//! (CPUID), that the OS saves the tile state (XCR0) and asks Linux for permission to use it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), once per process.

use std::arch::asm;
use std::sync::OnceLock;

/// The tile configuration every block uses: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        // Bytes per row (u16, little endian) at 16 + 2t; rows at 48 + t.
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// 32-bit words per tile row (64 bytes): input-channel pairs (bf16) or groups of four (int8)
/// per tile step.
pub(crate) const PAIRS: usize = 16;
/// Rows and columns of the output block the accumulators hold.
pub(crate) const BLOCK: usize = 32;

/// Whether this process can run AMX bf16 tiles (CPU, OS state, Linux permission); checked once.
pub(crate) fn available() -> bool {
    tiles_permitted() && leaf7_edx() & (1 << 22) != 0
}

/// Whether this process can run AMX int8 tiles (`tdpbusd`; CPU, OS state, Linux permission).
pub(crate) fn available_int8() -> bool {
    tiles_permitted() && leaf7_edx() & (1 << 25) != 0
}

/// CPUID leaf 7 (sub-leaf 0) EDX, or 0 where the CPU has no leaf 7.
fn leaf7_edx() -> u32 {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    if __cpuid(0).eax < 7 {
        return 0;
    }
    __cpuid_count(7, 0).edx
}

/// Whether the CPU has AMX tiles (AMX-TILE), the OS saves their state and Linux lets this
/// process use them; checked once.
fn tiles_permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(detect)
}

#[cfg(target_os = "linux")]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid, _xgetbv};
    // CPUID.1:ECX.OSXSAVE (bit 27): XGETBV is usable; CPUID.7.0:EDX.AMX-TILE (bit 24).
    if __cpuid(1).ecx & (1 << 27) == 0 || leaf7_edx() & (1 << 24) == 0 {
        return false;
    }
    // SAFETY: OSXSAVE is set (checked above), so XGETBV(0) is defined.
    let xcr0 = unsafe { _xgetbv(0) };
    // XTILECFG (bit 17) and XTILEDATA (bit 18) enabled by the OS.
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn detect() -> bool {
    false
}

/// `steps` tile steps of the product instruction `$op` into the four accumulators: per step the
/// left operand's two 16-row tiles (`tmm4-5`, from `a` and `a + 16 lda`, 64 bytes further each
/// step) and the right operand's two 16-column tiles (`tmm6-7`, from `b` and `b + 64`, 16 rows
/// of `ldb` bytes further each step). Unsafe: the caller guarantees bounds and configuration.
macro_rules! tile_steps {
    ($op:literal, $a:expr, $lda:expr, $b:expr, $ldb:expr, $steps:expr) => {
        for s in 0..$steps {
            let a0 = $a.add(s * 64);
            let b0 = $b.add(s * PAIRS * $ldb);
            asm!(
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm5, [{a1} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {ldb}*1]",
                "tileloadd tmm7, [{b1} + {ldb}*1]",
                concat!($op, " tmm0, tmm4, tmm6"),
                concat!($op, " tmm1, tmm4, tmm7"),
                concat!($op, " tmm2, tmm5, tmm6"),
                concat!($op, " tmm3, tmm5, tmm7"),
                a0 = in(reg) a0,
                a1 = in(reg) a0.add(16 * $lda),
                b0 = in(reg) b0,
                b1 = in(reg) b0.add(64),
                lda = in(reg) $lda,
                ldb = in(reg) $ldb,
                options(nostack, readonly),
            );
        }
    };
}

/// One instruction per accumulator tile (`tmm0-3`) on the 32 x 32 block of 4-byte elements at
/// `$c`: tile `t` at rows `16 (t / 2)`, columns `16 (t % 2)`, rows `BLOCK * 4` bytes apart.
/// `load` reads the block into the tiles, `store` writes the tiles to it. Unsafe: the caller
/// guarantees the block's bounds and the configuration.
macro_rules! block_tiles {
    (load, $c:expr) => {
        block_tiles!(@run $c, [nostack, readonly],
            "tileloadd tmm0, [{c00} + {ld}*1]",
            "tileloadd tmm1, [{c01} + {ld}*1]",
            "tileloadd tmm2, [{c10} + {ld}*1]",
            "tileloadd tmm3, [{c11} + {ld}*1]")
    };
    (store, $c:expr) => {
        block_tiles!(@run $c, [nostack],
            "tilestored [{c00} + {ld}*1], tmm0",
            "tilestored [{c01} + {ld}*1], tmm1",
            "tilestored [{c10} + {ld}*1], tmm2",
            "tilestored [{c11} + {ld}*1], tmm3")
    };
    (@run $c:expr, [$($opt:ident),+], $($line:literal),+) => {{
        let c = $c;
        asm!(
            $($line),+,
            c00 = in(reg) c,
            c01 = in(reg) c.add(16),
            c10 = in(reg) c.add(16 * BLOCK),
            c11 = in(reg) c.add(16 * BLOCK + 16),
            ld = in(reg) BLOCK * 4,
            options($($opt),+),
        )
    }};
}

/// The tile registers of this thread, configured for 32 x 32 blocks; released when dropped.
/// Per block: [`Tiles::zero`], [`Tiles::accumulate`] as often as needed, [`Tiles::store`].
pub(crate) struct Tiles(());

impl Tiles {
    /// Loads the tile configuration on this thread.
    ///
    /// # Safety
    /// [`available`] must be true, and nothing else on this thread may use the tiles while the
    /// value lives (the kernels here call no other code between the tile instructions).
    #[inline]
    pub(crate) unsafe fn new() -> Self {
        // SAFETY: AMX is available and permitted (caller); the configuration is palette 1.
        unsafe {
            asm!(
                "ldtilecfg [{cfg}]",
                cfg = in(reg) CONFIG.0.as_ptr(),
                options(nostack, readonly),
            );
        }
        Tiles(())
    }

    /// Zeroes the four accumulators.
    #[inline]
    pub(crate) fn zero(&mut self) {
        // SAFETY: the tiles are configured (`new`).
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem),
            );
        }
    }

    /// Accumulates `steps` tile steps into the 32 x 32 block: rows 0-15 of the left operand
    /// from `a`, rows 16-31 from `a + 16 * lda`, each row `steps * 64` bytes (pair words);
    /// columns 0-15 of the right operand from `b`, columns 16-31 from `b + 64`, each of its
    /// rows (one pair of input channels, 32 columns' words) `ldb` bytes apart, 16 rows per
    /// step.
    ///
    /// # Safety
    /// Every byte read must lie in the operands' buffers.
    #[inline]
    pub(crate) unsafe fn accumulate(
        &mut self,
        a: *const u8,
        lda: usize,
        b: *const u8,
        ldb: usize,
        steps: usize,
    ) {
        // SAFETY: the caller's bounds; tiles configured.
        unsafe { tile_steps!("tdpbf16ps", a, lda, b, ldb, steps) }
    }

    /// [`Tiles::accumulate`] with `tdpbusd`: the left operand's bytes unsigned, the right
    /// one's signed, four products summed per 32-bit lane into exact i32 sums (read them with
    /// [`Tiles::store_i32`]). Each tile row is 16 words of four bytes (64 input channels per
    /// step), the right operand's rows one group of four channels each.
    ///
    /// # Safety
    /// As [`Tiles::accumulate`]; the CPU must have AMX-INT8 ([`available_int8`]).
    #[inline]
    pub(crate) unsafe fn accumulate_u8i8(
        &mut self,
        a: *const u8,
        lda: usize,
        b: *const u8,
        ldb: usize,
        steps: usize,
    ) {
        // SAFETY: the caller's bounds; tiles configured; AMX-INT8 (caller).
        unsafe { tile_steps!("tdpbusd", a, lda, b, ldb, steps) }
    }

    /// [`Tiles::accumulate_u8i8`] with `tdpbssd`: both operands' bytes signed (a weight held
    /// transposed as the left operand, activations quantised to signed bytes as the right
    /// one), exact i32 sums.
    ///
    /// # Safety
    /// As [`Tiles::accumulate_u8i8`].
    #[inline]
    pub(crate) unsafe fn accumulate_i8i8(
        &mut self,
        a: *const u8,
        lda: usize,
        b: *const u8,
        ldb: usize,
        steps: usize,
    ) {
        // SAFETY: the caller's bounds; tiles configured; AMX-INT8 (caller).
        unsafe { tile_steps!("tdpbssd", a, lda, b, ldb, steps) }
    }

    /// Writes the 32 x 32 i32 block of [`Tiles::accumulate_u8i8`] or
    /// [`Tiles::accumulate_i8i8`] to `out`.
    #[inline]
    pub(crate) fn store_i32(&mut self, out: &mut [i32; BLOCK * BLOCK]) {
        // SAFETY: as `store`, with 4-byte i32 elements.
        unsafe { block_tiles!(store, out.as_mut_ptr()) }
    }

    /// Loads the four accumulators from a 32 x 32 f32 block written by [`Tiles::store`], to go
    /// on accumulating into it (a product whose reduction is split into chunks).
    #[inline]
    pub(crate) fn load(&mut self, block: &[f32; BLOCK * BLOCK]) {
        // SAFETY: four 16 x 16 f32 tiles at rows 0/16 and columns 0/16 of the 32 x 32 buffer;
        // the tiles are configured.
        unsafe { block_tiles!(load, block.as_ptr()) }
    }

    /// Writes the 32 x 32 f32 block to `out` (row-major, 32 floats per row).
    #[inline]
    pub(crate) fn store(&mut self, out: &mut [f32; BLOCK * BLOCK]) {
        // SAFETY: four 16 x 16 f32 tiles at rows 0/16 and columns 0/16 of the 32 x 32 buffer;
        // the tiles are configured.
        unsafe { block_tiles!(store, out.as_mut_ptr()) }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `new`; releasing returns them to init state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
