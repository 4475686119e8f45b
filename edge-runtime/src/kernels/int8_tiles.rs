//! What every int8 kernel does around its tile: the activations converted once per call into
//! padded rows of a per-thread buffer ([`pad_rows`]), and the walk over the tiles: panel,
//! column block, rows ([`for_each_tile`]).

use super::int8_dot::{PackedLinear, NR};

/// `rows` rows of `a` ([rows, K] u8, K = `pw.k`) into `buf` as `stride` values each:
/// `convert(x)` for the K values, `T::default()` after them. `stride >= K`.
#[inline(always)]
pub(super) fn pad_rows<T: Copy + Default>(
    buf: &mut Vec<T>,
    pw: &PackedLinear,
    a: &[u8],
    rows: usize,
    stride: usize,
    convert: impl Fn(u8) -> T,
) {
    buf.clear();
    buf.resize(rows * stride, T::default());
    for (dst, src) in buf.chunks_exact_mut(stride.max(1)).zip(a.chunks_exact(pw.k.max(1))) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = convert(s);
        }
    }
}

/// Calls `tile(p, block, r0, mv, a_rows)` for every tile of `MR` rows x `cols` columns: panel
/// `p`, column block `block` of it (columns `p * NR + block * cols ..`; blocks that start past
/// N are skipped), rows `r0 .. r0 + mv` (`mv <= MR`). `a_rows` points at those rows of `act`
/// (`stride` values each); pointers past the last row repeat the last (their results are to be
/// dropped). `cols` divides [`NR`].
#[inline(always)]
pub(super) fn for_each_tile<T, const MR: usize>(
    pw: &PackedLinear,
    act: &[T],
    stride: usize,
    rows: usize,
    cols: usize,
    mut tile: impl FnMut(usize, usize, usize, usize, &[*const T; MR]),
) {
    for p in 0..pw.panels {
        for block in 0..NR / cols {
            if p * NR + block * cols >= pw.n {
                break;
            }
            let mut r0 = 0;
            while r0 < rows {
                let mv = MR.min(rows - r0);
                let a_rows = std::array::from_fn(|i| act[(r0 + i.min(mv - 1)) * stride..].as_ptr());
                tile(p, block, r0, mv, &a_rows);
                r0 += mv;
            }
        }
    }
}
