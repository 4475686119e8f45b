//! What a Cortex-M firmware does with the link, run on the host: build a visit summary, send
//! its frame, feed the answer's bytes back one at a time (as a UART interrupt would) and read
//! the prediction. Here a canned board answer stands in for the UART.
//!
//! Run: `cargo run -p ckd-mcu-link --example uart_loop`

use ckd_core::wire::{self, Reply, Response, WirePrediction};
use ckd_core::{NUM_LABELS, PHENOTYPES};
use ckd_mcu_link::{Link, VisitSummary, TX_CAPACITY};

fn main() -> Result<(), String> {
    let mut visit = VisitSummary::default();
    visit.push_diagnosis("428.0", "").map_err(|e| e.to_string())?;
    visit.push_diagnosis("585.9", "").map_err(|e| e.to_string())?;
    visit.push_medication("Furosemide").map_err(|e| e.to_string())?;
    let mut link = Link::new();
    let mut tx = [0u8; TX_CAPACITY];
    let (id, n) = link.request(&visit, &mut tx).map_err(|e| e.to_string())?;
    println!("request {id}: {n} bytes on the wire");

    // The board's answer (the bedside-monitor computes it with the model).
    let mut probs = [0u16; NUM_LABELS];
    probs[4] = wire::quantize_prob(0.81);
    probs[8] = wire::quantize_prob(0.64);
    let top_k = heapless::Vec::from_slice(&[4, 8, 0, 1, 2]).map_err(|_| "top-k".to_string())?;
    let pred = WirePrediction { probs, positive: 1 << 4 | 1 << 8, top_k, truncated: false, tokens: 61 };
    let mut rx = [0u8; wire::MAX_RESPONSE_FRAME + 1];
    let m =
        wire::encode_response(&Response { id, reply: Reply::Prediction(pred) }, &mut rx).map_err(|e| e.to_string())?;

    for &byte in &rx[..m] {
        if let Some(answer) = link.feed(byte) {
            let a = answer.map_err(|e| e.to_string())?;
            for &l in &a.top_k {
                let p = &PHENOTYPES[l as usize];
                println!("{:>6.3} {} {}", a.probs[l as usize], if a.is_positive(l) { "+" } else { " " }, p.name);
            }
        }
    }
    Ok(())
}
