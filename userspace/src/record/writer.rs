//! Writing recordings on a thread of their own behind a bounded queue, so capture never waits
//! for the disk: what does not fit in the queue is dropped and counted (and the count is
//! recorded). Entries are gathered into blocks (256 KiB, or a second's worth) written whole,
//! so that a recorder killed at any moment leaves a file that reads up to its last block. A
//! new file can be started at any time ([`Writer::rotate`]): the flight recorder's segments.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::format::{self, Entry, Meta};

/// Entries waiting for the writer.
const QUEUE: usize = 65_536;
/// A block is written once this many raw bytes are gathered, or this long after its first.
const BLOCK_BYTES: usize = 256 << 10;
const BLOCK_EVERY: Duration = Duration::from_secs(1);

enum Msg {
    Entries(Vec<Entry>),
    /// Finish the current file and start `path` with these entries first (a segment's
    /// dictionary), then tell `done`.
    Rotate(PathBuf, Vec<Entry>, SyncSender<Result<()>>),
}

/// What the writer did, for progress lines and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub entries: AtomicU64,
    pub dropped: AtomicU64,
    pub bytes: AtomicU64,
    pub blocks: AtomicU64,
    /// Why the writer stopped early (a full disk, say): the recording ends there.
    pub failed: std::sync::Mutex<Option<String>>,
}

impl WriterStats {
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A rotation under way.
pub struct Rotation(Receiver<Result<()>>);

impl Rotation {
    /// Waits until the old file is complete and the new one started.
    pub fn wait(self) -> Result<()> {
        self.0.recv().context("the recording's writer stopped")?
    }
}

pub struct Writer {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<Result<()>>>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// Creates `path` (its header written at once) and the writer thread.
    pub fn create(path: &Path, meta: Meta) -> Result<Writer> {
        let file = open(path, &meta)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        stats.bytes.store(format::header(&meta).len() as u64, Ordering::Relaxed);
        let thread = {
            let stats = stats.clone();
            std::thread::Builder::new().name("scope-probe-record".into()).spawn(move || {
                let r = run(file, meta, rx, &stats);
                if let Err(e) = &r {
                    *stats.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
                }
                r
            })?
        };
        Ok(Writer { tx: Some(tx), thread: Some(thread), stats })
    }

    /// Queues entries (never blocks: a full queue, or a writer that failed, drops them,
    /// counted).
    pub fn push(&self, entries: Vec<Entry>) {
        let n = entries.len() as u64;
        if let Some(tx) = &self.tx
            && tx.try_send(Msg::Entries(entries)).is_err()
        {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Finishes the current file and continues in `path`, which starts with `first`. The
    /// returned [`Rotation`] says when that is done.
    pub fn rotate(&self, path: &Path, first: Vec<Entry>) -> Result<Rotation> {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let tx = self.tx.as_ref().context("the recording is closed")?;
        tx.send(Msg::Rotate(path.to_owned(), first, done_tx)).ok().context("the recording's writer stopped")?;
        Ok(Rotation(done_rx))
    }

    /// Writes what is queued and closes the file.
    pub fn finish(&mut self) -> Result<()> {
        self.tx.take();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("the recording's writer panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(path: &Path, meta: &Meta) -> Result<File> {
    let mut file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(&format::header(meta)).with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

fn run(mut file: File, mut meta: Meta, rx: Receiver<Msg>, stats: &WriterStats) -> Result<()> {
    let mut raw: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + 4096);
    let mut first_at: Option<Instant> = None;
    let mut dropped_recorded = 0;
    let flush = |file: &mut File, raw: &mut Vec<u8>| -> Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        let block = format::block(raw);
        let whole = file.stream_position().context("writing the recording")?;
        if let Err(e) = file.write_all(&block) {
            // A block cut short (a full disk) is taken back: the file ends with whole blocks.
            let _ = file.set_len(whole);
            return Err(e).context("writing the recording");
        }
        stats.bytes.fetch_add(block.len() as u64, Ordering::Relaxed);
        stats.blocks.fetch_add(1, Ordering::Relaxed);
        raw.clear();
        Ok(())
    };
    loop {
        let wait = first_at.map_or(BLOCK_EVERY, |t| BLOCK_EVERY.saturating_sub(t.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(Msg::Entries(entries)) => {
                // Drops since the last block are recorded too.
                let dropped = stats.dropped.load(Ordering::Relaxed);
                if dropped > dropped_recorded {
                    format::encode_entry(&Entry::Lost { ts: crate::event::now_ns(), entries: dropped - dropped_recorded }, &mut raw);
                    dropped_recorded = dropped;
                }
                for e in &entries {
                    format::encode_entry(e, &mut raw);
                }
                stats.entries.fetch_add(entries.len() as u64, Ordering::Relaxed);
                first_at.get_or_insert_with(Instant::now);
                if raw.len() >= BLOCK_BYTES {
                    flush(&mut file, &mut raw)?;
                    first_at = None;
                }
            }
            Ok(Msg::Rotate(path, first, done)) => {
                let r = (|| -> Result<()> {
                    flush(&mut file, &mut raw)?;
                    file.sync_all().ok();
                    // Times in the new file count from its own start.
                    meta.started_unix =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                    meta.started_monotonic_ns = crate::event::now_ns();
                    file = open(&path, &meta)?;
                    for e in &first {
                        format::encode_entry(e, &mut raw);
                    }
                    Ok(())
                })();
                first_at = Some(Instant::now());
                let _ = done.send(r);
            }
            Err(RecvTimeoutError::Timeout) => {
                flush(&mut file, &mut raw)?;
                first_at = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut file, &mut raw)?;
                file.sync_all().ok();
                return Ok(());
            }
        }
    }
}
