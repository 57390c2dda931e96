//! Log output: text or JSON lines, filtered by `RUST_LOG` (default `info`), written in batches
//! by one background thread so that no request pays a `write` system call for its log line.
//!
//! A line goes into a bounded in-memory buffer (a copy under a briefly held lock, never I/O).
//! The writer thread sleeps until a line arrives, then writes everything waiting once
//! [`FLUSH_BYTES`] have accumulated or [`FLUSH_INTERVAL`] has passed, whichever is first: one
//! wake-up and one `write` per batch, not per line. When [`MAX_BUFFERED`] bytes are unwritten
//! (the output is stalled), new lines are dropped and counted ([`dropped_lines`]), and once
//! writing resumes one warning says how many were lost. [`LogGuard`] writes the rest on exit.
//! On a crash the lines of the last [`FLUSH_INTERVAL`] are lost, never more than
//! [`MAX_BUFFERED`] bytes: nginx's `access_log ... buffer=64k flush=100ms` makes the same trade.
//!
//! The access log's line, one per request, skips tracing: [`access`] formats it by hand straight
//! into the buffer, byte for byte as the subscriber would (`logging/access_line.rs`), when the installed
//! subscriber would write it plainly (see [`install`]); otherwise it goes through tracing.

mod access_line;

use std::cell::Cell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracing::level_filters::LevelFilter;
use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub use access_line::{AccessLine, TARGET as ACCESS_TARGET};

/// Write a batch once this much is waiting: one `write` per ~64 KiB instead of one per line.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// Write a batch at the latest this long after the writer woke for its first line, so a
/// quiet server's lines still appear promptly and a crash loses at most this much.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Most bytes held unwritten (waiting plus being written); later lines are dropped. 1 MiB is
/// about 4,000 JSON access lines: ~80 ms of output stall at 50,000 requests per second.
pub const MAX_BUFFERED: usize = 1024 * 1024;

/// How long shutdown waits for the last lines to be written before giving up on a stalled
/// output (a full pipe nobody reads must not keep the process from exiting).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// When and how much the writer thread writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLimits {
    /// Bytes waiting that start a write at once.
    pub flush_bytes: usize,
    /// Longest a waiting line stays unwritten while the output keeps up.
    pub flush_interval: Duration,
    /// Most bytes held unwritten; lines beyond are dropped and counted.
    pub max_buffered: usize,
}

impl Default for BufferLimits {
    fn default() -> Self {
        Self {
            flush_bytes: FLUSH_BYTES,
            flush_interval: FLUSH_INTERVAL,
            max_buffered: MAX_BUFFERED,
        }
    }
}

/// Why the log writer could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(#[source] io::Error),
    /// A global subscriber is already installed (a second `install` in one process).
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

/// What the writer thread is doing, so producers wake it only when it needs waking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// Asleep until a line arrives.
    Idle,
    /// A batch is open: asleep until the interval ends or `flush_bytes` are waiting.
    Collecting,
    /// Writing; it looks at the buffer again when done.
    Writing,
}

#[derive(Debug)]
struct State {
    /// Lines not yet handed to the writer thread.
    pending: Vec<u8>,
    /// Bytes the writer thread is writing now.
    in_flight: usize,
    writer: Writer,
    /// Flushes asked for and flushes done (generation counters).
    flush_asked: u64,
    flush_done: u64,
    shutdown: bool,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Wakes callers waiting for a flush or for the writer to stop.
    done: Condvar,
    /// Lines dropped since start.
    dropped: AtomicU64,
    /// Lines dropped and not yet reported by a warning.
    unreported: AtomicU64,
    /// Where the writer thread sends its own warnings (weak: the subscriber owns this buffer).
    report_to: OnceLock<tracing::dispatcher::WeakDispatch>,
    limits: BufferLimits,
}

thread_local! {
    /// Set on the writer thread: its one warning per batch may exceed the bound, so a drop
    /// count is never itself dropped.
    static IS_WRITER: Cell<bool> = const { Cell::new(false) };
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the bytes are still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one whole line, or drops and counts it when the bound would be exceeded.
    fn push(&self, line: &[u8]) {
        let exempt = IS_WRITER.get();
        self.push_with(exempt, |pending| pending.extend_from_slice(line));
    }

    /// Appends the line `write` appends (straight into the buffer: no copy), or takes it back and
    /// counts it as dropped when it went over the bound (unless `exempt`).
    fn push_with(&self, exempt: bool, write: impl FnOnce(&mut Vec<u8>)) {
        let mut state = self.lock();
        let before = state.pending.len();
        write(&mut state.pending);
        if state.pending.len() + state.in_flight > self.limits.max_buffered && !exempt {
            state.pending.truncate(before);
            drop(state);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.unreported.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // One wake-up per batch: the first line, or crossing the size threshold.
        let wake = match state.writer {
            Writer::Idle => true,
            Writer::Collecting => {
                before < self.limits.flush_bytes && state.pending.len() >= self.limits.flush_bytes
            }
            Writer::Writing => false,
        };
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Asks the writer thread to write everything logged so far; waits at most `wait`.
    fn flush(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        if state.stopped {
            return state.pending.is_empty();
        }
        state.flush_asked += 1;
        let target = state.flush_asked;
        self.wake.notify_one();
        while state.flush_done < target && !state.stopped {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .done
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.flush_done >= target
    }

    fn wants_write(&self, state: &State) -> bool {
        state.pending.len() >= self.limits.flush_bytes
            || state.shutdown
            || state.flush_asked > state.flush_done
    }

    /// The writer thread: sleep, collect one batch, write it, report drops; until shutdown.
    fn run(&self, mut out: impl Write) {
        IS_WRITER.set(true);
        let mut batch = Vec::new();
        let mut state = self.lock();
        loop {
            while state.pending.is_empty() && !self.wants_write(&state) {
                state.writer = Writer::Idle;
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.writer = Writer::Collecting;
            let deadline = Instant::now() + self.limits.flush_interval;
            while !self.wants_write(&state) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = self
                    .wake
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.writer = Writer::Writing;
            std::mem::swap(&mut state.pending, &mut batch);
            state.in_flight = batch.len();
            let flushed = state.flush_asked;
            drop(state);

            let failure = write_batch(&mut out, &batch).err();
            let lost = match failure {
                // The batch is gone either way; count its lines as dropped.
                Some(_) => bytecount_lines(&batch),
                None => 0,
            };
            batch.clear();
            if lost > 0 {
                self.dropped.fetch_add(lost, Ordering::Relaxed);
            }
            // Past a burst, give back memory beyond one ordinary batch.
            batch.shrink_to(self.limits.flush_bytes);
            self.report(failure, lost);

            state = self.lock();
            state.in_flight = 0;
            state.flush_done = state.flush_done.max(flushed);
            self.done.notify_all();
            if state.shutdown && state.pending.is_empty() {
                break;
            }
        }
        state.stopped = true;
        state.writer = Writer::Idle;
        self.done.notify_all();
    }

    /// One warning for lines dropped since the last one, through the installed subscriber.
    fn report(&self, failure: Option<io::Error>, lost: u64) {
        let dropped = self.unreported.swap(0, Ordering::Relaxed);
        if dropped == 0 && failure.is_none() {
            return;
        }
        let Some(dispatch) = self.report_to.get().and_then(|d| d.upgrade()) else {
            return;
        };
        tracing::dispatcher::with_default(&dispatch, || match failure {
            Some(error) => tracing::warn!(
                target: "gatehouse::log",
                %error,
                lost,
                dropped,
                "log output failed; lines lost"
            ),
            None => tracing::warn!(
                target: "gatehouse::log",
                dropped,
                "log buffer was full; lines dropped"
            ),
        });
    }
}

fn write_batch(out: &mut impl Write, batch: &[u8]) -> io::Result<()> {
    if !batch.is_empty() {
        out.write_all(batch)?;
    }
    out.flush()
}

fn bytecount_lines(batch: &[u8]) -> u64 {
    batch.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The buffered log output: a [`MakeWriter`] for tracing-subscriber's fmt layer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogBuffer {
    shared: Arc<Shared>,
}

impl LogBuffer {
    /// Starts the writer thread that writes batches to `out`. Dropping the guard writes the rest
    /// and stops the thread.
    pub fn new(
        out: impl Write + Send + 'static,
        limits: BufferLimits,
    ) -> Result<(Self, LogGuard), LogError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::with_capacity(limits.flush_bytes.min(limits.max_buffered)),
                in_flight: 0,
                writer: Writer::Idle,
                flush_asked: 0,
                flush_done: 0,
                shutdown: false,
                stopped: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            dropped: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            report_to: OnceLock::new(),
            limits,
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("gatehouse-log".to_owned())
            .spawn(move || writer.run(out))
            .map_err(LogError::Thread)?;
        let buffer = Self { shared };
        let guard = LogGuard {
            buffer: Some(buffer.clone()),
            thread: Some(thread),
        };
        Ok((buffer, guard))
    }

    /// Lines dropped because the buffer was full or the output failed, since start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes everything logged before this call; waits at most `wait`. False if it timed out.
    pub fn flush(&self, wait: Duration) -> bool {
        self.shared.flush(wait)
    }

    /// Sends the writer thread's own warnings (the drop count) through `dispatch`.
    pub fn report_to(&self, dispatch: &Dispatch) {
        let _ = self.shared.report_to.set(dispatch.downgrade());
    }

    /// Appends `line` as `format`'s subscriber would write it, formatted straight into the
    /// buffer under its lock (a few hundred bytes, no allocation); dropped and counted like any
    /// line when the buffer is full.
    pub fn access(&self, format: LogFormat, line: &AccessLine<'_>) {
        let now = SystemTime::now();
        self.shared
            .push_with(false, |pending| line.write(format, now, pending));
    }
}

/// One `write` per formatted event: tracing-subscriber's fmt layer formats an event whole and
/// writes it once, so a line is kept or dropped whole.
#[derive(Debug)]
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing is the writer thread's job; a request never waits for the output.
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

/// Writes the remaining lines and stops the writer thread when dropped (at exit).
#[derive(Debug)]
#[must_use = "dropping the guard stops the log writer; keep it until the process exits"]
pub struct LogGuard {
    buffer: Option<LogBuffer>,
    thread: Option<JoinHandle<()>>,
}

impl LogGuard {
    fn inert() -> Self {
        Self {
            buffer: None,
            thread: None,
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        let shared = &buffer.shared;
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut state = shared.lock();
        state.shutdown = true;
        shared.wake.notify_one();
        while !state.stopped {
            let now = Instant::now();
            if now >= deadline {
                // The output is stalled: leave the thread behind rather than hang the exit.
                return;
            }
            state = shared
                .done
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The buffer the global subscriber writes to, for [`dropped_lines`] and [`flush`].
static INSTALLED: OnceLock<LogBuffer> = OnceLock::new();

/// Where [`access`] formats lines by hand: the installed buffer and format, set by [`install`]
/// when its subscriber would write the line exactly as [`AccessLine::write`] does.
static ACCESS: OnceLock<(LogBuffer, LogFormat)> = OnceLock::new();

/// Logs one request's access line, when the filter lets `gatehouse::access` log at INFO (a
/// cached per-callsite check, the filter being fixed from start). With gatehouse's subscriber
/// installed the line is formatted by hand into its buffer; under any other subscriber it is a
/// tracing event with the same fields.
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    match ACCESS.get() {
        Some((buffer, format)) => buffer.access(*format, line),
        None => line.emit(),
    }
}

/// Whether the subscriber `install` builds writes the access line exactly as
/// [`AccessLine::write`] does. Not when the text is coloured, and not when a span could be
/// current: the formatters write the current span's name and fields into the line. gatehouse's
/// only span, a connection's, is at DEBUG, so a filter whose most verbose level is INFO and
/// that has no span directives (`[...]`, which match inside spans whatever their level) rules
/// spans out. The filter is fixed from start, so this is decided once.
fn writes_plain_access_lines(format: LogFormat, ansi: bool, filter: &EnvFilter) -> bool {
    let plain = matches!(format, LogFormat::Json) || !ansi;
    let no_spans = filter
        .max_level_hint()
        .is_some_and(|level| level <= LevelFilter::INFO)
        && !filter.to_string().contains('[');
    plain && no_spans
}

/// Lines the installed log dropped since start (buffer full or output failed); 0 if none is
/// installed.
pub fn dropped_lines() -> u64 {
    INSTALLED.get().map_or(0, LogBuffer::dropped)
}

/// Writes every line logged so far (waits at most a few seconds on a stalled output).
pub fn flush() {
    if let Some(buffer) = INSTALLED.get() {
        buffer.flush(SHUTDOWN_WAIT);
    }
}

type Builder<W> = tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    EnvFilter,
    W,
>;

/// The settings both formats share.
fn builder<W>(writer: W, ansi: bool, filter: EnvFilter) -> Builder<W>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
}

/// The subscriber for `format`, writing to `writer` (for a scoped default, as in tests).
pub fn subscriber<W>(format: LogFormat, writer: W, ansi: bool, filter: EnvFilter) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = builder(writer, ansi, filter);
    match format {
        LogFormat::Text => Dispatch::new(builder.finish()),
        LogFormat::Json => Dispatch::new(builder.json().flatten_event(true).finish()),
    }
}

/// Sets the global subscriber (and routes the `log` crate's records, as rustls emits, to it).
fn set_global<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
    filter: EnvFilter,
) -> Result<(), LogError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = builder(writer, ansi, filter);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|_| LogError::AlreadyInstalled)
}

/// `RUST_LOG`, or `info` when it is unset or invalid.
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber writing batches to `out`. Keep the guard until exit: dropping it writes the rest.
pub fn install(
    format: LogFormat,
    out: impl Write + Send + 'static,
    ansi: bool,
    filter: EnvFilter,
    limits: BufferLimits,
) -> Result<LogGuard, LogError> {
    let (buffer, guard) = LogBuffer::new(out, limits)?;
    let by_hand = writes_plain_access_lines(format, ansi, &filter);
    set_global(format, buffer.clone(), ansi, filter)?;
    // On this thread (no scoped default) this is the global subscriber just installed.
    tracing::dispatcher::get_default(|dispatch| buffer.report_to(dispatch));
    if by_hand {
        let _ = ACCESS.set((buffer.clone(), format));
    }
    let _ = INSTALLED.set(buffer);
    Ok(guard)
}

/// Installs the global subscriber on stdout; a second call (tests) is a no-op. Keep the guard
/// until exit: dropping it writes the lines still buffered.
pub fn init(format: LogFormat) -> LogGuard {
    // Colour only on a terminal: log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match install(
        format,
        std::io::stdout(),
        ansi,
        env_filter(),
        BufferLimits::default(),
    ) {
        Ok(guard) => guard,
        Err(LogError::AlreadyInstalled) => LogGuard::inert(),
        Err(error @ LogError::Thread(_)) => {
            // Unbuffered logging beats none.
            eprintln!("gatehouse: {error}; logging without a buffer");
            let _ = set_global(format, std::io::stdout, ansi, env_filter());
            LogGuard::inert()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Records every `write` call as one batch; optionally holds writes until opened.
    #[derive(Clone, Default)]
    struct Sink {
        batches: Arc<Mutex<Vec<Vec<u8>>>>,
        /// `Some(false)`: writes wait; `Some(true)` or `None`: writes pass.
        gate: Arc<(Mutex<Option<bool>>, Condvar)>,
        /// Writes that have started (including one waiting at the gate).
        entered: Arc<(Mutex<usize>, Condvar)>,
        fail: bool,
    }

    const WAIT: Duration = Duration::from_secs(30);

    impl Sink {
        fn gated() -> Self {
            let sink = Self::default();
            *sink.gate.0.lock().unwrap() = Some(false);
            sink
        }

        fn open(&self) {
            *self.gate.0.lock().unwrap() = Some(true);
            self.gate.1.notify_all();
        }

        fn batches(&self) -> Vec<Vec<u8>> {
            self.batches.lock().unwrap().clone()
        }

        fn text(&self) -> String {
            String::from_utf8(self.batches().concat()).unwrap()
        }

        /// Waits (bounded) until `n` writes have completed.
        fn wait_written(&self, n: usize) {
            let deadline = Instant::now() + WAIT;
            while self.batches().len() < n {
                assert!(Instant::now() < deadline, "nothing was written");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        /// Waits (bounded) until `n` writes have started.
        fn wait_entered(&self, n: usize) {
            let (lock, cv) = &*self.entered;
            let (count, timeout) = cv
                .wait_timeout_while(lock.lock().unwrap(), WAIT, |c| *c < n)
                .unwrap();
            assert!(
                !timeout.timed_out(),
                "writer never wrote ({} < {n})",
                *count
            );
        }
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            {
                let (lock, cv) = &*self.entered;
                *lock.lock().unwrap() += 1;
                cv.notify_all();
            }
            let (lock, cv) = &*self.gate;
            drop(
                cv.wait_while(lock.lock().unwrap(), |g| *g == Some(false))
                    .unwrap(),
            );
            if self.fail {
                return Err(io::Error::other("disk full"));
            }
            self.batches.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn limits(flush_bytes: usize, flush_interval: Duration, max_buffered: usize) -> BufferLimits {
        BufferLimits {
            flush_bytes,
            flush_interval,
            max_buffered,
        }
    }

    const NEVER: Duration = Duration::from_secs(3600);

    fn line(i: usize) -> String {
        format!("line {i:05} {}\n", "x".repeat(80))
    }

    fn log(buffer: &LogBuffer, text: &str) {
        buffer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_in_order_in_batches_of_the_threshold() {
        let sink = Sink::default();
        let (buffer, guard) = LogBuffer::new(sink.clone(), limits(1000, NEVER, 1 << 20)).unwrap();
        let expected: String = (0..1000).map(line).collect();
        for i in 0..1000 {
            log(&buffer, &line(i));
        }
        assert!(buffer.flush(WAIT));
        assert_eq!(sink.text(), expected, "every line, in order");
        let batches = sink.batches();
        // Written by size alone (the interval is an hour): far fewer writes than lines, each
        // but the last at least the threshold, each made of whole lines.
        assert!(
            batches.len() <= expected.len() / 1000 + 1,
            "{} writes",
            batches.len()
        );
        for batch in &batches[..batches.len() - 1] {
            assert!(batch.len() >= 1000, "a batch of {} bytes", batch.len());
        }
        assert!(batches.iter().all(|b| b.ends_with(b"\n")));
        assert_eq!(buffer.dropped(), 0, "nothing is lost below the bound");
        drop(guard);
    }

    #[test]
    fn a_line_waits_for_the_threshold_the_interval_or_a_flush() {
        let sink = Sink::default();
        let (buffer, _guard) =
            LogBuffer::new(sink.clone(), limits(1 << 20, NEVER, 1 << 20)).unwrap();
        for i in 0..10 {
            log(&buffer, &line(i));
        }
        // Below the threshold, within the interval and unflushed: no write has happened.
        assert!(sink.batches().is_empty());
        assert!(buffer.flush(WAIT));
        assert_eq!(sink.batches().len(), 1, "one write for the ten lines");
        assert_eq!(sink.text(), (0..10).map(line).collect::<String>());
    }

    #[test]
    fn the_interval_writes_without_a_flush() {
        let sink = Sink::default();
        let (buffer, _guard) = LogBuffer::new(
            sink.clone(),
            limits(1 << 20, Duration::from_millis(20), 1 << 20),
        )
        .unwrap();
        log(&buffer, &line(1));
        sink.wait_written(1);
        assert_eq!(sink.text(), line(1));
    }

    #[test]
    fn over_the_bound_lines_are_dropped_and_counted_and_logging_never_blocks() {
        let sink = Sink::gated();
        let len = line(0).len();
        // Room for ten lines unwritten; every line is written at once (threshold one line).
        let (buffer, guard) = LogBuffer::new(sink.clone(), limits(len, NEVER, 10 * len)).unwrap();
        log(&buffer, &line(0));
        // The writer holds line 0 and is stuck in write(): the output has stalled.
        sink.wait_entered(1);
        let (done, finished) = mpsc::channel();
        let producer = buffer.clone();
        std::thread::spawn(move || {
            for i in 1..=50 {
                log(&producer, &line(i));
            }
            let _ = done.send(());
        });
        // Fifty lines logged while the output is still stalled: logging did not wait for it.
        finished
            .recv_timeout(WAIT)
            .expect("logging blocked on a stalled output");
        assert!(sink.batches().is_empty(), "the output is still stalled");
        // Line 0 in flight plus lines 1..=9 waiting fill the bound; 10..=50 are dropped.
        assert_eq!(buffer.dropped(), 41);
        sink.open();
        assert!(buffer.flush(WAIT));
        assert_eq!(sink.text(), (0..10).map(line).collect::<String>());
        drop(guard);
    }

    #[test]
    fn dropping_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let (buffer, guard) =
            LogBuffer::new(sink.clone(), limits(1 << 20, NEVER, 1 << 20)).unwrap();
        for i in 0..100 {
            log(&buffer, &line(i));
        }
        assert!(sink.batches().is_empty());
        drop(guard);
        assert_eq!(sink.text(), (0..100).map(line).collect::<String>());
        assert!(buffer.shared.lock().stopped, "the writer thread ended");
    }

    #[test]
    fn a_failing_output_counts_its_lines_as_dropped() {
        let sink = Sink {
            fail: true,
            ..Sink::default()
        };
        let (buffer, _guard) = LogBuffer::new(sink, limits(1 << 20, NEVER, 1 << 20)).unwrap();
        for i in 0..7 {
            log(&buffer, &line(i));
        }
        assert!(buffer.flush(WAIT));
        assert_eq!(buffer.dropped(), 7);
    }

    /// Both formats go through the buffer, and after a stall one warning gives the drop count.
    fn drop_report(format: LogFormat) -> (String, u64) {
        let sink = Sink::gated();
        let (buffer, guard) = LogBuffer::new(sink.clone(), limits(1, NEVER, 2048)).unwrap();
        let dispatch = subscriber(format, buffer.clone(), false, EnvFilter::new("info"));
        buffer.report_to(&dispatch);
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(n = 0, "first");
            sink.wait_entered(1);
            for n in 1..=100 {
                tracing::info!(n, "stalled");
            }
        });
        let dropped = buffer.dropped();
        assert!(dropped > 0, "the bound was reached");
        sink.open();
        // The first flush writes what waited and queues the warning; the second writes it.
        assert!(buffer.flush(WAIT));
        assert!(buffer.flush(WAIT));
        drop(guard);
        (sink.text(), dropped)
    }

    #[test]
    fn json_lines_and_the_drop_warning() {
        let (text, dropped) = drop_report(LogFormat::Json);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let ns: Vec<u64> = lines.iter().filter_map(|l| l["n"].as_u64()).collect();
        assert_eq!(
            ns,
            (0..ns.len() as u64).collect::<Vec<_>>(),
            "in order, whole"
        );
        assert_eq!(
            ns.len() as u64 + dropped,
            101,
            "each line written or counted"
        );
        let warning = lines.last().unwrap();
        assert_eq!(warning["message"], "log buffer was full; lines dropped");
        assert_eq!(warning["level"], "WARN");
        assert_eq!(warning["dropped"].as_u64(), Some(dropped));
    }

    const HOSTILE_URI: &str = "/validate/\"x\"\\y{}ü€😀?timeout=10s&q=\\z|^`&n=ü%00";

    /// Access lines as tracing-subscriber writes them (the event) and as [`LogBuffer::access`]
    /// formats them by hand, in pairs, for the same fields: hostile uri and user strings,
    /// IPv4 and IPv6 peers, no peer or user, HTTP/1.1 and h2 (whose uri has scheme and authority).
    fn access_pairs(format: LogFormat) -> Vec<(String, String)> {
        let sink = Sink::default();
        let (buffer, guard) =
            LogBuffer::new(sink.clone(), limits(1 << 20, NEVER, 1 << 20)).unwrap();
        let dispatch = subscriber(format, buffer.clone(), false, EnvFilter::new("info"));
        // What http accepts unencoded: quotes and braces in the path, backslashes in both, and
        // UTF-8 (control bytes it refuses).
        let hostile: http::Uri = HOSTILE_URI.parse().unwrap();
        let h2: http::Uri = "https://127.0.0.1:8443/image_policy".parse().unwrap();
        let plain: http::Uri = "/healthz".parse().unwrap();
        let custom = http::Method::from_bytes(b"PURGE").unwrap();
        let user = "octo\"cat\\\n\r\t\u{0}\u{1b}[31m\u{7f}\u{85}ü'😀";
        let lines = [
            AccessLine {
                method: &http::Method::POST,
                uri: &hostile,
                status: 200,
                latency_us: 87,
                version: http::Version::HTTP_11,
                peer: Some(([127, 0, 0, 1], 40312).into()),
                user: Some(user),
            },
            AccessLine {
                method: &http::Method::POST,
                uri: &h2,
                status: 504,
                latency_us: 10_000_123,
                version: http::Version::HTTP_2,
                peer: Some("[fe80::1%2]:443".parse().unwrap()),
                user: Some("github:octocat"),
            },
            AccessLine {
                method: &custom,
                uri: &plain,
                status: 404,
                latency_us: 0,
                version: http::Version::HTTP_10,
                peer: None,
                user: None,
            },
        ];
        for line in &lines {
            tracing::dispatcher::with_default(&dispatch, || line.emit());
            buffer.access(format, line);
        }
        assert!(buffer.flush(WAIT));
        drop(guard);
        let text = sink.text();
        let written: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(written.len(), 2 * lines.len(), "{text}");
        written
            .chunks(2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect()
    }

    /// The timestamp's position in a line of `format`, and a check of its shape.
    fn split_timestamp(format: LogFormat, line: &str) -> (String, String) {
        let at = match format {
            LogFormat::Json => "{\"timestamp\":\"".len(),
            LogFormat::Text => 0,
        };
        let stamp = &line[at..at + 27];
        let shape = stamp.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'.',
            26 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
        assert!(shape, "not a timestamp: {stamp} in {line}");
        (
            stamp.to_owned(),
            format!("{}{}", &line[..at], &line[at + 27..]),
        )
    }

    fn hand_written_access_lines_equal_tracing_subscribers(format: LogFormat) {
        for (by_tracing, by_hand) in access_pairs(format) {
            let (when_tracing, tracing_rest) = split_timestamp(format, &by_tracing);
            let (when_hand, hand_rest) = split_timestamp(format, &by_hand);
            assert_eq!(hand_rest, tracing_rest);
            // Stamped just after tracing's, so never earlier (the strings sort as times do).
            assert!(when_hand >= when_tracing, "{when_hand} < {when_tracing}");
        }
    }

    #[test]
    fn json_access_lines_are_tracing_subscribers_byte_for_byte() {
        hand_written_access_lines_equal_tracing_subscribers(LogFormat::Json);
        // And parse as JSON with the hostile strings intact.
        let (_, line) = &access_pairs(LogFormat::Json)[0];
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["uri"], HOSTILE_URI);
        assert_eq!(
            value["user"],
            "octo\"cat\\\n\r\t\u{0}\u{1b}[31m\u{7f}\u{85}ü'😀"
        );
    }

    #[test]
    fn text_access_lines_are_tracing_subscribers_byte_for_byte() {
        hand_written_access_lines_equal_tracing_subscribers(LogFormat::Text);
    }

    #[test]
    fn access_lines_go_by_hand_only_when_the_subscriber_writes_them_plainly() {
        let info = EnvFilter::new("info");
        assert!(writes_plain_access_lines(LogFormat::Json, false, &info));
        assert!(writes_plain_access_lines(LogFormat::Json, true, &info));
        assert!(writes_plain_access_lines(LogFormat::Text, false, &info));
        // Colours: the subscriber's own.
        assert!(!writes_plain_access_lines(LogFormat::Text, true, &info));
        assert!(writes_plain_access_lines(
            LogFormat::Json,
            false,
            &EnvFilter::new("warn,gatehouse::access=off")
        ));
        // A connection's span (DEBUG) may be current, and the subscriber would write it.
        for spans in [
            "debug",
            "info,gatehouse::listener=debug",
            "info,[conn]=info",
            "trace",
        ] {
            assert!(
                !writes_plain_access_lines(LogFormat::Json, false, &EnvFilter::new(spans)),
                "{spans}"
            );
        }
    }

    #[test]
    fn text_lines_and_the_drop_warning() {
        let (text, dropped) = drop_report(LogFormat::Text);
        let lines: Vec<&str> = text.lines().collect();
        let written = lines.iter().filter(|l| l.contains(" n=")).count() as u64;
        assert!(lines[0].contains("first n=0"), "{}", lines[0]);
        assert_eq!(written + dropped, 101);
        let warning = lines.last().unwrap();
        assert!(warning.contains("WARN"), "{warning}");
        assert!(
            warning.contains(&format!(
                "log buffer was full; lines dropped dropped={dropped}"
            )),
            "{warning}"
        );
    }
}
