//! glibc malloc settings for a proxy's allocation pattern.
//!
//! An answer of 100 KB is read into a buffer of 128 KiB or more, freed once it is sent. By
//! default glibc serves such sizes with `mmap` until its adaptive threshold rises, and gives
//! the top of a thread's heap back to the kernel as soon as more than twice that threshold is
//! free: the next buffer then faults its pages in again (measured: about 1.2 page faults per
//! 100 KB answer, none after this). Fixed thresholds keep buffers of up to 4 MiB in the heap
//! and up to 16 MiB of free memory per arena for reuse instead. Idle RSS is unchanged; after
//! a burst, up to that much stays resident per worker thread.

/// Sets the thresholds. Call before the runtime's threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator parameters; no memory is touched, and it is
    // called from `main` before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}
