//! What a Cortex-M firmware links: C-callable entry points over the link, built as a static
//! library (`cargo build -p ckd-mcu-link --target thumbv7em-none-eabihf --example firmware`,
//! run by CI). The firmware's UART driver calls `ckd_link_feed` for every received byte and
//! sends the `len` bytes `ckd_link_request` wrote.
//!
//! ckd-core links the `alloc` crate, so a firmware image must name a global allocator even
//! though the link never allocates (tests/no_alloc.rs checks that): on the device this example
//! installs one that refuses every allocation.
#![cfg_attr(target_os = "none", no_std)]

use core::cell::RefCell;

use ckd_mcu_link::{Link, VisitSummary, TX_CAPACITY};

#[cfg(target_os = "none")]
mod device {
    use core::alloc::{GlobalAlloc, Layout};

    /// Refuses every allocation (an allocation would be a bug: the link does not allocate).
    struct NoAlloc;

    unsafe impl GlobalAlloc for NoAlloc {
        unsafe fn alloc(&self, _: Layout) -> *mut u8 {
            core::ptr::null_mut()
        }
        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    }

    #[global_allocator]
    static ALLOC: NoAlloc = NoAlloc;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// Single-core firmware state: the link, the visit being filled and the transmit buffer.
struct State {
    link: Link,
    visit: VisitSummary,
    tx: [u8; TX_CAPACITY],
}

/// Interrupts are the only other context on the device; `critical_section` would guard this on
/// a real board. Here a `RefCell` in a `static` behind a `Sync` wrapper keeps the example free
/// of extra dependencies.
struct Global(RefCell<Option<State>>);
// SAFETY: the firmware calls these functions from one context only (documented contract).
unsafe impl Sync for Global {}

static STATE: Global = Global(RefCell::new(None));

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut s = STATE.0.borrow_mut();
    let st = s.get_or_insert_with(|| State { link: Link::new(), visit: VisitSummary::default(), tx: [0; TX_CAPACITY] });
    f(st)
}

/// # Safety
/// `ptr` is null or points to `len` readable bytes.
unsafe fn str_from<'a>(ptr: *const u8, len: usize) -> Option<&'a str> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes `len` readable bytes at `ptr`.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    core::str::from_utf8(bytes).ok()
}

/// Appends a diagnosis code to the visit being built; 0 on success, -1 when invalid or full.
///
/// # Safety
/// `code` is null or points to `len` readable bytes (UTF-8).
#[no_mangle]
pub unsafe extern "C" fn ckd_link_add_diagnosis(code: *const u8, len: usize) -> i32 {
    match unsafe { str_from(code, len) } {
        Some(c) => with(|s| s.visit.push_diagnosis(c, "").map_or(-1, |_| 0)),
        None => -1,
    }
}

/// Appends a drug name; 0 on success, -1 when invalid or full.
///
/// # Safety
/// `name` is null or points to `len` readable bytes (UTF-8).
#[no_mangle]
pub unsafe extern "C" fn ckd_link_add_medication(name: *const u8, len: usize) -> i32 {
    match unsafe { str_from(name, len) } {
        Some(n) => with(|s| s.visit.push_medication(n).map_or(-1, |_| 0)),
        None => -1,
    }
}

/// Encodes the visit built so far as a request and clears it; returns the frame (pointer to the
/// transmit buffer) and its length in `len`, or null when a request is in flight.
///
/// # Safety
/// `len` is null or points to a writable `usize`.
#[no_mangle]
pub unsafe extern "C" fn ckd_link_request(len: *mut usize) -> *const u8 {
    with(|s| {
        let visit = core::mem::take(&mut s.visit);
        match s.link.request(&visit, &mut s.tx) {
            Ok((_, n)) => {
                if !len.is_null() {
                    // SAFETY: the caller passes a writable `usize`.
                    unsafe { *len = n };
                }
                s.tx.as_ptr()
            }
            Err(_) => core::ptr::null(),
        }
    })
}

/// Feeds one received byte. Returns 0 while no frame is complete, 1 when the answer arrived
/// (the most probable label is then in `top`), -1 when a frame was bad or an error answer came.
///
/// # Safety
/// `top` is null or points to a writable byte.
#[no_mangle]
pub unsafe extern "C" fn ckd_link_feed(byte: u8, top: *mut u8) -> i32 {
    with(|s| match s.link.feed(byte) {
        None => 0,
        Some(Ok(answer)) => {
            if let (Some(&l), false) = (answer.top_k.first(), top.is_null()) {
                // SAFETY: the caller passes a writable byte.
                unsafe { *top = l };
            }
            1
        }
        Some(Err(_)) => -1,
    })
}
