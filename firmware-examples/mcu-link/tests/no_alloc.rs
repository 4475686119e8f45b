//! The link does not allocate: encoding a request and decoding an answer byte by byte run
//! with a global allocator that counts allocations made on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use ckd_core::wire::{self, Reply, Response, WirePrediction};
use ckd_mcu_link::{Link, VisitSummary, TX_CAPACITY};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn request_and_answer_do_not_allocate() {
    // Inputs are built before counting starts.
    let mut response = [0u8; wire::MAX_RESPONSE_FRAME + 1];
    let pred = WirePrediction {
        probs: [1000; 25],
        positive: 3,
        top_k: [1u8, 0].into_iter().collect(),
        truncated: false,
        tokens: 9,
    };
    let n = wire::encode_response(&Response { id: 1, reply: Reply::Prediction(pred) }, &mut response).unwrap();
    let mut garbage = [0x55u8; 64];
    garbage[63] = 0;
    let mut link = Link::new();
    let mut tx = [0u8; TX_CAPACITY];

    ARMED.with(|a| a.set(true));
    let mut visit = VisitSummary::default();
    let pushed = visit.push_diagnosis("428.0", "").is_ok() && visit.push_medication("Furosemide").is_ok();
    let sent = link.request(&visit, &mut tx).map(|(id, len)| (id, len > 0));
    let mut answers = 0;
    let mut errors = 0;
    for &b in garbage.iter().chain(&response[..n]) {
        match link.feed(b) {
            Some(Ok(_)) => answers += 1,
            Some(Err(_)) => errors += 1,
            None => {}
        }
    }
    ARMED.with(|a| a.set(false));

    assert!(pushed);
    assert_eq!(sent, Ok((1, true)));
    assert_eq!((answers, errors), (1, 1));
    // Check the counter works: an allocation while armed is counted.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    ARMED.with(|a| a.set(true));
    let v: Vec<u8> = Vec::with_capacity(8);
    ARMED.with(|a| a.set(false));
    drop(v);
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), before + 1, "the counting allocator counts");
    assert_eq!(before, 0, "the link allocated {before} times");
}
