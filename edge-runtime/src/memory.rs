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
//! On other targets (musl, macOS, bare metal) both are no-ops that return `false`.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_harmless() {
        // Allocate and free a large block, then both calls: the process goes on allocating.
        drop(vec![1u8; 4 << 20]);
        let applied = use_mmap_for_large_allocations();
        let _ = trim();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        assert_eq!(vec![2u8; 1 << 20].len(), 1 << 20);
    }
}
