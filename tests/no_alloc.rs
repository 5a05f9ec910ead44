//! The non-blocking path allocates nothing: sending and receiving messages that are ready
//! never touches the heap (nor, by construction, makes a system call: see the README).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shmchan::Backing;
use shmchan::spsc::{Channel, Options};

/// Counts this thread's allocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is a thread-local Cell that
// never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn sending_and_receiving_ready_messages_never_allocates() {
    let chan =
        Channel::<[u64; 4]>::create(Backing::Anonymous, &Options::new().capacity(64)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let batch = [[7u64; 4]; 16];
    let mut out = [[0u64; 4]; 16];

    let before = allocations();
    for round in 0..10_000u64 {
        tx.try_send([round; 4]).unwrap();
        tx.send([round + 1; 4]).unwrap();
        assert_eq!(rx.try_recv().unwrap(), [round; 4]);
        assert_eq!(rx.recv().unwrap(), [round + 1; 4]);
        assert_eq!(tx.try_send_slice(&batch).unwrap(), 16);
        assert_eq!(rx.try_recv_into(&mut out).unwrap(), 16);
        tx.send_slice(&batch[..8]).unwrap();
        assert_eq!(rx.recv_into(&mut out).unwrap(), 8);
    }
    assert_eq!(allocations() - before, 0, "the message path allocated");
    // The counter does count: a Vec allocates.
    let v = vec![1u8; 10];
    assert!(allocations() > before, "{v:?}");
}
