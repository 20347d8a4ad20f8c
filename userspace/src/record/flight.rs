//! The flight recorder: the recording goes into short segments that rotate, and segments older
//! than the window (or past the disk bound) are deleted, so only the last minutes exist. When
//! a finding fires, the segments of the window before it are joined into one kept recording,
//! `DIR/<time>-<kind>.scope`, which keeps growing for a segment after the finding (the
//! evidence windows it asked for), then is closed. Kept recordings are what someone asked for
//! (an alert names them); nothing else outlives the window.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::sink::Recorder;
use crate::aggregate::lock;

#[derive(Debug, Clone)]
pub struct FlightSettings {
    pub dir: PathBuf,
    /// How much is kept before a finding (and at most on disk in segments).
    pub window: Duration,
    /// Most bytes the segments take on disk.
    pub max_bytes: u64,
    /// Most kept recordings in the directory (the oldest go first).
    pub max_kept: usize,
}

impl FlightSettings {
    /// A segment is a fifth of the window (between 5 s and a minute): the window is kept to
    /// within a segment, and a kept recording grows for one segment after its finding.
    pub fn segment(&self) -> Duration {
        (self.window / 5).clamp(Duration::from_secs(5), Duration::from_secs(60))
    }
}

/// Where the segments live, under the directory.
const SEGMENTS: &str = "segments";

struct Segment {
    path: PathBuf,
    started: Instant,
}

struct Keep {
    path: PathBuf,
    file: File,
    until: Instant,
}

struct State {
    settings: FlightSettings,
    recorder: Arc<Mutex<Recorder>>,
    /// Closed segments, oldest first, and the one being written.
    closed: VecDeque<Segment>,
    current: Segment,
    keeps: Vec<Keep>,
}

/// What the flight recorder did, for the metrics.
#[derive(Debug, Default)]
pub struct FlightStats {
    pub segment_bytes: AtomicU64,
    pub kept: AtomicU64,
    pub deleted_segments: AtomicU64,
    pub errors: AtomicU64,
}

pub struct Flight {
    state: Arc<Mutex<State>>,
    pub stats: Arc<FlightStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn segment_path(dir: &Path) -> PathBuf {
    let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    dir.join(SEGMENTS).join(format!("{ms}.scope"))
}

/// `20261205T071500Z`
fn stamp(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replace(['-', ':'], "")
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The bytes of a recording after its header (its blocks), to append to another recording.
fn blocks_of(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut fixed = [0u8; 14];
    f.read_exact(&mut fixed)?;
    let meta_len = u32::from_le_bytes(fixed[10..14].try_into().expect("4 bytes"));
    f.seek(SeekFrom::Start(14 + u64::from(meta_len)))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

impl Flight {
    /// Prepares the directory (segments a previous run left are older than any window now:
    /// they go) and starts the first segment: `create` makes the recorder writing to `path`.
    pub fn start(settings: FlightSettings, create: impl FnOnce(&Path) -> Result<Recorder>) -> Result<(Flight, Arc<Mutex<Recorder>>)> {
        let segments = settings.dir.join(SEGMENTS);
        std::fs::create_dir_all(&segments).with_context(|| format!("cannot create {}", segments.display()))?;
        for old in std::fs::read_dir(&segments)?.flatten() {
            let _ = std::fs::remove_file(old.path());
        }
        let current = Segment { path: segment_path(&settings.dir), started: Instant::now() };
        let recorder = Arc::new(Mutex::new(create(&current.path)?));
        let state =
            Arc::new(Mutex::new(State { settings, recorder: recorder.clone(), closed: VecDeque::new(), current, keeps: Vec::new() }));
        let stats = Arc::new(FlightStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stats, stop) = (state.clone(), stats.clone(), stop.clone());
            std::thread::Builder::new().name("scope-probe-flight".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let mut s = lock(&state);
                    if let Err(e) = s.tick(&stats) {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("scope-probe: warning: flight recorder: {e:#}");
                    }
                }
            })?
        };
        Ok((Flight { state, stats, stop, thread: Some(thread) }, recorder))
    }

    /// Keeps the window before now, and the segment after, for a finding of `kind`: returns the
    /// kept recording's path. A finding while another's recording is still growing shares it.
    pub fn keep(&self, kind: &str) -> Result<PathBuf> {
        let mut s = lock(&self.state);
        let now = Instant::now();
        let after = s.settings.segment();
        if let Some(k) = s.keeps.iter_mut().find(|k| k.until > now) {
            k.until = now + after;
            return Ok(k.path.clone());
        }
        // Close the segment being written: everything observed up to now is then on disk.
        s.rotate(&self.stats)?;
        let mut path = s.settings.dir.join(format!("{}-{kind}.scope", stamp(SystemTime::now())));
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = s.settings.dir.join(format!("{}-{kind}-{n}.scope", stamp(SystemTime::now())));
        }
        let mut file = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        // From the segment that holds the moment a window ago (or the oldest there is).
        let first = now.checked_sub(s.settings.window).and_then(|from| s.closed.iter().rposition(|seg| seg.started <= from)).unwrap_or(0);
        for (i, seg) in s.closed.range(first..).enumerate() {
            let bytes = if i == 0 { std::fs::read(&seg.path)? } else { blocks_of(&seg.path)? };
            file.write_all(&bytes)?;
        }
        file.flush()?;
        s.keeps.push(Keep { path: path.clone(), file, until: now + after });
        self.stats.kept.fetch_add(1, Ordering::Relaxed);
        s.bound_kept();
        Ok(path)
    }

    /// Stops rotating; kept recordings still growing get what was written, the segments go.
    pub fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut s = lock(&self.state);
        if !s.keeps.is_empty() {
            // The last segment, complete: rotate into a file that is deleted right after.
            s.rotate(&self.stats)?;
            s.keeps.clear();
        }
        let _ = std::fs::remove_dir_all(s.settings.dir.join(SEGMENTS));
        // A directory that kept nothing goes too (with --all, one per VM that came and went).
        let _ = std::fs::remove_dir(&s.settings.dir);
        Ok(())
    }
}

impl State {
    fn tick(&mut self, stats: &FlightStats) -> Result<()> {
        let segment = self.settings.segment();
        let too_big = size(&self.current.path) > self.settings.max_bytes / 6;
        if self.current.started.elapsed() >= segment || too_big {
            self.rotate(stats)?;
        }
        let total: u64 = self.closed.iter().chain(std::iter::once(&self.current)).map(|s| size(&s.path)).sum();
        stats.segment_bytes.store(total, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the current segment and starts the next; appends the closed one to the kept
    /// recordings still growing; deletes what the window and the bound no longer need.
    fn rotate(&mut self, stats: &FlightStats) -> Result<()> {
        let next = Segment { path: segment_path(&self.settings.dir), started: Instant::now() };
        let rotation = lock(&self.recorder).rotate(&next.path)?;
        rotation.wait()?;
        let closed = std::mem::replace(&mut self.current, next);
        let now = Instant::now();
        if !self.keeps.is_empty() {
            let blocks = blocks_of(&closed.path)?;
            for k in &mut self.keeps {
                k.file.write_all(&blocks).with_context(|| format!("writing {}", k.path.display()))?;
                k.file.sync_data().ok();
            }
            self.keeps.retain(|k| k.until > now);
        }
        self.closed.push_back(closed);
        // A closed segment is needed while the one after it started within the window.
        while self.closed.len() > 1 && now.duration_since(self.closed[1].started) > self.settings.window {
            self.delete_oldest(stats);
        }
        // The closed segments leave room for the one being written (it rotates at a sixth).
        let mut total: u64 = self.closed.iter().map(|s| size(&s.path)).sum();
        while total > self.settings.max_bytes - self.settings.max_bytes / 6 && !self.closed.is_empty() {
            total -= size(&self.closed[0].path);
            self.delete_oldest(stats);
        }
        stats.segment_bytes.store(total + size(&self.current.path), Ordering::Relaxed);
        Ok(())
    }

    fn delete_oldest(&mut self, stats: &FlightStats) {
        if let Some(old) = self.closed.pop_front() {
            let _ = std::fs::remove_file(&old.path);
            stats.deleted_segments.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// At most `max_kept` kept recordings: the oldest go (said on stderr).
    fn bound_kept(&self) {
        let Ok(dir) = std::fs::read_dir(&self.settings.dir) else {
            return;
        };
        let mut kept: Vec<PathBuf> = dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "scope")).collect();
        kept.sort();
        while kept.len() > self.settings.max_kept {
            let old = kept.remove(0);
            if self.keeps.iter().any(|k| k.path == old) {
                continue;
            }
            eprintln!(
                "scope-probe: flight recorder: more than {} kept recordings, deleting the oldest, {}",
                self.settings.max_kept,
                old.display()
            );
            let _ = std::fs::remove_file(old);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
