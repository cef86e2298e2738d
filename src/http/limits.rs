//! Connection admission for the HTTP server: the cap on open connections (a new one evicts the
//! connection idle longest, never one serving a request), its clamp below the open-file limit,
//! and the backoff and rate-limited logging of `accept` errors. Kept apart from the handlers:
//! this is about sockets, before any request (or authentication) is read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// Limits that keep whoever can reach the port from starving the scrapes. They apply before
/// authentication: to connections and headers, not to requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once (already clamped, see [`clamp_to_fd_limit`]).
    pub max_connections: usize,
    /// Longest a TLS handshake or a request's headers may take, idle keep-alive wait included.
    pub header_read_timeout: Duration,
}

/// Descriptors kept for everything but HTTP connections: the listener, the runtime, the target
/// sessions, configuration and certificate files, stdio.
pub(super) const FD_RESERVE: u64 = 64;

/// `max_connections` lowered so that open connections plus [`FD_RESERVE`] fit the process's
/// open-file soft limit (`limit`, RLIMIT_NOFILE when `None`); accept then does not run out
/// of descriptors in practice. Returns the cap and whether it was lowered.
pub fn clamp_to_fd_limit(max_connections: usize, limit: Option<u64>) -> (usize, bool) {
    let limit = limit.or_else(nofile_soft_limit);
    match limit {
        Some(limit) => {
            let room = limit.saturating_sub(FD_RESERVE).max(1);
            if (max_connections as u64) > room {
                (room as usize, true)
            } else {
                (max_connections, false)
            }
        }
        None => (max_connections, false),
    }
}

pub(super) fn nofile_soft_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0
        || rl.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    Some(rl.rlim_cur as u64)
}

/// One open connection as the cap sees it.
pub(super) struct Slot {
    /// Requests being handled or whose response is still being written.
    pub(super) busy: AtomicUsize,
    /// Requests whose headers arrived on this connection.
    pub(super) requests: AtomicU64,
    /// When the connection last became idle (accepted, or its last response sent); the cap
    /// evicts the idle connection with the oldest.
    pub(super) idle_since: Mutex<Instant>,
    pub(super) evict: Notify,
}

/// The open connections, for the cap.
pub(super) struct Slots {
    pub(super) max: usize,
    pub(super) next_id: AtomicU64,
    pub(super) open: Mutex<HashMap<u64, Arc<Slot>>>,
}

pub(super) enum Admission {
    Admitted(u64, Arc<Slot>),
    /// At the cap with every connection busy.
    Refused,
}

impl Slots {
    /// Room for one more connection: free, or made by evicting the idle connection that has
    /// waited longest (a slow or silent client, or an idle keep-alive one).
    pub(super) fn admit(&self, telemetry: &crate::telemetry::Telemetry) -> Admission {
        let mut open = self.open.lock().expect("slots lock");
        if open.len() >= self.max {
            if !Self::evict_oldest(&mut open) {
                return Admission::Refused;
            }
            telemetry
                .http_connections_rejected
                .with_label_values(&["evicted"])
                .inc();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            evict: Notify::new(),
        });
        open.insert(id, slot.clone());
        Admission::Admitted(id, slot)
    }

    /// Closes the idle connection idle longest, to free its descriptor (out of descriptors).
    pub(super) fn evict_one(&self, telemetry: &crate::telemetry::Telemetry) -> bool {
        let mut open = self.open.lock().expect("slots lock");
        let evicted = Self::evict_oldest(&mut open);
        if evicted {
            telemetry
                .http_connections_rejected
                .with_label_values(&["evicted"])
                .inc();
        }
        evicted
    }

    /// Tells the oldest idle connection to close and takes it off the table (the caller
    /// counts it). Its task closes the socket at once.
    pub(super) fn evict_oldest(open: &mut HashMap<u64, Arc<Slot>>) -> bool {
        let oldest = open
            .iter()
            .filter(|(_, slot)| slot.busy.load(Ordering::Acquire) == 0)
            // Ties (a coarse clock) go to the connection accepted first.
            .min_by_key(|(id, slot)| (*slot.idle_since.lock().expect("slot lock"), **id))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }

    pub(super) fn release(&self, id: u64) {
        self.open.lock().expect("slots lock").remove(&id);
    }
}

/// Leaves the table and the open gauge when the connection's task ends, however it ends.
pub(super) struct SlotGuard {
    pub(super) slots: Arc<Slots>,
    pub(super) id: u64,
    pub(super) open: prometheus::IntGauge,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.release(self.id);
        self.open.dec();
    }
}

/// Marks a connection busy from the request's headers until its response is sent, so that the
/// cap never evicts a connection mid-response.
pub(super) struct Busy(Arc<Slot>);

impl Busy {
    pub(super) fn new(slot: Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().expect("slot lock") = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection [`Busy`] until hyper has written and dropped it.
pub(super) struct TrackedBody {
    pub(super) inner: super::Chunks,
    pub(super) _busy: Busy,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Accept failures (out of descriptors, mostly): back off instead of spinning, log at most
/// once per second with the number of failures in between, count every one.
pub(super) struct AcceptErrors {
    pub(super) backoff: Duration,
    pub(super) last_log: Option<Instant>,
    pub(super) unlogged: u64,
}

impl AcceptErrors {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub(super) fn new() -> AcceptErrors {
        AcceptErrors {
            backoff: Duration::ZERO,
            last_log: None,
            unlogged: 0,
        }
    }

    /// Records a failure; returns how long to wait before the next accept.
    pub(super) fn failed(&mut self, error: &std::io::Error, now: Instant) -> Duration {
        self.unlogged += 1;
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(
                error = %error,
                failures = self.unlogged,
                "accept failed; backing off (logged at most once per second; failures counts \
                 those since the last line, see pgkpi_http_accept_errors_total)"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        }
        self.backoff = (self.backoff * 2).clamp(Self::FIRST, Self::MAX);
        self.backoff
    }

    pub(super) fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

pub(super) fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_evicts_the_longest_idle_connection_and_never_a_busy_one() {
        let telemetry = crate::telemetry::Telemetry::new();
        let slots = Slots {
            max: 2,
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        };
        let admit = || match slots.admit(&telemetry) {
            Admission::Admitted(id, slot) => Some((id, slot)),
            Admission::Refused => None,
        };
        let rejected = |reason: &str| {
            telemetry
                .http_connections_rejected
                .with_label_values(&[reason])
                .get()
        };
        let (first, first_slot) = admit().unwrap();
        let (second, second_slot) = admit().unwrap();
        // A third closes the first (idle longest).
        let (third, third_slot) = admit().unwrap();
        assert_eq!(rejected("evicted"), 1);
        let open: Vec<u64> = slots.open.lock().unwrap().keys().copied().collect();
        assert!(!open.contains(&first) && open.contains(&second) && open.contains(&third));
        // Its task is told to close.
        assert!(futures_ready(first_slot.evict.notified()));
        // With every connection busy, a new one is refused.
        let _busy = (Busy::new(second_slot), Busy::new(third_slot));
        assert!(admit().is_none());
        assert_eq!(rejected("evicted"), 1);
    }

    /// True when `future` is ready at its first poll.
    fn futures_ready(future: impl std::future::Future) -> bool {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        future.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn connection_cap_stays_below_the_open_file_limit() {
        assert_eq!(clamp_to_fd_limit(100, Some(1024)), (100, false));
        assert_eq!(clamp_to_fd_limit(1000, Some(1024)), (960, true));
        assert_eq!(clamp_to_fd_limit(100, Some(100)), (36, true));
        assert_eq!(clamp_to_fd_limit(100, Some(10)), (1, true));
    }

    #[test]
    fn accept_errors_back_off_up_to_a_second() {
        let mut errors = AcceptErrors::new();
        let error = std::io::Error::from_raw_os_error(libc::EMFILE);
        let now = Instant::now();
        let waits: Vec<Duration> = (0..10).map(|_| errors.failed(&error, now)).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(waits[9], Duration::from_secs(1));
        // One line at the first failure; the nine after it wait for the next second.
        assert_eq!(errors.unlogged, 9);
        errors.failed(&error, now + Duration::from_secs(1));
        assert_eq!(errors.unlogged, 0);
        errors.succeeded();
        assert_eq!(errors.failed(&error, now), Duration::from_millis(10));
    }
}
