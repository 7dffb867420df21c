//! glibc malloc tunings for a process that briefly holds tens of MB of pages
//! or entries, then much less for the rest of the run. No-ops elsewhere.

/// glibc's malloc raises its mmap threshold to the largest block freed (up to 32
/// MiB), and from then on carves even whole SCIM pages (group pages run to tens of
/// MB) from the heap, whose memory then stays with the process. A fixed 1 MiB
/// threshold keeps such blocks in mappings of their own, returned when freed
/// (docs/performance.md has the peak RSS it saves).
///
/// Call before any thread starts.
pub fn keep_large_blocks_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable, and no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// Returns the heap's free pages to the system. Decoding the group pages, or a
/// large read and its planning, frees tens of MB across the arenas of the
/// threads that did it, which glibc keeps, and the rest of the run allocates
/// elsewhere: so they are returned once that part is over (docs/performance.md).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes the arenas' locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
