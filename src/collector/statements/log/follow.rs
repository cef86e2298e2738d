//! Following the server's current structured log file: incremental reads from where the last
//! poll stopped, the rest of the previous file after a rotation, and a count of what could not
//! be read instead of a guess.
//!
//! The follower is pure bookkeeping over a [`Reader`] (a local directory, or the server's own
//! `pg_read_binary_file`), so the rotation and truncation cases are tested without a server.

use std::future::Future;

use super::parse::{split_records, Format};

/// Bytes asked for in one read.
pub const CHUNK: u64 = 4 << 20;
/// Most bytes read per poll: a poll stays short even behind a burst of logging; the rest is
/// read by the next polls.
pub const POLL_BUDGET: u64 = 64 << 20;
/// Longest record kept while waiting for its end; a longer one (a huge statement text) is
/// dropped and counted.
pub const MAX_RECORD: usize = 1 << 20;

/// A read at an offset of a log file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Chunk {
    /// The file's size; None when it does not exist.
    pub size: Option<u64>,
    pub bytes: Vec<u8>,
}

/// Why a log file could not be read at all (as opposed to lines lost, which are counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("permission denied reading the server log ({0})")]
    Permission(String),
    #[error("cannot read the server log: {0}")]
    Other(String),
}

/// Where the log's bytes come from.
pub trait Reader {
    /// Up to `len` bytes of `name` (as `pg_current_logfile()` gives it) from `offset`.
    fn read(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Chunk, ReadError>> + Send;
}

/// What could not be read, by cause; each a label value of the lost-lines counter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lost {
    /// A rotated-away file was gone before its rest was read.
    pub rotation_missed: u64,
    /// A file became shorter than what was read of it (truncated or reused).
    pub truncated: u64,
    /// A record longer than [`MAX_RECORD`], or cut by a rotation or truncation.
    pub incomplete_record: u64,
}

/// Where a [`Follower::drain`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    /// The poll's budget is spent; the rest is for the next poll.
    Budget,
    /// The file is not there (any more).
    Gone,
}

/// The file being followed.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    name: String,
    format: Format,
    offset: u64,
}

#[derive(Debug, Default)]
pub struct Follower {
    at: Option<Position>,
    /// The start of a record whose end has not been written yet.
    carry: Vec<u8>,
    pub lost: Lost,
    pub bytes_read: u64,
}

impl Follower {
    /// Reads what was written since the last poll to `current` (the server's current log file
    /// and its format), handing each complete record to `record`. The first poll, and the first
    /// after the log was unavailable, starts at the end: older lines belong to intervals that
    /// are gone.
    pub async fn poll<R: Reader>(
        &mut self,
        reader: &R,
        current: &str,
        format: Format,
        mut record: impl FnMut(Format, &[u8]),
    ) -> Result<(), ReadError> {
        let mut budget = POLL_BUDGET;
        match self.at.clone() {
            None => {
                let chunk = reader.read(current, 0, 0).await?;
                let size = chunk.size.ok_or_else(|| missing(current))?;
                self.start(current, format, size);
                return Ok(());
            }
            Some(at) if at.name != current || at.format != format => {
                // Rotation (or a switch of format): the rest of the old file first.
                match self.drain(reader, &mut budget, &mut record).await? {
                    End::Budget => return Ok(()),
                    End::Gone => self.lost.rotation_missed += 1,
                    End::Eof => {}
                }
                if !self.carry.is_empty() {
                    self.lost.incomplete_record += 1;
                    self.carry.clear();
                }
                self.start(current, format, 0);
            }
            Some(_) => {}
        }
        if self.drain(reader, &mut budget, &mut record).await? == End::Gone {
            // The server's current file itself is not there (a volume not mounted, a wrong
            // directory): not a missed rotation, the log is unreadable.
            self.reset();
            return Err(missing(current));
        }
        Ok(())
    }

    /// Forgets the position: the next poll starts at the end of the then current file.
    pub fn reset(&mut self) {
        self.at = None;
        self.carry.clear();
    }

    fn start(&mut self, name: &str, format: Format, offset: u64) {
        self.at = Some(Position {
            name: name.to_string(),
            format,
            offset,
        });
        self.carry.clear();
    }

    /// Reads the followed file to its end or until the budget is spent.
    async fn drain<R: Reader>(
        &mut self,
        reader: &R,
        budget: &mut u64,
        record: &mut impl FnMut(Format, &[u8]),
    ) -> Result<End, ReadError> {
        let Some(at) = self.at.as_mut() else {
            return Ok(End::Eof);
        };
        loop {
            if *budget == 0 {
                return Ok(End::Budget);
            }
            let chunk = reader.read(&at.name, at.offset, CHUNK.min(*budget)).await?;
            let Some(size) = chunk.size else {
                return Ok(End::Gone);
            };
            if size < at.offset {
                self.lost.truncated += 1;
                if !self.carry.is_empty() {
                    self.lost.incomplete_record += 1;
                    self.carry.clear();
                }
                at.offset = 0;
                continue;
            }
            if chunk.bytes.is_empty() {
                return Ok(End::Eof);
            }
            let n = chunk.bytes.len() as u64;
            at.offset += n;
            *budget = budget.saturating_sub(n);
            self.bytes_read += n;
            self.carry.extend_from_slice(&chunk.bytes);
            let format = at.format;
            let used = split_records(format, &self.carry, |r| record(format, r));
            self.carry.drain(..used);
            if self.carry.len() > MAX_RECORD {
                self.lost.incomplete_record += 1;
                self.carry.clear();
            }
        }
    }
}

fn missing(name: &str) -> ReadError {
    ReadError::Other(format!(
        "the server's current log file {name} is not there (check statements.log.directory)"
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// Files in memory.
    #[derive(Default)]
    struct Files(Mutex<HashMap<String, Vec<u8>>>);

    impl Files {
        fn append(&self, name: &str, text: &str) {
            let mut files = self.0.lock().unwrap();
            files
                .entry(name.to_string())
                .or_default()
                .extend_from_slice(text.as_bytes());
        }
        fn set(&self, name: &str, text: &str) {
            self.0
                .lock()
                .unwrap()
                .insert(name.to_string(), text.as_bytes().to_vec());
        }
        fn remove(&self, name: &str) {
            self.0.lock().unwrap().remove(name);
        }
    }

    impl Reader for Files {
        async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Chunk, ReadError> {
            let files = self.0.lock().unwrap();
            Ok(match files.get(name) {
                None => Chunk::default(),
                Some(bytes) => {
                    let from = (offset as usize).min(bytes.len());
                    let to = (from + len as usize).min(bytes.len());
                    Chunk {
                        size: Some(bytes.len() as u64),
                        bytes: bytes[from..to].to_vec(),
                    }
                }
            })
        }
    }

    async fn poll(f: &mut Follower, files: &Files, name: &str, format: Format) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(files, name, format, |_, r| {
            out.push(String::from_utf8(r.to_vec()).unwrap())
        })
        .await
        .unwrap();
        out
    }

    #[tokio::test]
    async fn reads_incrementally_and_finishes_a_rotated_file() {
        let files = Files::default();
        let mut f = Follower::default();
        files.append("a.json", "old\n");
        assert!(poll(&mut f, &files, "a.json", Format::Json)
            .await
            .is_empty());
        files.append("a.json", "one\ntw");
        assert_eq!(poll(&mut f, &files, "a.json", Format::Json).await, ["one"]);
        files.append("a.json", "o\nthree\n");
        files.append("b.json", "four\n");
        assert_eq!(
            poll(&mut f, &files, "b.json", Format::Json).await,
            ["two", "three", "four"]
        );
        assert_eq!(f.lost, Lost::default());
    }

    #[tokio::test]
    async fn counts_a_missed_rotation_a_truncation_and_a_cut_record() {
        let files = Files::default();
        let mut f = Follower::default();
        files.set("a.csv", "");
        poll(&mut f, &files, "a.csv", Format::Csv).await;
        files.append("a.csv", "1\n\"cut");
        assert_eq!(poll(&mut f, &files, "a.csv", Format::Csv).await, ["1"]);
        // a.csv goes away with its unfinished record; c.csv is new.
        files.remove("a.csv");
        files.append("c.csv", "2\n22\n");
        assert_eq!(
            poll(&mut f, &files, "c.csv", Format::Csv).await,
            ["2", "22"]
        );
        assert_eq!(f.lost.rotation_missed, 1);
        assert_eq!(f.lost.incomplete_record, 1);
        // Reused with the same name (log_truncate_on_rotation) and shorter than what was read:
        // read again from the start. (A reused file already longer than that cannot be told
        // from a grown one; docs/statements.md says so.)
        files.set("c.csv", "3\n");
        assert_eq!(poll(&mut f, &files, "c.csv", Format::Csv).await, ["3"]);
        assert_eq!(f.lost.truncated, 1);
        // The current file itself missing is an error, not a lost rotation; the follower
        // starts over at the end once it is back.
        files.remove("c.csv");
        let gone = f.poll(&files, "c.csv", Format::Csv, |_, _| {}).await;
        assert!(matches!(gone, Err(ReadError::Other(_))), "{gone:?}");
        assert_eq!(f.lost.rotation_missed, 1);
        files.set("c.csv", "3\n");
        assert!(poll(&mut f, &files, "c.csv", Format::Csv).await.is_empty());
        // A switch of format with the same file name is a new file.
        files.append("c.csv", "4\n");
        files.set("c.json", "5\n");
        assert_eq!(
            poll(&mut f, &files, "c.json", Format::Json).await,
            ["4", "5"]
        );
    }
}
