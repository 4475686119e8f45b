//! ckd-mcu-link: the device side of the ckd wire protocol ([`ckd_core::wire`]) for a Cortex-M
//! peripheral (builds for `thumbv7em-none-eabihf`; no allocation, no `std`).
//!
//! A [`Link`] numbers requests, writes their frames into a caller-owned buffer (send it over
//! the UART as it is) and turns the bytes that come back into [`Answer`]s, one byte at a time,
//! as a UART interrupt delivers them. Answers are matched to the request in flight: a frame for
//! another id, a corrupt frame or an error reply is an [`LinkError`], never a panic.
//!
//! Memory: the link holds one receive buffer of [`RX_CAPACITY`] bytes (a response frame is at
//! most [`wire::MAX_RESPONSE_FRAME`] bytes); a request needs an output buffer of
//! [`TX_CAPACITY`] bytes and a [`VisitSummary`] of about 4.4 KiB.
#![no_std]
#![warn(missing_docs)]

pub use ckd_core::wire::{
    self, ErrorCode, Item, Reply, VisitSummary, WireConcept, WireError, WireEvidence, WirePrediction,
};
use ckd_core::wire::{Deframer, Request, UNKNOWN_ID};
use ckd_core::NUM_LABELS;

/// Receive buffer size: the largest response frame, with room to spare for future versions.
pub const RX_CAPACITY: usize = 2 * wire::MAX_RESPONSE_FRAME;
/// Output buffer size that holds every request frame (delimiter included).
pub const TX_CAPACITY: usize = wire::MAX_REQUEST_FRAME + 1;

/// What can go wrong on the device side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// A frame did not decode (COBS, CRC, version, kind, payload, oversize) or a request did not encode.
    Wire(WireError),
    /// An answer arrived for an id that is not in flight (stale, or `UNKNOWN_ID` when the
    /// board could not read the request's id: then `reply` says why).
    UnexpectedId {
        /// Id in the answer.
        id: u32,
        /// The reply it carried.
        reply: Reply,
    },
    /// The board answered the request in flight with an error.
    Remote {
        /// Request id.
        id: u32,
        /// The board's error code.
        code: ErrorCode,
        /// Detail (item for [`ErrorCode::InvalidItem`], see [`Reply::Error`]).
        detail: u16,
    },
    /// A request is already in flight.
    Busy {
        /// Its id.
        id: u32,
    },
}

impl From<WireError> for LinkError {
    fn from(e: WireError) -> Self {
        LinkError::Wire(e)
    }
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkError::Wire(e) => write!(f, "{e}"),
            LinkError::UnexpectedId { id, reply } => write!(f, "answer for id {id}, not in flight: {reply:?}"),
            LinkError::Remote { id, code, detail } => write!(f, "request {id}: board error {code:?} (detail {detail})"),
            LinkError::Busy { id } => write!(f, "request {id} is still in flight"),
        }
    }
}

/// A decoded prediction for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Request id.
    pub id: u32,
    /// Probabilities, label order, dequantized (within 7.7e-6 of the board's values).
    pub probs: [f32; NUM_LABELS],
    /// Bit `l` set when phenotype `l` is positive (the bundle's thresholds).
    pub positive: u32,
    /// Most probable phenotypes (label ids), most probable first.
    pub top_k: heapless::Vec<u8, { wire::TOP_K }>,
    /// Whether the board truncated the rendered text.
    pub truncated: bool,
    /// Tokens the board fed its model.
    pub tokens: u16,
    /// The explanation, when the request asked for one ([`Link::request_explained`]): the
    /// request items of largest effect on the most probable phenotype.
    pub evidence: Option<WireEvidence>,
}

impl Answer {
    /// Whether phenotype `label` is positive.
    pub fn is_positive(&self, label: u8) -> bool {
        label < 32 && self.positive & (1 << label) != 0
    }

    fn from_wire(id: u32, p: &WirePrediction, evidence: Option<&WireEvidence>) -> Self {
        let mut probs = [0f32; NUM_LABELS];
        for (o, q) in probs.iter_mut().zip(p.probs.iter()) {
            *o = wire::dequantize_prob(*q);
        }
        Answer {
            id,
            probs,
            positive: p.positive,
            top_k: p.top_k.clone(),
            truncated: p.truncated,
            tokens: p.tokens,
            evidence: evidence.cloned(),
        }
    }
}

/// The device end of one serial link.
pub struct Link {
    rx: Deframer<RX_CAPACITY>,
    next_id: u32,
    in_flight: Option<u32>,
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl Link {
    /// A link whose first request has id 1.
    pub const fn new() -> Self {
        Link { rx: Deframer::new(), next_id: 1, in_flight: None }
    }

    /// Id of the request in flight, if any.
    pub fn in_flight(&self) -> Option<u32> {
        self.in_flight
    }

    /// Encodes a request for `visit` into `out` ([`TX_CAPACITY`] bytes always suffice) and
    /// marks it in flight; returns its id and frame length. Ids skip [`UNKNOWN_ID`].
    pub fn request(&mut self, visit: &VisitSummary, out: &mut [u8]) -> Result<(u32, usize), LinkError> {
        self.send(visit, false, out)
    }

    /// As [`Link::request`], asking for the prediction and its explanation (a version-2 frame:
    /// a board of version 1 answers it with a version error).
    pub fn request_explained(&mut self, visit: &VisitSummary, out: &mut [u8]) -> Result<(u32, usize), LinkError> {
        self.send(visit, true, out)
    }

    fn send(&mut self, visit: &VisitSummary, explain: bool, out: &mut [u8]) -> Result<(u32, usize), LinkError> {
        if let Some(id) = self.in_flight {
            return Err(LinkError::Busy { id });
        }
        let id = self.next_id;
        let n = wire::encode_request(&Request { id, visit: visit.clone(), explain }, out)?;
        self.next_id = match id.wrapping_add(1) {
            UNKNOWN_ID => 1,
            next => next,
        };
        self.in_flight = Some(id);
        Ok((id, n))
    }

    /// Gives up on the request in flight (e.g. after a timeout): a late answer to it is then
    /// reported as [`LinkError::UnexpectedId`].
    pub fn cancel(&mut self) {
        self.in_flight = None;
    }

    /// Feeds one received byte; returns the answer (or what went wrong) when a frame ends.
    /// The request in flight is done when its answer or its [`LinkError::Remote`] arrives.
    pub fn feed(&mut self, byte: u8) -> Option<Result<Answer, LinkError>> {
        let frame = match self.rx.push(byte)? {
            Ok(f) => f,
            Err(e) => return Some(Err(e.into())),
        };
        let resp = match wire::decode_response(frame) {
            Ok(r) => r,
            Err(e) => return Some(Err(e.into())),
        };
        if Some(resp.id) != self.in_flight {
            return Some(Err(LinkError::UnexpectedId { id: resp.id, reply: resp.reply }));
        }
        self.in_flight = None;
        Some(match &resp.reply {
            Reply::Prediction(p) => Ok(Answer::from_wire(resp.id, p, None)),
            Reply::Explained { prediction, evidence } => Ok(Answer::from_wire(resp.id, prediction, Some(evidence))),
            Reply::Error { code, detail } => Err(LinkError::Remote { id: resp.id, code: *code, detail: *detail }),
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use ckd_core::wire::{Response, MAX_RESPONSE_FRAME};
    use std::vec::Vec;

    fn visit() -> VisitSummary {
        let mut v = VisitSummary::default();
        v.push_diagnosis("584.9", "").unwrap();
        v.push_diagnosis("V45.81", "").unwrap();
        v.push_medication("Furosemide").unwrap();
        v.push_procedure("3995", "Hemodialysis").unwrap();
        v
    }

    fn prediction() -> WirePrediction {
        let mut probs = [0u16; NUM_LABELS];
        probs[0] = 60000;
        probs[4] = 40000;
        probs[8] = 30000;
        WirePrediction {
            probs,
            positive: 1 | 1 << 4,
            top_k: heapless::Vec::from_slice(&[0, 4, 8, 1, 2]).unwrap(),
            truncated: false,
            tokens: 87,
        }
    }

    fn response_bytes(id: u32, reply: Reply) -> Vec<u8> {
        let mut out = [0u8; MAX_RESPONSE_FRAME + 1];
        let n = wire::encode_response(&Response { id, reply }, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn feed_all(link: &mut Link, bytes: &[u8]) -> Vec<Result<Answer, LinkError>> {
        bytes.iter().filter_map(|&b| link.feed(b)).collect()
    }

    #[test]
    fn request_decodes_on_the_board_and_answer_decodes_here() {
        let mut link = Link::new();
        let mut tx = [0u8; TX_CAPACITY];
        let (id, n) = link.request(&visit(), &mut tx).unwrap();
        assert_eq!(id, 1);
        let req = wire::decode_request(&mut tx[..n]).unwrap();
        assert_eq!((req.id, req.visit), (1, visit()));
        assert_eq!(link.request(&visit(), &mut tx), Err(LinkError::Busy { id: 1 }));

        let got = feed_all(&mut link, &response_bytes(1, Reply::Prediction(prediction())));
        assert_eq!(got.len(), 1);
        let a = got[0].clone().unwrap();
        assert_eq!(a.id, 1);
        assert!((a.probs[0] - 60000.0 / 65535.0).abs() < 1e-7);
        assert!(a.is_positive(0) && a.is_positive(4) && !a.is_positive(8) && !a.is_positive(40));
        assert_eq!(a.top_k.as_slice(), &[0, 4, 8, 1, 2]);
        assert_eq!(link.in_flight(), None);
        assert_eq!(link.request(&visit(), &mut tx).unwrap().0, 2);
        assert_eq!(a.evidence, None);
    }

    #[test]
    fn explained_request_and_answer() {
        let mut link = Link::new();
        let mut tx = [0u8; TX_CAPACITY];
        let (id, n) = link.request_explained(&visit(), &mut tx).unwrap();
        let req = wire::decode_request(&mut tx[..n]).unwrap();
        assert!(req.explain);
        let concept = WireConcept { list: 2, index: 0, effect: wire::quantize_effect(0.3) };
        let evidence = WireEvidence { label: 0, concepts: heapless::Vec::from_slice(&[concept]).unwrap() };
        let reply = Reply::Explained { prediction: prediction(), evidence: evidence.clone() };
        let got = feed_all(&mut link, &response_bytes(id, reply));
        let a = got[0].clone().unwrap();
        assert_eq!(a.evidence, Some(evidence));
        assert_eq!(a.top_k.as_slice(), &[0, 4, 8, 1, 2]);
    }

    #[test]
    fn errors_stale_answers_and_noise_are_reported() {
        let mut link = Link::new();
        let mut tx = [0u8; TX_CAPACITY];
        let (id, _) = link.request(&visit(), &mut tx).unwrap();
        // Noise, a stale answer, a corrupted answer, then the board's error reply.
        let mut stream = Vec::from([0u8, 0x55, 0x13, 0x00]);
        stream.extend(response_bytes(77, Reply::Prediction(prediction())));
        let mut bad = response_bytes(id, Reply::Prediction(prediction()));
        bad[3] ^= 0x40;
        stream.extend(bad);
        stream.extend(response_bytes(id, Reply::Error { code: ErrorCode::InvalidItem, detail: 2 * 256 }));
        let got = feed_all(&mut link, &stream);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(got[0], Err(LinkError::Wire(_))));
        assert!(matches!(got[1], Err(LinkError::UnexpectedId { id: 77, .. })));
        assert!(matches!(got[2], Err(LinkError::Wire(WireError::Crc { .. }) | LinkError::Wire(WireError::Cobs))));
        assert_eq!(got[3], Err(LinkError::Remote { id, code: ErrorCode::InvalidItem, detail: 512 }));
        assert_eq!(link.in_flight(), None);
        // An endless frame is cut at the buffer and reported once its delimiter comes.
        let mut long = Vec::from([1u8; RX_CAPACITY + 10]);
        long.push(0);
        assert_eq!(feed_all(&mut link, &long), [Err(LinkError::Wire(WireError::Oversize { max: RX_CAPACITY }))]);
    }

    #[test]
    fn ids_skip_zero_when_wrapping() {
        let mut link = Link { next_id: u32::MAX, ..Link::new() };
        let mut tx = [0u8; TX_CAPACITY];
        assert_eq!(link.request(&visit(), &mut tx).unwrap().0, u32::MAX);
        link.cancel();
        assert_eq!(link.request(&visit(), &mut tx).unwrap().0, 1);
    }
}
