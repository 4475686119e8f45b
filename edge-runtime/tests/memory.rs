//! `ckd_edge::memory` in a process of its own (the allocator settings are process-wide, so
//! no other test may change them in between).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use ckd_edge::memory;

/// After the low threshold of loading, predictions reuse what they free: allocating and
/// freeing the same 1 MiB block again costs no new page faults once the thresholds are
/// raised (with the 128 KiB threshold each round maps it afresh and faults it in).
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn raised_thresholds_reuse_freed_blocks() {
    fn minor_faults() -> i64 {
        // SAFETY: getrusage writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        // A C long: i64 on 64-bit targets, i32 on 32-bit ARM.
        #[allow(clippy::useless_conversion)]
        i64::from(u.ru_minflt)
    }
    fn rounds() -> i64 {
        let before = minor_faults();
        for i in 0..20u8 {
            let v = std::hint::black_box(vec![i + 1; 1 << 20]);
            drop(v);
        }
        minor_faults() - before
    }
    assert!(memory::use_mmap_for_large_allocations());
    let mapped = rounds();
    assert!(memory::reuse_freed_memory());
    rounds(); // the first round after raising may grow the heap once
    let reused = rounds();
    assert!(mapped >= 20 * 200, "each round maps 256 pages afresh: {mapped} faults");
    assert!(reused < mapped / 10, "reused blocks fault no pages in: {reused} vs {mapped}");
}
