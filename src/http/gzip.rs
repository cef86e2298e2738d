//! gzip for `/metrics` without compressing the snapshot on every scrape.
//!
//! Prometheus asks for gzip. The snapshot (half a megabyte at the caps) changes only when a
//! collector run publishes, but the self-metrics (a few kilobytes) change with every scrape.
//! So the snapshot is deflated ahead of the scrapes ([`Deflated`], kept in a [`Cache`]), and
//! its deflate stream ends with a full flush: from there the compressor refers to nothing
//! before, so a scrape continues the same stream with the self-metrics alone and then the
//! trailer, whose CRC-32 combines the two parts' checksums. The response is one gzip member
//! (curl and browsers stop reading after the first member, so two members would lose the
//! self-metrics). flate2 writes only whole members, hence the framing here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, CompressError, Compression, FlushCompress, Status};
use tokio::sync::watch;

use crate::snapshot::Snapshot;

/// The gzip header: no name, no time, unknown OS (as flate2 writes it).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A body deflated into the start of a gzip stream that [`Deflated::finish`] completes.
pub struct Deflated {
    /// The body it was made from, kept so that the buffer cannot be reused for another one.
    of: Bytes,
    /// The gzip header and the body's deflate blocks, ending with a full flush.
    start: Bytes,
    crc: crc32fast::Hasher,
}

impl Deflated {
    pub fn new(body: Bytes) -> Result<Deflated, CompressError> {
        let mut start = HEADER.to_vec();
        deflate(&body, FlushCompress::Full, &mut start)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body);
        Ok(Deflated {
            of: body,
            start: Bytes::from(start),
            crc,
        })
    }

    /// Whether this was deflated from `body`: the same buffer, not merely equal bytes.
    pub fn is_of(&self, body: &Bytes) -> bool {
        self.of.as_ptr() == body.as_ptr() && self.of.len() == body.len()
    }

    /// The gzip stream of the body followed by `rest`, in two parts: the deflated body
    /// (shared, not copied) and the end.
    pub fn finish(&self, rest: &[u8]) -> Result<[Bytes; 2], CompressError> {
        let mut end = Vec::with_capacity(rest.len() / 4 + 32);
        deflate(rest, FlushCompress::Finish, &mut end)?;
        let mut crc = self.crc.clone();
        let mut tail = crc32fast::Hasher::new();
        tail.update(rest);
        crc.combine(&tail);
        end.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE: the length modulo 2^32, as gzip defines it.
        let len = (self.of.len() as u64 + rest.len() as u64) as u32;
        end.extend_from_slice(&len.to_le_bytes());
        Ok([self.start.clone(), Bytes::from(end)])
    }
}

/// Raw deflate of `input` appended to `out`, up to `flush`: a full flush leaves the stream open
/// at a byte boundary with no reference to what came before; `Finish` ends it.
fn deflate(input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) -> Result<(), CompressError> {
    let mut compress = Compress::new(Compression::fast(), false);
    out.reserve(input.len() / 4 + 64);
    loop {
        let read = compress.total_in() as usize;
        let status = compress.compress_vec(&input[read..], out, flush)?;
        let all_read = compress.total_in() as usize == input.len();
        // The flush is complete once all is read and the output was not filled to the brim
        // (a full buffer may hide more to come), or, when finishing, at the stream's end.
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => all_read && out.len() < out.capacity(),
        };
        if done {
            return Ok(());
        }
        out.reserve(out.capacity().max(64));
    }
}

/// The latest deflated snapshot, shared by the scrapes and the task that deflates ahead.
#[derive(Default)]
pub struct Cache {
    kept: Mutex<Option<Arc<Deflated>>>,
    /// A scrape asked for gzip: from then on, snapshots are deflated ahead.
    wanted: AtomicBool,
}

impl Cache {
    /// The deflated `body`, from the cache, or made now and kept for the next scrape.
    pub fn get(&self, body: &Bytes) -> Result<Arc<Deflated>, CompressError> {
        self.wanted.store(true, Ordering::Relaxed);
        self.kept_or_made(body)
    }

    /// Deflates `body` unless it already is.
    pub fn prepare(&self, body: &Bytes) {
        let _ = self.kept_or_made(body);
    }

    fn kept_or_made(&self, body: &Bytes) -> Result<Arc<Deflated>, CompressError> {
        if let Some(kept) = self.kept(body) {
            return Ok(kept);
        }
        let made = Arc::new(Deflated::new(body.clone())?);
        self.keep(made.clone());
        Ok(made)
    }

    fn kept(&self, body: &Bytes) -> Option<Arc<Deflated>> {
        let kept = self.kept.lock().expect("gzip cache lock");
        kept.as_ref().filter(|d| d.is_of(body)).cloned()
    }

    fn keep(&self, made: Arc<Deflated>) {
        *self.kept.lock().expect("gzip cache lock") = Some(made);
    }
}

/// How long a new snapshot waits before it is deflated: the runs that finish together publish
/// one after another, and the last of them is the one scraped.
const COALESCE: Duration = Duration::from_millis(100);

/// Deflates each new snapshot ahead of the scrapes (off the runtime's threads), once a scrape
/// has asked for gzip; until then nothing is compressed ahead. A scrape that comes before its
/// snapshot is ready deflates it itself, as it would without this.
pub async fn deflate_ahead(
    snapshot: Arc<Snapshot>,
    cache: Arc<Cache>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut published = snapshot.subscribe();
    loop {
        tokio::select! {
            changed = published.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        if !cache.wanted.load(Ordering::Relaxed) {
            continue;
        }
        tokio::time::sleep(COALESCE).await;
        // What was published meanwhile is in the body read now.
        published.borrow_and_update();
        let (body, cache) = (snapshot.body(), cache.clone());
        let _ = tokio::task::spawn_blocking(move || cache.prepare(&body)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn gunzip(parts: &[Bytes]) -> Vec<u8> {
        let whole: Vec<u8> = parts.concat();
        let mut out = Vec::new();
        // GzDecoder reads one member: a second one would be left out, and the test fail.
        let mut decoder = flate2::read::GzDecoder::new(whole.as_slice());
        decoder.read_to_end(&mut out).expect("a valid gzip stream");
        let mut rest = Vec::new();
        decoder.into_inner().read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "{} bytes after the first member",
            rest.len()
        );
        out
    }

    #[test]
    fn the_deflated_body_and_the_rest_make_one_gzip_member() {
        let body: Bytes = (0..20_000)
            .map(|i| format!("pg_table_size_bytes{{relname=\"t{i}\"}} {}\n", i * 8192))
            .collect::<String>()
            .into();
        let own = b"pgkpi_http_requests_total{path=\"/metrics\",code=\"200\"} 7\n";
        let deflated = Deflated::new(body.clone()).unwrap();
        assert!(deflated.start.len() < body.len() / 4, "compressed");
        let expected = [&body[..], &own[..]].concat();
        assert_eq!(gunzip(&deflated.finish(own).unwrap()), expected);
        // Either part may be empty.
        assert_eq!(gunzip(&deflated.finish(b"").unwrap()), &body[..]);
        let empty = Deflated::new(Bytes::new()).unwrap();
        assert_eq!(gunzip(&empty.finish(own).unwrap()), &own[..]);
    }

    #[test]
    fn the_cache_serves_the_same_buffer_only() {
        let cache = Cache::default();
        let body = Bytes::from(vec![b'a'; 1000]);
        cache.prepare(&body);
        let kept = cache.get(&body).unwrap();
        assert!(Arc::ptr_eq(&kept, &cache.get(&body).unwrap()));
        // Equal bytes in another buffer are another snapshot: deflated anew.
        let other = Bytes::from(vec![b'a'; 1000]);
        let made = cache.get(&other).unwrap();
        assert!(!Arc::ptr_eq(&kept, &made));
        assert!(made.is_of(&other) && !made.is_of(&body));
    }
}
