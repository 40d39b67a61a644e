//! The process's allocator: jemalloc (the default `jemalloc` feature), else glibc's malloc
//! with settings for a proxy's allocation pattern.
//!
//! A proxied request makes about a dozen short-lived allocations (extension maps, header
//! maps, boxed futures, buffers). glibc's malloc spent some 3,600 instructions per request
//! on them, 12% of the gateway's work; jemalloc's per-thread caches about 900, with idle
//! RSS 1.8 MiB higher and memory per idle connection no higher (measured with the bench's
//! 1000 idle keep-alive connections). It serves C libraries' `malloc` too (libmodsecurity),
//! so the process has one allocator, not two.
//!
//! With glibc's malloc: an answer of 100 KB is read into a buffer of 128 KiB or more, freed
//! once it is sent. By default glibc serves such sizes with `mmap` until its adaptive
//! threshold rises, and gives the top of a thread's heap back to the kernel as soon as more
//! than twice that threshold is free: the next buffer then faults its pages in again
//! (measured: about 1.2 page faults per 100 KB answer, none after this). Fixed thresholds
//! keep buffers of up to 4 MiB in the heap and up to 16 MiB of free memory per arena for
//! reuse instead. (jemalloc keeps freed pages for reuse for ten seconds by itself.)

#[cfg(feature = "jemalloc")]
#[global_allocator]
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Sets glibc's thresholds when glibc's malloc is the allocator. Call before the runtime's
/// threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator parameters; no memory is touched, and it is
    // called from `main` before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}
