//! The on-disk spool of change events, read from the source from T0 on, while the copy runs.
//!
//! Reading changes never pauses, so a copy that outlasts the source's oplog window loses
//! nothing: history is kept here, bounded by disk rather than memory. The spool is a directory
//! of segment files (`segment-000001.bson`, ...), each a sequence of raw BSON change events
//! exactly as the server sent them. A segment is closed once it passes the size limit.
//!
//! Durability contract: [`SpoolWriter::checkpoint`] fsyncs and returns a [`SpoolPosition`];
//! the lockfile records it together with the resume token of the last event written. On
//! reopen, anything past the recorded position (written after the last checkpoint, before a
//! crash) is cut off, and the change stream resumes from the recorded token: no event is lost
//! or spooled twice.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bson::{RawDocument, RawDocumentBuf};

use crate::state::SpoolPosition;

/// Segments are closed after this many bytes (a segment may exceed it by one event).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The largest event accepted when reading the spool back: a 16 MiB document plus the event's
/// own fields. Anything larger means the file is damaged.
const MAX_EVENT_BYTES: usize = 17 * 1024 * 1024;

/// Events are written to a segment file in chunks of up to this many bytes.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// A spool directory next to the lockfile: `migration.lock` → `migration.spool/`.
pub fn spool_dir(lockfile: &Path) -> PathBuf {
    let stem = lockfile
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "migration".to_owned());
    lockfile.with_file_name(format!("{stem}.spool"))
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("segment-{segment:06}.bson"))
}

/// Segment numbers present in the directory, ascending.
pub fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".bson"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Appends events to the spool. Events are buffered in memory between checkpoints (one write
/// per buffer, not one per event): only a checkpointed position is durable anyway.
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    segment: u64,
    file: BufWriter<File>,
    offset: u64,
    max_segment_bytes: u64,
    /// The position the last checkpoint (or the opening) made durable.
    durable: SpoolPosition,
}

impl SpoolWriter {
    /// Opens the spool for appending at `at`, the last durable position: later bytes of that
    /// segment and later segments (written after the last checkpoint) are removed.
    pub fn open(dir: &Path, at: SpoolPosition, max_segment_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let segment = at.segment.max(1);
        for later in segments(dir)?.into_iter().filter(|s| *s > segment) {
            std::fs::remove_file(segment_path(dir, later))?;
        }
        let path = segment_path(dir, segment);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        let offset = if at.segment == 0 { 0 } else { at.offset };
        let len = file.metadata()?.len();
        if len < offset {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "spool segment {} is {len} bytes but the lockfile says {offset} were written: the spool is damaged",
                    path.display()
                ),
            ));
        }
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        crate::atomic_file::sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment,
            file: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            offset,
            max_segment_bytes,
            // What is before the opening position was made durable by an earlier run.
            durable: SpoolPosition { segment, offset },
        })
    }

    /// Appends one event (not yet durable).
    pub fn append(&mut self, event: &RawDocument) -> std::io::Result<()> {
        if self.offset >= self.max_segment_bytes {
            self.rotate()?;
        }
        let bytes = event.as_bytes();
        self.file.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        self.segment += 1;
        let next = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(segment_path(&self.dir, self.segment))?;
        self.file = BufWriter::with_capacity(WRITE_BUFFER_BYTES, next);
        self.offset = 0;
        crate::atomic_file::sync_dir(&self.dir)
    }

    /// Makes everything appended so far durable and returns the position after it. The fsync,
    /// ten times a second under a steady writer, runs on the blocking pool (through a second
    /// handle to the same file), so that a slow disk holds up the caller and not the runtime
    /// worker it runs on. (Closing a segment, once per 64 MiB, still syncs in place.)
    pub async fn checkpoint(&mut self) -> std::io::Result<SpoolPosition> {
        // Nothing appended since (the reader checkpoints when only the resume token moved).
        if self.position() == self.durable {
            return Ok(self.durable);
        }
        self.file.flush()?;
        let file = self.file.get_ref().try_clone()?;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(std::io::Error::other)??;
        self.durable = self.position();
        Ok(self.durable)
    }

    /// The position after the last appended event.
    pub fn position(&self) -> SpoolPosition {
        SpoolPosition {
            segment: self.segment,
            offset: self.offset,
        }
    }
}

/// Reads events back, from a position up to a limit (the last durable position).
#[derive(Debug)]
pub struct SpoolReader {
    dir: PathBuf,
    position: SpoolPosition,
    reader: Option<BufReader<File>>,
}

/// A damaged spool: an event that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("the change spool is damaged at segment {segment}, offset {offset}: {detail}")]
pub struct SpoolDamaged {
    /// Segment.
    pub segment: u64,
    /// Offset.
    pub offset: u64,
    /// What is wrong.
    pub detail: String,
}

impl SpoolReader {
    /// Starts reading at `from`.
    pub fn new(dir: &Path, from: SpoolPosition) -> Self {
        Self {
            dir: dir.to_path_buf(),
            position: SpoolPosition {
                segment: from.segment.max(1),
                offset: if from.segment == 0 { 0 } else { from.offset },
            },
            reader: None,
        }
    }

    /// The position of the next event.
    pub fn position(&self) -> SpoolPosition {
        self.position
    }

    /// The next event before `limit`, or `None` when `limit` is reached.
    pub fn next(&mut self, limit: SpoolPosition) -> Result<Option<RawDocumentBuf>, SpoolDamaged> {
        loop {
            if self.position >= limit {
                return Ok(None);
            }
            let damaged = |detail: String, p: SpoolPosition| SpoolDamaged {
                segment: p.segment,
                offset: p.offset,
                detail,
            };
            if self.reader.is_none() {
                let path = segment_path(&self.dir, self.position.segment);
                let mut file =
                    File::open(&path).map_err(|e| damaged(e.to_string(), self.position))?;
                file.seek(SeekFrom::Start(self.position.offset))
                    .map_err(|e| damaged(e.to_string(), self.position))?;
                self.reader = Some(BufReader::new(file));
            }
            let Some(reader) = self.reader.as_mut() else {
                return Ok(None);
            };
            let mut len_bytes = [0u8; 4];
            match reader.read_exact(&mut len_bytes) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    if self.position.segment >= limit.segment {
                        return Err(damaged(
                            "the segment ends before the recorded position".to_owned(),
                            self.position,
                        ));
                    }
                    // End of a closed segment: continue with the next one.
                    self.position = SpoolPosition {
                        segment: self.position.segment + 1,
                        offset: 0,
                    };
                    self.reader = None;
                    continue;
                }
                Err(e) => return Err(damaged(e.to_string(), self.position)),
            }
            let len = i32::from_le_bytes(len_bytes);
            let len = usize::try_from(len)
                .ok()
                .filter(|l| (5..=MAX_EVENT_BYTES).contains(l))
                .ok_or_else(|| damaged(format!("invalid event length {len}"), self.position))?;
            let mut bytes = vec![0u8; len];
            bytes[..4].copy_from_slice(&len_bytes);
            reader
                .read_exact(&mut bytes[4..])
                .map_err(|e| damaged(format!("truncated event: {e}"), self.position))?;
            let doc = RawDocumentBuf::from_bytes(bytes)
                .map_err(|e| damaged(e.to_string(), self.position))?;
            self.position.offset += len as u64;
            return Ok(Some(doc));
        }
    }
}

/// Deletes segments entirely before `position` (fully applied).
pub fn discard_before(dir: &Path, position: SpoolPosition) -> std::io::Result<()> {
    for s in segments(dir)?.into_iter().filter(|s| *s < position.segment) {
        std::fs::remove_file(segment_path(dir, s))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;

    fn event(n: i32) -> RawDocumentBuf {
        rawdoc! { "n": n, "pad": "x".repeat(40) }
    }

    fn read_all(dir: &Path, from: SpoolPosition, limit: SpoolPosition) -> Vec<i32> {
        let mut r = SpoolReader::new(dir, from);
        let mut out = Vec::new();
        while let Some(e) = r.next(limit).unwrap() {
            out.push(e.get_i32("n").unwrap());
        }
        out
    }

    #[tokio::test]
    async fn events_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::open(dir.path(), SpoolPosition::default(), 200).unwrap();
        for n in 0..10 {
            w.append(&event(n)).unwrap();
        }
        let end = w.checkpoint().await.unwrap();
        assert!(end.segment > 1, "small segments rotate: {end:?}");
        assert_eq!(
            read_all(dir.path(), SpoolPosition::default(), end),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn reopening_discards_what_was_not_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::open(dir.path(), SpoolPosition::default(), 200).unwrap();
        for n in 0..4 {
            w.append(&event(n)).unwrap();
        }
        let durable = w.checkpoint().await.unwrap();
        for n in 4..9 {
            w.append(&event(n)).unwrap();
        }
        w.checkpoint().await.unwrap();
        drop(w);
        // A crash before the lockfile recorded the second checkpoint.
        let mut w = SpoolWriter::open(dir.path(), durable, 200).unwrap();
        w.append(&event(100)).unwrap();
        let end = w.checkpoint().await.unwrap();
        assert_eq!(
            read_all(dir.path(), SpoolPosition::default(), end),
            vec![0, 1, 2, 3, 100]
        );
    }

    #[tokio::test]
    async fn damage_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::open(dir.path(), SpoolPosition::default(), 1 << 20).unwrap();
        w.append(&event(1)).unwrap();
        let end = w.checkpoint().await.unwrap();
        std::fs::write(segment_path(dir.path(), 1), [0xff, 0xff, 0xff, 0x7f, 0, 0]).unwrap();
        let err = SpoolReader::new(dir.path(), SpoolPosition::default())
            .next(end)
            .unwrap_err();
        assert!(err.detail.contains("invalid event length"), "{err}");
        let short = SpoolPosition {
            segment: 1,
            offset: end.offset + 10,
        };
        std::fs::write(segment_path(dir.path(), 1), event(1).as_bytes()).unwrap();
        let mut r = SpoolReader::new(dir.path(), SpoolPosition::default());
        assert!(r.next(short).unwrap().is_some());
        assert!(
            r.next(short).is_err(),
            "a segment shorter than recorded is damage"
        );
    }

    #[tokio::test]
    async fn applied_segments_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::open(dir.path(), SpoolPosition::default(), 100).unwrap();
        for n in 0..6 {
            w.append(&event(n)).unwrap();
        }
        let end = w.checkpoint().await.unwrap();
        discard_before(dir.path(), end).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![end.segment]);
    }
}
