//! Keeping the process's resident memory near what the model needs (glibc on Linux).
//!
//! Loading a bundle allocates and frees tensors of megabytes (each tensor is read, then copied
//! into tract; optimization packs the weights and drops the originals). glibc's allocator
//! serves an allocation above its mmap threshold with its own mapping and unmaps it when freed,
//! but after such a free it raises the threshold (up to 32 MiB), so later tensors come from
//! the heap, and a freed heap block stays resident. On a MiniLM-size int8 bundle that is about
//! 19 MB kept after loading (measured with `examples/load_memory.rs`; BENCHMARKS.md).
//!
//! - [`Engine::open`](crate::Engine::open) calls [`trim`] once the plan is built: the freed
//!   memory goes back to the system. It only releases free memory; nothing else changes.
//! - [`use_mmap_for_large_allocations`] fixes the threshold at 128 KiB for the whole process,
//!   so large blocks are unmapped when freed, during loading too (lower peak). It changes the
//!   allocator of the whole program: the application decides (the `ckd-edge` CLI and the
//!   bedside monitor call it first thing; C programs call `ckd_use_mmap_for_large_allocations`).
//!
//! - [`reuse_freed_memory`], called once the engine is open, undoes that for the predictions:
//!   with the 128 KiB threshold every prediction maps its intermediate tensors afresh and
//!   faults their pages in (about 3,300 page faults and a third of the latency of a 128-token
//!   MiniLM-L6 prediction; BENCHMARKS.md). With the largest threshold and a trim threshold
//!   above it, a prediction's freed blocks stay in the heap and the next one reuses them: the
//!   resident memory stays at the largest prediction's working set, which the peak held anyway.
//!
//! On other targets (musl, macOS, bare metal) all three are no-ops that return `false`.
//!
//! The settings are process-wide, so they are tested in a process of their own
//! (`tests/memory.rs`), never beside other tests.

/// The fixed mmap threshold [`use_mmap_for_large_allocations`] sets: glibc's initial value.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Sets glibc's mmap threshold to [`MMAP_THRESHOLD`] (which also turns off its dynamic
/// raising): allocations of 128 KiB and more get their own mapping and go back to the system
/// when freed. Call it early, before other threads allocate. Returns whether it was applied.
pub fn use_mmap_for_large_allocations() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD with a value
        // below glibc's maximum (32 MiB on 64-bit, 512 KiB on 32-bit) is valid.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// glibc's largest mmap threshold on 64-bit targets, `4 * 1024 * 1024 * sizeof(long)` (32 MiB).
/// 32-bit glibc refuses it; [`reuse_freed_memory`] then sets its largest there, 512 KiB.
pub const REUSE_MMAP_THRESHOLD: usize = 32 << 20;

/// The largest mmap threshold 32-bit glibc accepts.
pub const REUSE_MMAP_THRESHOLD_32: usize = 512 << 10;

/// Trim threshold [`reuse_freed_memory`] sets: free memory at the top of the heap up to this
/// size stays mapped for the next prediction.
pub const REUSE_TRIM_THRESHOLD: usize = 64 << 20;

/// For the predictions after loading: sets glibc's mmap threshold to [`REUSE_MMAP_THRESHOLD`]
/// (or [`REUSE_MMAP_THRESHOLD_32`] where glibc refuses that) and its trim threshold to [`REUSE_TRIM_THRESHOLD`], so that the blocks a prediction frees
/// are reused by the next one instead of being unmapped and faulted in again. Call it after
/// [`Engine::open`](crate::Engine::open) (and after [`use_mmap_for_large_allocations`], whose
/// lower peak it keeps for loading). Returns whether both settings were applied.
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; glibc refuses (returns 0 for) an
        // mmap threshold above its maximum and keeps the old one. All three fit a c_int.
        unsafe {
            let m = libc::mallopt(libc::M_MMAP_THRESHOLD, REUSE_MMAP_THRESHOLD as libc::c_int) == 1
                || libc::mallopt(libc::M_MMAP_THRESHOLD, REUSE_MMAP_THRESHOLD_32 as libc::c_int) == 1;
            let t = libc::mallopt(libc::M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD as libc::c_int) == 1;
            m && t
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns the allocator's free memory to the system (glibc's `malloc_trim(0)`). Returns
/// whether any was released.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
