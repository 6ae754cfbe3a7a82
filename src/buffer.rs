//! The per-connection output buffer and the pool that recycles its storage.
//!
//! Invariants:
//! - An [`OutBuf`] holds the bytes a peer's socket would not take yet, in order; `pos..len` of its
//!   block's storage is pending, everything before `pos` was sent.
//! - It never holds more than its cap: callers ask [`OutBuf::room`] before reading more input, so
//!   a peer that never reads costs at most `cap` bytes of user memory (backpressure, not growth).
//! - An empty buffer owns no block: the block goes back to the [`BufferPool`] as soon as it
//!   drains, so an idle connection costs one null pointer (8 bytes of its 64-byte slot; see
//!   `behaviour::Conn`), and "nothing pending" is one test of that pointer on the hot path.

/// Storage at most this large is kept in the pool; larger blocks go back to the allocator.
const POOL_MAX_BLOCK: usize = 256 * 1024;
/// The first block a buffer gets, unless the first push needs more.
pub(crate) const MIN_BLOCK: usize = 4 * 1024;

/// A bounded FIFO of pending output bytes: no block while empty, one block (storage and the
/// position of the first unsent byte) while bytes are pending.
#[derive(Debug, Default)]
pub struct OutBuf {
    block: Option<Box<Block>>,
}

/// Storage for pending output, lent by the pool while a buffer has bytes pending.
#[derive(Debug)]
pub struct Block {
    data: Vec<u8>,
    pos: usize,
}

impl Block {
    fn pending(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn push(&mut self, bytes: &[u8], cap: usize) {
        let needed = self.data.len() - self.pos + bytes.len();
        if self.data.capacity() - self.data.len() < bytes.len() {
            if self.pos > 0 {
                // Move the pending tail to the front before growing: reuse what we have.
                self.data.drain(..self.pos);
                self.pos = 0;
            }
            if self.data.capacity() < needed {
                let target = needed.max(self.data.capacity() * 2).min(cap.max(needed));
                self.data.reserve_exact(target - self.data.len());
            }
        }
        self.data.extend_from_slice(bytes);
    }
}

impl OutBuf {
    /// An empty buffer, holding no storage.
    pub const fn new() -> Self {
        OutBuf { block: None }
    }

    /// Bytes pending.
    pub fn len(&self) -> usize {
        self.block.as_ref().map_or(0, |b| b.data.len() - b.pos)
    }

    /// Whether nothing is pending (no block is held).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.block.is_none()
    }

    /// The pending bytes, oldest first.
    pub fn pending(&self) -> &[u8] {
        self.block.as_ref().map_or(&[], |b| b.pending())
    }

    /// How many more bytes fit under `cap`.
    pub fn room(&self, cap: usize) -> usize {
        cap.saturating_sub(self.len())
    }

    /// Bytes of storage held (0 when idle).
    pub fn capacity(&self) -> usize {
        self.block.as_ref().map_or(0, |b| b.data.capacity())
    }

    /// Appends `bytes` behind what is pending, taking a block from `pool` if it has none. The
    /// caller keeps the total within its cap (see [`room`](Self::room)); storage grows no larger
    /// than `cap` or what is needed.
    pub fn push(&mut self, bytes: &[u8], cap: usize, pool: &mut BufferPool) {
        if bytes.is_empty() {
            return;
        }
        let block = match &mut self.block {
            Some(block) => block,
            None => self.block.insert(pool.take(bytes.len().max(MIN_BLOCK.min(cap)))),
        };
        block.push(bytes, cap);
    }

    /// Marks `n` pending bytes as sent. When nothing remains, the block returns to `pool`.
    pub fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        debug_assert!(n <= self.len());
        let Some(block) = &mut self.block else { return };
        block.pos = (block.pos + n).min(block.data.len());
        if block.pos == block.data.len() {
            self.release(pool);
        }
    }

    /// Drops whatever is pending and returns the block to `pool`.
    pub fn release(&mut self, pool: &mut BufferPool) {
        if let Some(block) = self.block.take() {
            pool.give(block);
        }
    }
}

/// A small, bounded stack of freed blocks, so that connections which flap between idle and
/// backpressured do not hit the allocator every time.
#[derive(Debug)]
pub struct BufferPool {
    /// Boxed as the buffers hold them: a block changes hands without an allocation.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Block>>,
    max_blocks: usize,
}

impl BufferPool {
    /// A pool that keeps at most `max_blocks` blocks.
    pub fn new(max_blocks: usize) -> Self {
        BufferPool { free: Vec::new(), max_blocks }
    }

    /// An empty block with room for at least `min_capacity` bytes.
    pub fn take(&mut self, min_capacity: usize) -> Box<Block> {
        match self.free.iter().rposition(|b| b.data.capacity() >= min_capacity) {
            Some(i) => self.free.swap_remove(i),
            None => Box::new(Block { data: Vec::with_capacity(min_capacity), pos: 0 }),
        }
    }

    /// Returns a block; kept if the pool has space and the block is not oversized.
    pub fn give(&mut self, mut block: Box<Block>) {
        let cap = block.data.capacity();
        if cap > 0 && cap <= POOL_MAX_BLOCK && self.free.len() < self.max_blocks {
            block.data.clear();
            block.pos = 0;
            self.free.push(block);
        }
    }

    /// Blocks currently pooled.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether the pool holds no block.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

/// The alignment of an [`Aligned`] buffer: a page.
pub const BUFFER_ALIGN: usize = 4096;

/// A zeroed byte buffer that starts on a page boundary, for the buffers that `recv` fills.
///
/// Why: the kernel copies a socket's bytes to user space with `rep movsb`, and on this AMD EPYC
/// (FSRM) that copy runs at half speed into a destination 16 bytes past a 64-byte boundary —
/// where the allocator puts a large `Vec<u8>` (its chunk header). The C echo server with its
/// read buffer moved 16 bytes echoed 64 KiB messages at 0.5× the rate it reached aligned;
/// ricochet's 256 KiB read buffer sat exactly there, and the kernel's copy to user space was
/// 69 % of its CPU on bulk echo (the C server's: 10 %).
pub struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl Aligned {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len, BUFFER_ALIGN).expect("a buffer's size")
    }

    /// `len` zero bytes, page-aligned (no allocation when `len` is 0).
    pub fn zeroed(len: usize) -> Aligned {
        if len == 0 {
            return Aligned::default();
        }
        let layout = Aligned::layout(len);
        // SAFETY: the layout's size is not 0.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Aligned { ptr, len }
    }
}

impl Default for Aligned {
    /// Empty, holding no allocation.
    fn default() -> Aligned {
        Aligned { ptr: std::ptr::NonNull::dangling(), len: 0 }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `zeroed` with this layout, and freed only here.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Aligned::layout(self.len)) }
        }
    }
}

impl std::ops::Deref for Aligned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised (zeroed) bytes owned by `self` and live as long as it (none,
        // at a dangling but aligned pointer, when `len` is 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for Aligned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} bytes)", self.len)
    }
}

// SAFETY: it owns its bytes, as a Box<[u8]> does.
unsafe impl Send for Aligned {}
// SAFETY: shared access only reads, as with a Box<[u8]>.
unsafe impl Sync for Aligned {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_buffer_starts_on_a_page_and_is_zeroed() {
        for len in [0, 1, 64 * 1024, 256 * 1024 + 3] {
            let mut buf = Aligned::zeroed(len);
            assert_eq!(buf.len(), len);
            assert!(buf.iter().all(|&b| b == 0));
            if len > 0 {
                assert_eq!(buf.as_ptr() as usize % BUFFER_ALIGN, 0);
                buf[len - 1] = 7;
                assert_eq!(buf[len - 1], 7);
            }
        }
    }

    #[test]
    fn new_buffer_holds_no_storage() {
        let b = OutBuf::new();
        assert_eq!(b.capacity(), 0);
        assert!(b.is_empty());
        assert_eq!(b.room(100), 100);
    }

    #[test]
    fn push_consume_keeps_order() {
        let mut pool = BufferPool::new(4);
        let mut b = OutBuf::new();
        b.push(b"hello ", 1024, &mut pool);
        b.push(b"world", 1024, &mut pool);
        assert_eq!(b.pending(), b"hello world");
        b.consume(6, &mut pool);
        assert_eq!(b.pending(), b"world");
        assert_eq!(b.room(1024), 1019);
        b.push(b"!", 1024, &mut pool);
        assert_eq!(b.pending(), b"world!");
    }

    #[test]
    fn draining_returns_storage_to_pool() {
        let mut pool = BufferPool::new(4);
        let mut b = OutBuf::new();
        b.push(&[7; 100], 1 << 20, &mut pool);
        assert!(b.capacity() >= 100);
        b.consume(100, &mut pool);
        assert_eq!(b.capacity(), 0);
        assert_eq!(pool.len(), 1);
        // The next push reuses the pooled block.
        b.push(&[1; 10], 1 << 20, &mut pool);
        assert!(pool.is_empty());
    }

    #[test]
    fn storage_never_exceeds_cap_when_caller_respects_room() {
        let mut pool = BufferPool::new(4);
        let cap = 10_000;
        let mut b = OutBuf::new();
        let mut expected = Vec::new();
        let mut next = 0u8;
        for round in 0..200 {
            let n = b.room(cap).min(37 * (round % 5 + 1));
            let chunk: Vec<u8> = (0..n)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            b.push(&chunk, cap, &mut pool);
            expected.extend_from_slice(&chunk);
            assert!(b.len() <= cap);
            assert!(b.capacity() <= cap, "capacity {} over cap", b.capacity());
            let take = (round * 13) % (b.len() + 1);
            assert_eq!(&b.pending()[..take], &expected[..take]);
            b.consume(take, &mut pool);
            expected.drain(..take);
            assert_eq!(b.pending(), &expected[..]);
        }
    }

    #[test]
    fn pool_is_bounded_and_skips_huge_blocks() {
        let mut pool = BufferPool::new(2);
        let block = |capacity| Box::new(Block { data: Vec::with_capacity(capacity), pos: 0 });
        for _ in 0..5 {
            pool.give(block(1024));
        }
        assert_eq!(pool.len(), 2);
        pool.give(block(POOL_MAX_BLOCK + 1));
        assert_eq!(pool.len(), 2);
        let taken = pool.take(4096);
        assert!(taken.data.capacity() >= 4096);
        assert_eq!(pool.len(), 2, "no pooled block was large enough");
        assert_eq!(pool.take(1000).data.capacity(), 1024, "a pooled block that fits is reused");
        assert_eq!(pool.len(), 1);
    }
}
