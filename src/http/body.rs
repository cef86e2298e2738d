//! The response body: the buffers a handler already holds, sent as they are.
//!
//! `/metrics` is the snapshot (half a megabyte at the caps, shared and reference counted)
//! followed by the self-metrics. Sending them as two chunks lets hyper hand both to one
//! `writev`, where one `Full` body would need them copied into a fresh half-megabyte buffer on
//! every scrape. http-body-util has no body that chains buffers, hence this one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A body of buffers sent in order; its exact length is known up front, so the response has a
/// Content-Length header, as with a single buffer.
#[derive(Debug, Default)]
pub struct Chunks {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    /// The buffers in order; empty ones are left out.
    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> Chunks {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        Chunks { parts, remaining }
    }

    /// A body of one buffer.
    pub fn one(bytes: impl Into<Bytes>) -> Chunks {
        Chunks::new([bytes.into()])
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.parts.pop_front();
        if let Some(part) = &next {
            self.remaining -= part.len() as u64;
        }
        Poll::Ready(next.map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn sends_its_buffers_in_order_with_their_exact_length() {
        let body = Chunks::new([
            Bytes::from_static(b"snapshot\n"),
            Bytes::new(),
            Bytes::from_static(b"own\n"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(13));
        assert!(!body.is_end_stream());
        let sent = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&sent[..], b"snapshot\nown\n");
        assert!(Chunks::new([Bytes::new()]).is_end_stream());
    }
}
