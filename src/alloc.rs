//! The process's allocator: mimalloc, asked the plain way for what needs no more than a
//! word's alignment.
//!
//! mimalloc replaced glibc malloc because per-request allocations freed on another worker
//! thread made glibc's arena locks a large share of the gateway's cost under load. The
//! `mimalloc` crate's allocator asks for every block through `mi_malloc_aligned`, whose
//! fast path serves only blocks of up to 1 KiB that happen to sit at the right address;
//! every larger one (a connection's read buffer, a boxed request future) took the generic
//! path, which over-allocates by the alignment and adjusts: ~1.3k instructions per proxied
//! request (callgrind, bench/README.md "Session 38"). Every mimalloc block is aligned to at
//! least a machine word ([`WORD`]), so a layout that asks for no more is served by
//! `mi_malloc`; anything that asks for more still goes through the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has: its blocks are whole words, carved from pages
/// aligned far more than that.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, with the plain calls for word-aligned layouts (see the module documentation).
pub struct Allocator;

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes blocks from
// the plain and the aligned calls alike); a layout asking for more than a word's alignment
// is served only by the aligned calls, which honour it; one asking for no more gets a block
// that is word-aligned.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};

    /// Sizes around mimalloc's size classes and its small/medium/large boundaries.
    const SIZES: [usize; 14] = [
        1, 7, 8, 9, 24, 100, 1023, 1024, 1025, 4096, 8200, 65_537, 600_000, 5_000_000,
    ];
    const ALIGNS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 4096, 65_536];

    /// Each layout's block (through this binary's global allocator, which is ours) has the
    /// alignment asked for, holds what was written, keeps it through a growing and a
    /// shrinking `realloc` (still aligned), and a zeroed block is zero.
    #[test]
    fn every_layout_gets_its_alignment_and_keeps_its_bytes() {
        for &align in &ALIGNS {
            for &size in &SIZES {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every block is written within its size, freed once
                // with the layout it has.
                unsafe {
                    let p = alloc(layout);
                    assert!(!p.is_null(), "{size} bytes at {align}");
                    assert_eq!(p as usize % align, 0, "{size} bytes at {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let grown = size * 3 + 1;
                    let q = realloc(p, layout, grown);
                    assert_eq!(q as usize % align, 0, "{size} -> {grown} bytes at {align}");
                    assert!((0..size).all(|i| *q.add(i) == (i % 251) as u8));
                    let shrunk = size.div_ceil(2);
                    let big = Layout::from_size_align(grown, align).unwrap();
                    let r = realloc(q, big, shrunk);
                    assert_eq!(
                        r as usize % align,
                        0,
                        "{grown} -> {shrunk} bytes at {align}"
                    );
                    assert!((0..shrunk).all(|i| *r.add(i) == (i % 251) as u8));
                    dealloc(r, Layout::from_size_align(shrunk, align).unwrap());

                    let z = alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} bytes at {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    dealloc(z, layout);
                }
            }
        }
    }
}
