//! The binaries' global allocator: the system's, with every allocation of 4 KiB or more placed
//! on a 64-byte boundary.
//!
//! Why: on AMD EPYC hosts with FSRM, `rep movsb` — how glibc's `memcpy` and the kernel's copies
//! to user space move large blocks — runs at about half speed into a destination 16 bytes past
//! a cache line, which is where glibc's `malloc` puts a large block (after its 16-byte chunk
//! header). The reactor's read buffers are page-aligned for that reason (`buffer::Aligned`;
//! docs/BENCHMARKS.md, "Read buffers on a page boundary"). The buffers other code allocates —
//! rustls copies every decrypted TLS record into a new `Vec` of its own, 13 % of a TLS bulk
//! server's CPU in one profile — are aligned here instead, for all of them at once.
//!
//! Small allocations pass straight through: only sizes of [`LARGE`] and more pay for the
//! alignment (glibc's `posix_memalign`, and a copy on `realloc`, which the system allocator
//! cannot do in place for alignments above 16).
//!
//! The library never installs it: a library leaves the choice of allocator to its program.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are aligned to [`LINE`].
pub const LARGE: usize = 4096;
/// A cache line.
pub const LINE: usize = 64;

/// The system allocator, with allocations of [`LARGE`] bytes and more on a cache line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineAligned;

/// The layout actually asked of the system for `layout`: the same for a given size, so that
/// `dealloc` and `realloc` see what `alloc` did.
#[inline]
fn widened(layout: Layout) -> Layout {
    if layout.size() >= LARGE && layout.align() < LINE {
        // A valid layout's size, rounded up to a power-of-two alignment of 64, cannot overflow
        // isize here: the size is at most isize::MAX - (align - 1) for its own alignment, and
        // this only raises the alignment of sizes far below that.
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every call is passed to `System` with the layout `widened` gives, which is a valid
// layout of the same size and at least the requested alignment; `dealloc` and `realloc` compute
// the same widened layout from the same size, so the system sees matching layouts.
unsafe impl GlobalAlloc for LineAligned {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above; `layout` has a non-zero size (GlobalAlloc's contract).
        unsafe { System.alloc(widened(layout)) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(widened(layout)) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with the same `layout`, hence the same widened one.
        unsafe { System.dealloc(ptr, widened(layout)) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        let new = widened(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout));
        if old.align() == new.align() {
            // SAFETY: `ptr` was allocated with `old`; the system keeps the alignment.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // The alignment changes across LARGE: a new block, the bytes moved, the old one freed.
        // SAFETY: `new` is a valid non-zero layout; both blocks are valid for the smaller size.
        unsafe {
            let fresh = System.alloc(new);
            if !fresh.is_null() {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_allocations_are_on_a_line_and_small_ones_as_asked() {
        let a = LineAligned;
        for size in [1, 15, 100, LARGE - 1, LARGE, 16 * 1024 + 5, 1 << 20] {
            let layout = Layout::from_size_align(size, 1).unwrap();
            // SAFETY: a valid non-zero layout; freed with the same layout.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                if size >= LARGE {
                    assert_eq!(p as usize % LINE, 0, "{size} bytes at {p:p}");
                }
                p.write_bytes(0xab, size);
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn realloc_across_the_threshold_keeps_the_bytes() {
        let a = LineAligned;
        let small = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: valid layouts; each block freed with the layout it has at the time.
        unsafe {
            let p = a.alloc(small);
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            let big = a.realloc(p, small, 3 * LARGE);
            assert_eq!(big as usize % LINE, 0);
            assert!((0..100).all(|i| *big.add(i) == i as u8));
            let large = Layout::from_size_align(3 * LARGE, 8).unwrap();
            let back = a.realloc(big, large, 50);
            assert!((0..50).all(|i| *back.add(i) == i as u8));
            a.dealloc(back, Layout::from_size_align(50, 8).unwrap());
        }
    }
}
