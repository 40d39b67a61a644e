//! Where lines go: a bounded, sharded buffer filled on the request path and drained by a
//! dedicated writer thread, so file I/O never runs on the async runtime.
//!
//! A finished line is copied into one of several buffers (one per group of threads, each
//! behind its own mutex held only for the copy). The writer thread swaps each buffer for an
//! empty one and writes it with blocking I/O: every `flush_interval`, when a buffer is half
//! full, and when asked to flush or reopen. When the writer falls behind (a slow disk, a
//! blocked pipe) and a buffer is full, the line is dropped and counted; the writer reports
//! the count at `warn` level. Memory stays bounded by `buffer` (twice, with the writer's
//! spare), and no request ever waits for the disk.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::entry::Entry;
use crate::format::LogFormat;

/// The default total buffer: 1 MiB.
pub const DEFAULT_BUFFER: usize = 1 << 20;
/// The smallest buffer accepted: 64 KiB.
pub const MIN_BUFFER: usize = 64 << 10;
/// The largest buffer accepted: 1 GiB.
pub const MAX_BUFFER: usize = 1 << 30;
/// How often the writer writes what was buffered, by default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A shard never holds less than this, so that a long line (escaped headers near their
/// size limits) still fits.
const MIN_SHARD: usize = 64 << 10;
/// A thread's formatting buffer is shrunk back after a line longer than this.
const SCRATCH_KEEP: usize = 16 << 10;

/// The sink of an access log: a file, stdout, or any `Write`, written by a thread of its
/// own. Cheap to clone; the writer thread ends (after writing what is buffered) when the
/// last clone is dropped.
///
/// Lines are queued by [`append`](Self::append) without blocking and written within the
/// flush interval; [`flush`](Self::flush) waits until everything queued so far is written.
#[derive(Clone)]
pub struct LogWriter {
    handle: Arc<Handle>,
}

/// Ends the writer thread when the last [`LogWriter`] goes.
struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    shards: Box<[Shard]>,
    shard_cap: usize,
    kicked: AtomicBool,
    control: Mutex<Control>,
    wake: Condvar,
    description: String,
}

/// One buffer, on its own cache line.
#[repr(align(128))]
struct Shard {
    buf: Mutex<ShardBuf>,
}

struct ShardBuf {
    data: Vec<u8>,
    lines: u64,
    dropped: u64,
}

#[derive(Default)]
struct Control {
    stop: bool,
    reopen: bool,
    flushes: Vec<oneshot::Sender<io::Result<()>>>,
    bytes: u64,
    write_errors: u64,
    reopens: u64,
}

/// What a [`LogWriter`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogWriterStats {
    /// Lines queued.
    pub lines: u64,
    /// Lines dropped because the buffer was full (the writer fell behind).
    pub dropped: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Writes that failed (their lines are lost).
    pub write_errors: u64,
    /// Successful reopens.
    pub reopens: u64,
}

/// Builds a [`LogWriter`].
#[derive(Debug, Clone)]
pub struct LogWriterBuilder {
    buffer: usize,
    flush_interval: Duration,
}

enum Output {
    File { path: PathBuf, file: File },
    Stdout,
    Custom(Box<dyn Write + Send>),
}

// === impl LogWriter ===

impl LogWriter {
    /// A builder, to set the buffer size and the flush interval.
    pub fn builder() -> LogWriterBuilder {
        LogWriterBuilder {
            buffer: DEFAULT_BUFFER,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }

    /// Appends to the file at `path` (created if missing), with the defaults.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::builder().file(path)
    }

    /// Writes to the process's stdout, with the defaults.
    pub fn stdout() -> io::Result<Self> {
        Self::builder().stdout()
    }

    /// Queues one complete line (its newline included). Never blocks on I/O: when the
    /// buffer is full the line is dropped and counted in [`LogWriterStats::dropped`].
    pub fn append(&self, line: &[u8]) {
        self.handle.shared.append(line);
    }

    /// Formats `entry` in `format` and queues the line.
    pub fn log(&self, format: &LogFormat, entry: &Entry) {
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let done = SCRATCH.try_with(|s| {
            let Ok(mut buf) = s.try_borrow_mut() else {
                return false;
            };
            buf.clear();
            format.write(entry, &mut buf);
            self.append(&buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            true
        });
        if done != Ok(true) {
            let mut buf = Vec::with_capacity(256);
            format.write(entry, &mut buf);
            self.append(&buf);
        }
    }

    /// Asks the writer to reopen its file by its path (after the file was moved away for
    /// rotation). Returns at once; the writer thread wakes, writes what is buffered to the
    /// old file, then reopens, so lines queued until it gets there (usually none) go to
    /// the old file. [`flush`](Self::flush) waits for the reopen. A file that cannot be
    /// reopened is logged and the old one kept. A no-op for stdout.
    pub fn reopen(&self) {
        let shared = &self.handle.shared;
        shared.lock_control().reopen = true;
        shared.wake.notify_one();
    }

    /// Waits until every line queued before the call has been written (and a pending
    /// reopen done); the error of a failed write, if any.
    pub async fn flush(&self) -> io::Result<()> {
        let rx = self.request_flush();
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// [`flush`](Self::flush) for synchronous code. Must not be called from async code
    /// (it blocks the thread).
    pub fn flush_blocking(&self) -> io::Result<()> {
        let rx = self.request_flush();
        rx.blocking_recv().unwrap_or_else(|_| Err(stopped()))
    }

    fn request_flush(&self) -> oneshot::Receiver<io::Result<()>> {
        let (tx, rx) = oneshot::channel();
        let shared = &self.handle.shared;
        shared.lock_control().flushes.push(tx);
        shared.wake.notify_one();
        rx
    }

    /// Counters so far.
    pub fn stats(&self) -> LogWriterStats {
        let shared = &self.handle.shared;
        let mut stats = {
            let c = shared.lock_control();
            LogWriterStats {
                bytes: c.bytes,
                write_errors: c.write_errors,
                reopens: c.reopens,
                ..LogWriterStats::default()
            }
        };
        for shard in shared.shards.iter() {
            let buf = lock(&shard.buf);
            stats.lines += buf.lines;
            stats.dropped += buf.dropped;
        }
        stats
    }

    /// Where the lines go: a file's path, `stdout`, or `writer`.
    pub fn description(&self) -> &str {
        &self.handle.shared.description
    }

    /// The total buffer size, in bytes.
    pub fn buffer_size(&self) -> usize {
        self.handle.shared.shards.len() * self.handle.shared.shard_cap
    }
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("to", &self.description())
            .field("buffer", &self.buffer_size())
            .finish()
    }
}

fn stopped() -> io::Error {
    io::Error::other("the access log writer has stopped")
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock_control().stop = true;
        self.shared.wake.notify_one();
    }
}

// === impl LogWriterBuilder ===

impl LogWriterBuilder {
    /// The total buffer in bytes, shared by the request threads (default 1 MiB, at least
    /// 64 KiB): how much may wait for the writer before lines are dropped.
    pub fn buffer(mut self, bytes: usize) -> Self {
        self.buffer = bytes.clamp(MIN_BUFFER, MAX_BUFFER);
        self
    }

    /// How often buffered lines are written (default 1 s); a buffer filling up is written
    /// sooner.
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Appends to the file at `path`, created if missing.
    pub fn file(self, path: impl AsRef<Path>) -> io::Result<LogWriter> {
        let path = path.as_ref().to_owned();
        let file = open(&path)?;
        let description = path.display().to_string();
        self.start(Output::File { path, file }, description)
    }

    /// Writes to the process's stdout.
    pub fn stdout(self) -> io::Result<LogWriter> {
        self.start(Output::Stdout, "stdout".into())
    }

    /// Writes to `w` (a socket, a pipe, an in-memory buffer in tests).
    pub fn writer(self, w: impl Write + Send + 'static) -> io::Result<LogWriter> {
        self.start(Output::Custom(Box::new(w)), "writer".into())
    }

    fn start(self, output: Output, description: String) -> io::Result<LogWriter> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let shards = (threads * 2)
            .clamp(1, 64)
            .min(self.buffer / MIN_SHARD)
            .max(1);
        let shard_cap = self.buffer / shards;
        let shared = Arc::new(Shared {
            shards: (0..shards)
                .map(|_| Shard {
                    buf: Mutex::new(ShardBuf {
                        data: Vec::with_capacity(shard_cap),
                        lines: 0,
                        dropped: 0,
                    }),
                })
                .collect(),
            shard_cap,
            kicked: AtomicBool::new(false),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            description,
        });
        let worker = shared.clone();
        let interval = self.flush_interval;
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(worker, output, interval))?;
        Ok(LogWriter {
            handle: Arc::new(Handle { shared }),
        })
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

// === impl Shared ===

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave the data half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock_control(&self) -> MutexGuard<'_, Control> {
        lock(&self.control)
    }

    fn append(&self, line: &[u8]) {
        let shard = &self.shards[shard_index() % self.shards.len()];
        let half = {
            let mut buf = lock(&shard.buf);
            if buf.data.len() + line.len() > self.shard_cap {
                buf.dropped += 1;
                true
            } else {
                buf.data.extend_from_slice(line);
                buf.lines += 1;
                buf.data.len() >= self.shard_cap / 2
            }
        };
        if half && !self.kicked.load(Ordering::Relaxed) && !self.kicked.swap(true, Ordering::AcqRel)
        {
            // Without the control lock: a wake-up lost to a race only delays the writer
            // until its next interval.
            self.wake.notify_one();
        }
    }
}

/// The shard a thread writes to: threads are spread over the shards in turn.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.try_with(|i| *i).unwrap_or(0)
}

// === the writer thread ===

fn run(shared: Arc<Shared>, mut output: Output, interval: Duration) {
    let mut spare = Vec::with_capacity(shared.shard_cap);
    let mut reported_dropped = 0u64;
    let mut last_error_report: Option<Instant> = None;
    loop {
        let (stop, reopen, flushes) = {
            let mut c = shared.lock_control();
            if !c.stop
                && !c.reopen
                && c.flushes.is_empty()
                && !shared.kicked.load(Ordering::Acquire)
            {
                c = shared
                    .wake
                    .wait_timeout(c, interval)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            (
                c.stop,
                std::mem::take(&mut c.reopen),
                std::mem::take(&mut c.flushes),
            )
        };
        shared.kicked.store(false, Ordering::Release);

        let mut written = 0u64;
        let mut failure: Option<io::Error> = None;
        let mut dropped = 0u64;
        for shard in shared.shards.iter() {
            {
                let mut buf = lock(&shard.buf);
                dropped += buf.dropped;
                if buf.data.is_empty() {
                    continue;
                }
                std::mem::swap(&mut buf.data, &mut spare);
            }
            match output.write_all(&spare) {
                Ok(()) => written += spare.len() as u64,
                Err(e) => failure = Some(e),
            }
            spare.clear();
        }
        if let Err(e) = output.flush() {
            failure = Some(e);
        }
        let reopened = reopen.then(|| output.reopen());

        {
            let mut c = shared.lock_control();
            c.bytes += written;
            if failure.is_some() {
                c.write_errors += 1;
            }
            if let Some(Ok(true)) = reopened {
                c.reopens += 1;
            }
        }
        if let Some(e) = &failure {
            if last_error_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                last_error_report = Some(Instant::now());
                tracing::error!(
                    target: "towergate_access_log",
                    to = %shared.description, error = %e,
                    "cannot write the access log; lines are lost until writes succeed"
                );
            }
        }
        match &reopened {
            Some(Ok(true)) => tracing::info!(
                target: "towergate_access_log",
                to = %shared.description, "access log reopened"
            ),
            Some(Err(e)) => tracing::error!(
                target: "towergate_access_log",
                to = %shared.description, error = %e,
                "cannot reopen the access log; still writing to the file open before"
            ),
            _ => {}
        }
        if dropped > reported_dropped {
            tracing::warn!(
                target: "towergate_access_log",
                to = %shared.description,
                dropped = dropped - reported_dropped,
                buffer = shared.shards.len() * shared.shard_cap,
                "access log lines dropped: the writer could not keep up (a larger access_log.buffer absorbs longer stalls)"
            );
            reported_dropped = dropped;
        }
        for tx in flushes {
            let result = match &failure {
                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
                None => match &reopened {
                    Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                    _ => Ok(()),
                },
            };
            let _ = tx.send(result);
        }
        if stop {
            return;
        }
    }
}

// === impl Output ===

impl Output {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::File { file, .. } => file.write_all(bytes),
            Output::Stdout => io::stdout().lock().write_all(bytes),
            Output::Custom(w) => w.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File { .. } => Ok(()),
            Output::Stdout => io::stdout().lock().flush(),
            Output::Custom(w) => w.flush(),
        }
    }

    /// Reopens a file by its path; `Ok(false)` for outputs that have none.
    fn reopen(&mut self) -> io::Result<bool> {
        match self {
            Output::File { path, file } => {
                *file = open(path)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes a test can read, and that can be made to stall.
    #[derive(Clone, Default)]
    struct Shared2 {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Shared2 {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole() {
        let sink = Shared2::default();
        let w = LogWriter::builder()
            .flush_interval(Duration::from_millis(5))
            .writer(sink.clone())
            .unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let w = w.clone();
                s.spawn(move || {
                    for i in 0..1000 {
                        w.append(format!("thread {t} line {i}\n").as_bytes());
                    }
                });
            }
        });
        w.flush_blocking().unwrap();
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 8000);
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            assert!(line.starts_with("thread "), "{line}");
            assert!(seen.insert(line.to_owned()), "duplicate {line}");
        }
        let stats = w.stats();
        assert_eq!(stats.lines, 8000);
        assert_eq!(stats.dropped, 0);
        assert_eq!(stats.bytes as usize, text.len());
    }

    #[test]
    fn a_stalled_writer_drops_lines_instead_of_growing() {
        let sink = Shared2::default();
        let w = LogWriter::builder()
            .buffer(MIN_BUFFER)
            .flush_interval(Duration::from_millis(1))
            .writer(sink.clone())
            .unwrap();
        let line = [b'x'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        let stall = sink.gate.lock().unwrap();
        // Let the writer take a first batch and block in write().
        w.append(&line);
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..1000 {
            w.append(&line);
        }
        let stats = w.stats();
        assert!(stats.dropped > 0, "{stats:?}");
        // What was kept fits in the buffer.
        assert!(
            stats.lines as usize * line.len() <= 2 * MIN_BUFFER,
            "{stats:?}"
        );
        drop(stall);
        w.flush_blocking().unwrap();
        let written = sink.bytes.lock().unwrap().len();
        assert_eq!(written as u64, w.stats().lines * line.len() as u64);
    }

    #[test]
    fn reopen_follows_a_moved_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access_log");
        let w = LogWriter::file(&path).unwrap();
        w.append(b"one\n");
        w.flush_blocking().unwrap();
        std::fs::rename(&path, dir.path().join("access_log.1")).unwrap();
        w.append(b"two\n");
        w.reopen();
        w.flush_blocking().unwrap();
        w.append(b"three\n");
        w.flush_blocking().unwrap();
        let old = std::fs::read_to_string(dir.path().join("access_log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(new, "three\n");
        assert_eq!(w.stats().reopens, 1);
    }

    #[test]
    fn a_file_in_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = LogWriter::file(dir.path().join("no/such/dir/log")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn dropping_the_last_clone_writes_what_is_buffered() {
        let sink = Shared2::default();
        let w = LogWriter::builder()
            .flush_interval(Duration::from_secs(3600))
            .writer(sink.clone())
            .unwrap();
        w.append(b"last words\n");
        drop(w);
        let start = Instant::now();
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&sink.bytes.lock().unwrap()[..], b"last words\n");
    }
}
