//! C API of the ckd-ehr edge runtime, for device makers: link `libckd_edge_c.a` (or
//! `libckd_edge_c.so`) and include `include/ckd_edge.h` (generated from this file by cbindgen;
//! the `header` test fails when the committed header is stale).
//!
//! Contract of every entry point:
//! - no Rust panic crosses the boundary: each body runs under `catch_unwind`, and a panic is
//!   reported as [`CKD_ERR_PANIC`] (or a NULL engine) with a message;
//! - NULL pointers are checked and reported as [`CKD_ERR_NULL`], never dereferenced;
//! - on failure the message is kept per thread: [`ckd_last_error`] returns it until the next
//!   failing call on the same thread.
//!
//! One engine may be used from several threads at once (`ckd_predict_text` takes a const
//! pointer; the Rust `Engine` is `Send + Sync`).

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;

use ckd_core::{NUM_LABELS, PHENOTYPES};
use ckd_edge::{EdgeError, Engine, EngineOptions};

/// Success.
pub const CKD_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const CKD_ERR_NULL: i32 = 1;
/// The input text is not valid UTF-8.
pub const CKD_ERR_UTF8: i32 = 2;
/// An output buffer is shorter than `CKD_NUM_LABELS`.
pub const CKD_ERR_BUFFER: i32 = 3;
/// The input is unusable (empty or whitespace-only text, longer than `CKD_MAX_INPUT_BYTES`,
/// tokenizer failure).
pub const CKD_ERR_INPUT: i32 = 4;
/// The bundle could not be opened (missing file, bad manifest, checksum, tokenizer).
pub const CKD_ERR_BUNDLE: i32 = 5;
/// The model failed to run.
pub const CKD_ERR_MODEL: i32 = 6;
/// A bug: a Rust panic was caught at the boundary.
pub const CKD_ERR_PANIC: i32 = 7;

/// Longest text `ckd_predict_text` accepts, in bytes (1 MiB): a longer one is refused with
/// `CKD_ERR_INPUT` before any work. Within it, only as much of the text is tokenized as the
/// bundle's maximum length needs, so memory per call stays bounded.
pub const CKD_MAX_INPUT_BYTES: usize = 1048576;
const _: () =
    assert!(CKD_MAX_INPUT_BYTES == ckd_edge::MAX_INPUT_BYTES, "CKD_MAX_INPUT_BYTES must equal MAX_INPUT_BYTES");

/// Number of phenotype labels: the length of every per-label buffer.
pub const CKD_NUM_LABELS: usize = 25;
const _: () = assert!(CKD_NUM_LABELS == NUM_LABELS, "CKD_NUM_LABELS must equal ckd_core::NUM_LABELS");

/// An opened, verified bundle (opaque). Create with `ckd_engine_open`, release with
/// `ckd_engine_free`.
pub struct CkdEngine {
    engine: Engine,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    // Interior NULs cannot be represented in a C string: replace them.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (panic): {what}")
}

/// Runs `f`, mapping `Err((code, msg))` and panics to a status code and the thread's last error.
fn guard(f: impl FnOnce() -> Result<(), (i32, String)>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKD_OK,
        Ok(Err((code, msg))) => {
            set_error(&msg);
            code
        }
        Err(p) => {
            set_error(&panic_message(p.as_ref()));
            CKD_ERR_PANIC
        }
    }
}

fn edge_code(e: &EdgeError) -> i32 {
    match e {
        EdgeError::Io { .. } | EdgeError::Bundle { .. } | EdgeError::Tokenizer { .. } => CKD_ERR_BUNDLE,
        EdgeError::EmptyInput { .. }
        | EdgeError::InputTooLong { .. }
        | EdgeError::Encode { .. }
        | EdgeError::Options(_)
        | EdgeError::BenchLength { .. }
        | EdgeError::Visit(_)
        | EdgeError::EmptyVisit
        | EdgeError::Layout => CKD_ERR_INPUT,
        EdgeError::Model(_) => CKD_ERR_MODEL,
    }
}

/// Opens and verifies the bundle at `bundle_dir` (NUL-terminated UTF-8 path of a bundle directory
/// or of a single-file bundle written by `ckd pack`): checks the
/// manifest, the label space and every file's SHA-256, and builds the model plan once.
/// Predictions run on the calling thread. Returns NULL on failure; `ckd_last_error` then says
/// why.
///
/// # Safety
/// `bundle_dir` must be NULL or point to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ckd_engine_open(bundle_dir: *const c_char) -> *mut CkdEngine {
    // SAFETY: the caller's contract is this function's.
    unsafe { ckd_engine_open_threads(bundle_dir, 1) }
}

/// `ckd_engine_open` with `threads` threads per prediction (0 or 1: the calling thread only;
/// more: a private pool, which needs a library built with the `threads` feature, else NULL
/// with `CKD_ERR_INPUT` as the reason in `ckd_last_error`).
///
/// # Safety
/// `bundle_dir` must be NULL or point to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ckd_engine_open_threads(bundle_dir: *const c_char, threads: u32) -> *mut CkdEngine {
    let mut out: *mut CkdEngine = std::ptr::null_mut();
    guard(|| {
        if bundle_dir.is_null() {
            return Err((CKD_ERR_NULL, "ckd_engine_open: bundle_dir is NULL".into()));
        }
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        let dir = unsafe { CStr::from_ptr(bundle_dir) };
        let dir =
            dir.to_str().map_err(|e| (CKD_ERR_UTF8, format!("ckd_engine_open: bundle_dir is not valid UTF-8: {e}")))?;
        let opts = EngineOptions { threads: threads as usize, ..Default::default() };
        let engine = Engine::open_with(Path::new(dir), &opts).map_err(|e| (edge_code(&e), e.to_string()))?;
        out = Box::into_raw(Box::new(CkdEngine { engine }));
        Ok(())
    });
    out
}

/// Makes the allocator return large freed blocks to the system at once (glibc on Linux: fixes
/// the mmap threshold at 128 KiB), which lowers the peak and resident memory of opening a
/// bundle. Affects the whole process: call it first thing in `main`, before other threads
/// start, if the rest of the program agrees. Returns 1 when applied, 0 on other C libraries.
#[no_mangle]
pub extern "C" fn ckd_use_mmap_for_large_allocations() -> i32 {
    i32::from(ckd_edge::memory::use_mmap_for_large_allocations())
}

/// For the predictions after `ckd_engine_open`: raises the allocator's mmap and trim thresholds
/// (glibc on Linux: 32 MiB and 64 MiB on 64-bit targets) so that each prediction reuses the
/// blocks the previous one freed. Without it, a program that called
/// `ckd_use_mmap_for_large_allocations` maps and faults in every prediction's tensors afresh
/// (20-25% of a MiniLM-size prediction's time). Affects the whole process. Returns 1 when
/// applied, 0 on other C libraries.
#[no_mangle]
pub extern "C" fn ckd_reuse_freed_memory() -> i32 {
    i32::from(ckd_edge::memory::reuse_freed_memory())
}

/// Releases an engine. NULL is accepted and ignored. Do not use the pointer afterwards.
///
/// # Safety
/// `engine` must be NULL or a pointer returned by `ckd_engine_open` not freed before.
#[no_mangle]
pub unsafe extern "C" fn ckd_engine_free(engine: *mut CkdEngine) {
    let _ = guard(|| {
        if !engine.is_null() {
            // SAFETY: returned by `Box::into_raw` in `ckd_engine_open`, freed once.
            drop(unsafe { Box::from_raw(engine) });
        }
        Ok(())
    });
}

/// Predicts from one text in the CKD-EHR layout (`text_len` bytes of UTF-8, no NUL needed,
/// at most `CKD_MAX_INPUT_BYTES`: a longer text returns `CKD_ERR_INPUT`).
///
/// Writes `CKD_NUM_LABELS` probabilities into `probs` (label order), and when `positive` is not
/// NULL, `CKD_NUM_LABELS` decisions (1: at or above the bundle's threshold for that label, else
/// 0). When `truncated` is not NULL it is set to whether the text was cut to the bundle's
/// maximum length. Buffer lengths are in elements. Returns `CKD_OK` or an error code; on error
/// the output buffers are left unchanged.
///
/// # Safety
/// `engine` must come from `ckd_engine_open`; `text` must point to `text_len` readable bytes;
/// `probs` to `probs_len` writable floats; `positive` (if not NULL) to `positive_len` writable
/// bytes; `truncated` (if not NULL) to one writable bool.
#[no_mangle]
pub unsafe extern "C" fn ckd_predict_text(
    engine: *const CkdEngine,
    text: *const u8,
    text_len: usize,
    probs: *mut f32,
    probs_len: usize,
    positive: *mut u8,
    positive_len: usize,
    truncated: *mut bool,
) -> i32 {
    guard(|| {
        if engine.is_null() || text.is_null() || probs.is_null() {
            return Err((CKD_ERR_NULL, "ckd_predict_text: engine, text and probs must not be NULL".into()));
        }
        if probs_len < NUM_LABELS || (!positive.is_null() && positive_len < NUM_LABELS) {
            return Err((
                CKD_ERR_BUFFER,
                format!(
                    "ckd_predict_text: output buffers need {NUM_LABELS} elements (probs_len {probs_len}, positive_len {positive_len})"
                ),
            ));
        }
        // SAFETY: caller's contract (non-NULL checked above).
        let (engine, bytes) = unsafe { (&(*engine).engine, std::slice::from_raw_parts(text, text_len)) };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            (CKD_ERR_UTF8, format!("ckd_predict_text: text is not valid UTF-8 (at byte {})", e.valid_up_to()))
        })?;
        let p = engine.predict_text(text).map_err(|e| (edge_code(&e), e.to_string()))?;
        // SAFETY: lengths checked above; caller's contract for validity.
        unsafe {
            std::slice::from_raw_parts_mut(probs, NUM_LABELS).copy_from_slice(&p.probs);
            if !positive.is_null() {
                let out = std::slice::from_raw_parts_mut(positive, NUM_LABELS);
                for (l, o) in out.iter_mut().enumerate() {
                    *o = u8::from(p.positive.contains(l as u8));
                }
            }
            if !truncated.is_null() {
                *truncated = p.truncated;
            }
        }
        Ok(())
    })
}

/// Explains a prediction by occlusion: for one text in the CKD-EHR layout (`text_len` bytes of
/// UTF-8, at most `CKD_MAX_INPUT_BYTES`), runs the model on the whole text and on the text
/// without each of its concepts (each diagnosis, drug, procedure and knowledge clause, as
/// `ckd-core` finds them), one prediction per concept plus one.
///
/// `*n_concepts` is always set (when the text is in the layout) to the number of concepts N.
/// Outputs, in elements: `effects` N x `CKD_NUM_LABELS` floats, row-major (concept, label):
/// probability with the concept minus without it (positive: the concept raises that
/// phenotype); `spans` 2 N values, each concept's byte offsets (start, end) in `text`;
/// `fields` (may be NULL) N bytes: 0 diagnoses, 1 medications, 2 procedures, 3 knowledge;
/// `probs` (may be NULL) `CKD_NUM_LABELS` probabilities of the whole text. Buffers too short
/// for N return `CKD_ERR_BUFFER` before any model run, so a caller can size them and call
/// again. A text not in the layout returns `CKD_ERR_INPUT`. Nothing is allocated across the
/// boundary; on error the output buffers are left unchanged.
///
/// # Safety
/// `engine` must come from `ckd_engine_open`; `text` must point to `text_len` readable bytes;
/// every non-NULL output to as many writable elements as its length says; `n_concepts` to one
/// writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ckd_explain_text(
    engine: *const CkdEngine,
    text: *const u8,
    text_len: usize,
    effects: *mut f32,
    effects_len: usize,
    spans: *mut u32,
    spans_len: usize,
    fields: *mut u8,
    fields_len: usize,
    probs: *mut f32,
    probs_len: usize,
    n_concepts: *mut usize,
) -> i32 {
    guard(|| {
        if engine.is_null() || text.is_null() || effects.is_null() || spans.is_null() || n_concepts.is_null() {
            return Err((
                CKD_ERR_NULL,
                "ckd_explain_text: engine, text, effects, spans and n_concepts must not be NULL".into(),
            ));
        }
        // SAFETY: caller's contract (non-NULL checked above).
        let (engine, bytes) = unsafe { (&(*engine).engine, std::slice::from_raw_parts(text, text_len)) };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            (CKD_ERR_UTF8, format!("ckd_explain_text: text is not valid UTF-8 (at byte {})", e.valid_up_to()))
        })?;
        if text.len() > CKD_MAX_INPUT_BYTES {
            let e = EdgeError::InputTooLong { index: 0, bytes: text.len(), max: CKD_MAX_INPUT_BYTES };
            return Err((CKD_ERR_INPUT, format!("ckd_explain_text: {e}")));
        }
        let layout = || (CKD_ERR_INPUT, format!("ckd_explain_text: {}", EdgeError::Layout));
        let n = ckd_core::visit::parse_spans(text).ok_or_else(layout)?.concepts.len();
        // SAFETY: caller's contract.
        unsafe { *n_concepts = n };
        let short = effects_len < n * NUM_LABELS
            || spans_len < 2 * n
            || (!fields.is_null() && fields_len < n)
            || (!probs.is_null() && probs_len < NUM_LABELS);
        if short {
            return Err((
                CKD_ERR_BUFFER,
                format!(
                    "ckd_explain_text: {n} concepts need effects_len >= {}, spans_len >= {}, fields_len >= {n}, \
                     probs_len >= {NUM_LABELS} (got {effects_len}, {spans_len}, {fields_len}, {probs_len})",
                    n * NUM_LABELS,
                    2 * n
                ),
            ));
        }
        let o = engine.occlude_text(text).map_err(|e| (edge_code(&e), format!("ckd_explain_text: {e}")))?;
        if o.concepts.len() != n {
            return Err((
                CKD_ERR_PANIC,
                format!("ckd_explain_text: {} concepts explained, {n} counted", o.concepts.len()),
            ));
        }
        // SAFETY: lengths checked above for N = o.concepts.len(); caller's contract. Offsets fit
        // u32: the text is at most CKD_MAX_INPUT_BYTES long.
        unsafe {
            let eff = std::slice::from_raw_parts_mut(effects, n * NUM_LABELS);
            let sp = std::slice::from_raw_parts_mut(spans, 2 * n);
            for (i, c) in o.concepts.iter().enumerate() {
                eff[i * NUM_LABELS..(i + 1) * NUM_LABELS].copy_from_slice(&c.effect);
                sp[2 * i] = c.start as u32;
                sp[2 * i + 1] = c.end as u32;
            }
            if !fields.is_null() {
                let f = std::slice::from_raw_parts_mut(fields, n);
                for (o, c) in f.iter_mut().zip(&o.concepts) {
                    *o = c.field.index() as u8;
                }
            }
            if !probs.is_null() {
                std::slice::from_raw_parts_mut(probs, NUM_LABELS).copy_from_slice(&o.prediction.probs);
            }
        }
        Ok(())
    })
}

/// Writes the kernel each fused op of `engine`'s plan runs on this CPU, as one line of
/// `op=kernel` pairs separated by `; ` (for example `int8 linear=avx2; LayerNorm=avx2; ...`),
/// NUL-terminated, into `buf` (`buf_len` bytes). When `needed` is not NULL it is set to the
/// line's length without the NUL. A buffer too small for the line and its NUL returns
/// `CKD_ERR_BUFFER` and writes nothing (`needed` is still set).
///
/// # Safety
/// `engine` must come from `ckd_engine_open`; `buf` must point to `buf_len` writable bytes;
/// `needed` (if not NULL) to one writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ckd_engine_kernels(
    engine: *const CkdEngine,
    buf: *mut c_char,
    buf_len: usize,
    needed: *mut usize,
) -> i32 {
    guard(|| {
        if engine.is_null() || buf.is_null() {
            return Err((CKD_ERR_NULL, "ckd_engine_kernels: engine and buf must not be NULL".into()));
        }
        // SAFETY: caller's contract (non-NULL checked above).
        let engine = unsafe { &(*engine).engine };
        let line = engine.kernels().iter().map(|(op, k)| format!("{op}={k}")).collect::<Vec<_>>().join("; ");
        if !needed.is_null() {
            // SAFETY: caller's contract.
            unsafe { *needed = line.len() };
        }
        if line.len() >= buf_len {
            return Err((
                CKD_ERR_BUFFER,
                format!(
                    "ckd_engine_kernels: the line needs {} bytes with its NUL, buf_len is {buf_len}",
                    line.len() + 1
                ),
            ));
        }
        // SAFETY: line.len() + 1 <= buf_len bytes, writable by the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(line.as_ptr(), buf as *mut u8, line.len());
            *buf.add(line.len()) = 0;
        }
        Ok(())
    })
}

/// The message of the last failed call on this thread (NUL-terminated UTF-8; empty when none).
/// Valid until the next failing call on this thread; do not free it.
#[no_mangle]
pub extern "C" fn ckd_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(c"internal error".as_ptr())
}

fn label_names() -> &'static [CString] {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    // Label names are ASCII constants without NUL.
    NAMES.get_or_init(|| PHENOTYPES.iter().map(|p| CString::new(p.name).unwrap_or_default()).collect())
}

/// Official name of label `index` (0-based, label order), NUL-terminated, static; NULL when
/// `index >= CKD_NUM_LABELS`.
#[no_mangle]
pub extern "C" fn ckd_label_name(index: usize) -> *const c_char {
    catch_unwind(|| label_names().get(index).map_or(std::ptr::null(), |c| c.as_ptr())).unwrap_or(std::ptr::null())
}

/// Version of this library (the crate version), NUL-terminated, static.
#[no_mangle]
pub extern "C" fn ckd_version() -> *const c_char {
    static V: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    V.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test bundle `testdata/tiny/bundle`, opened through the C API.
    fn open_tiny() -> *mut CkdEngine {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny/bundle");
        let dir = CString::new(dir.to_str().unwrap()).unwrap();
        let engine = unsafe { ckd_engine_open(dir.as_ptr()) };
        assert!(!engine.is_null(), "{}", last_error());
        engine
    }

    fn last_error() -> String {
        // SAFETY: ckd_last_error returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(ckd_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn null_pointers_are_errors_not_crashes() {
        assert!(unsafe { ckd_engine_open(std::ptr::null()) }.is_null());
        assert!(last_error().contains("bundle_dir is NULL"), "{}", last_error());
        let mut probs = [0f32; NUM_LABELS];
        let rc = unsafe {
            ckd_predict_text(
                std::ptr::null(),
                b"x".as_ptr(),
                1,
                probs.as_mut_ptr(),
                NUM_LABELS,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, CKD_ERR_NULL);
        unsafe { ckd_engine_free(std::ptr::null_mut()) };
    }

    #[test]
    fn missing_bundle_and_bad_path() {
        let e = unsafe { ckd_engine_open(c"/nonexistent/bundle".as_ptr()) };
        assert!(e.is_null());
        assert!(last_error().contains("/nonexistent/bundle/manifest.bin"), "{}", last_error());
        let bad = [0xffu8, 0xfe, 0];
        assert!(unsafe { ckd_engine_open(bad.as_ptr().cast()) }.is_null());
        assert!(last_error().contains("not valid UTF-8"), "{}", last_error());
    }

    #[test]
    fn labels_and_version() {
        for (i, ph) in PHENOTYPES.iter().enumerate() {
            let n = unsafe { CStr::from_ptr(ckd_label_name(i)) }.to_str().unwrap();
            assert_eq!(n, ph.name);
        }
        assert!(ckd_label_name(NUM_LABELS).is_null());
        assert_eq!(unsafe { CStr::from_ptr(ckd_version()) }.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    /// A text over `CKD_MAX_INPUT_BYTES` is an input error, not an abort.
    #[test]
    fn over_long_text_is_an_input_error() {
        let engine = open_tiny();
        let mut probs = [0f32; NUM_LABELS];
        let predict = |text: &[u8], probs: &mut [f32]| unsafe {
            let (null, len) = (std::ptr::null_mut(), probs.len());
            ckd_predict_text(engine, text.as_ptr(), text.len(), probs.as_mut_ptr(), len, null, 0, null.cast())
        };
        let over = "a ".repeat(CKD_MAX_INPUT_BYTES / 2) + "b";
        assert_eq!(predict(over.as_bytes(), &mut probs), CKD_ERR_INPUT);
        assert!(last_error().contains("over the maximum of 1048576"), "{}", last_error());
        assert_eq!(predict(&over.as_bytes()[..CKD_MAX_INPUT_BYTES], &mut probs), CKD_OK, "{}", last_error());
        unsafe { ckd_engine_free(engine) };
    }

    /// The kernel line names the int8 linear's kernel, fits exactly with its NUL, and a buffer
    /// one byte short is a buffer error that writes nothing.
    #[test]
    fn kernels_line_fits_caller_buffers() {
        let engine = open_tiny();
        let mut needed = 0usize;
        let mut buf = vec![b'x' as c_char; 512];
        assert_eq!(unsafe { ckd_engine_kernels(engine, buf.as_mut_ptr(), buf.len(), &mut needed) }, CKD_OK);
        let line = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_string();
        assert_eq!(line.len(), needed);
        assert!(line.starts_with("int8 linear="), "{line}");
        let mut short = vec![b'x' as c_char; needed];
        let rc = unsafe { ckd_engine_kernels(engine, short.as_mut_ptr(), short.len(), std::ptr::null_mut()) };
        assert_eq!(rc, CKD_ERR_BUFFER);
        assert!(short.iter().all(|&c| c == b'x' as c_char), "nothing written on error");
        let mut exact = vec![0 as c_char; needed + 1];
        assert_eq!(
            unsafe { ckd_engine_kernels(engine, exact.as_mut_ptr(), exact.len(), std::ptr::null_mut()) },
            CKD_OK
        );
        assert_eq!(unsafe { ckd_engine_kernels(std::ptr::null(), exact.as_mut_ptr(), 1, &mut needed) }, CKD_ERR_NULL);
        unsafe { ckd_engine_free(engine) };
    }

    /// `ckd_explain_text` gives the engine's occlusion; short buffers are refused before any
    /// run with the concept count set; a text outside the layout is an input error.
    #[test]
    fn explain_fills_caller_buffers() {
        let engine = open_tiny();
        let text = "The patient-acquired disease is Essential hypertension, Chronic kidney disease (ckd). \
                    The patient had used the following medication: Furosemide. \
                    The surgical operation performed by the patient: None. None.";
        let want = unsafe { &(*engine).engine }.occlude_text(text).unwrap();
        let n = want.concepts.len();
        assert_eq!(n, 3);
        let mut n_out = 0usize;
        let (mut eff, mut spans, mut fields, mut probs) =
            (vec![9f32; n * NUM_LABELS], vec![0u32; 2 * n], vec![9u8; n], [0f32; NUM_LABELS]);
        let call = |eff: &mut [f32],
                    spans: &mut [u32],
                    fields: &mut [u8],
                    probs: &mut [f32],
                    n_out: &mut usize,
                    text: &str| unsafe {
            ckd_explain_text(
                engine,
                text.as_ptr(),
                text.len(),
                eff.as_mut_ptr(),
                eff.len(),
                spans.as_mut_ptr(),
                spans.len(),
                fields.as_mut_ptr(),
                fields.len(),
                probs.as_mut_ptr(),
                probs.len(),
                n_out,
            )
        };
        let rc = call(&mut eff[..NUM_LABELS], &mut spans, &mut fields, &mut probs, &mut n_out, text);
        assert_eq!((rc, n_out), (CKD_ERR_BUFFER, n), "{}", last_error());
        assert!(eff.iter().all(|&e| e == 9.0), "nothing written on error");
        assert_eq!(call(&mut eff, &mut spans, &mut fields, &mut probs, &mut n_out, text), CKD_OK, "{}", last_error());
        for (i, c) in want.concepts.iter().enumerate() {
            assert_eq!(&eff[i * NUM_LABELS..(i + 1) * NUM_LABELS], &c.effect);
            assert_eq!((spans[2 * i] as usize, spans[2 * i + 1] as usize), (c.start, c.end));
            assert_eq!(fields[i] as usize, c.field.index());
        }
        assert_eq!(probs, want.prediction.probs);
        let rc = call(&mut eff, &mut spans, &mut fields, &mut probs, &mut n_out, "Diseases: hypertension.");
        assert_eq!(rc, CKD_ERR_INPUT);
        assert!(last_error().contains("not in the CKD-EHR layout"), "{}", last_error());
        unsafe { ckd_engine_free(engine) };
    }

    #[test]
    fn panics_become_error_codes() {
        let rc = guard(|| panic!("boom"));
        assert_eq!(rc, CKD_ERR_PANIC);
        assert!(last_error().contains("boom"), "{}", last_error());
    }
}
