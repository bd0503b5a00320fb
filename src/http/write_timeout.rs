//! A socket whose writes give up when they cannot proceed for a while: [`WriteTimeout`].
//!
//! Every accepted connection is wrapped in one (see `serve.rs`), so a response, an SSE body
//! and a WebSocket after its upgrade (which keeps this socket) all stop at the same bound when
//! the client stops reading. The clock starts when a write (or flush, or shutdown) first
//! returns `Pending` and is reset by every one that proceeds, as `tokio-io-timeout`'s
//! `TimeoutWriter` does; this one allocates its timer only on the first write that has to
//! wait. Most connections never wait, and an idle one then costs a pointer instead of a
//! boxed timer (~170 bytes each, measured at 19,000 idle connections, 3% of their memory).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Allocated on the first write that waits; `waiting` says whether it is running.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// What a write that returned `answer` means: it proceeded (the clock stops), or it waits
    /// (the clock runs; once it has run for `limit`, the write fails with `TimedOut`).
    fn watch<T>(
        &mut self,
        answer: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if answer.is_ready() {
            self.waiting = false;
            return answer;
        }
        let deadline = Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            timer.as_mut().reset(deadline);
            self.waiting = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read for the write timeout",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(answer, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(answer, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(answer, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(answer, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_cannot_proceed_fails_after_the_limit_and_one_that_can_does_not() {
        // A pipe of 16 bytes that nobody reads: the second write waits.
        let (client, _unread) = tokio::io::duplex(16);
        let mut writer = WriteTimeout::new(client, Duration::from_secs(10));
        writer.write_all(&[0; 16]).await.expect("fits the pipe");
        assert!(writer.timer.is_none(), "no timer until a write waits");
        let started = Instant::now();
        let err = writer.write_all(&[0; 1]).await.expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_clock() {
        let (client, mut reader) = tokio::io::duplex(16);
        let mut writer = WriteTimeout::new(client, Duration::from_secs(10));
        writer.write_all(&[0; 16]).await.expect("fits the pipe");
        // The reader drains 16 bytes every 6 s: each write waits 6 s, under the limit.
        let drain = tokio::spawn(async move {
            let mut buffer = [0u8; 16];
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                tokio::io::AsyncReadExt::read_exact(&mut reader, &mut buffer)
                    .await
                    .expect("read");
            }
            reader
        });
        for _ in 0..3 {
            writer
                .write_all(&[0; 16])
                .await
                .expect("the reader keeps up");
        }
        drain.await.expect("the reader ran");
    }
}
