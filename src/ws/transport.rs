//! `Transport`: the readiness-based socket API a session needs (read into a lent buffer,
//! vectored writes), implemented by TCP streams and by a TLS session on its TCP socket
//! (`ws::tls`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

/// A socket with readiness waits and non-blocking reads and writes.
///
/// Readiness is polled through the socket's single reader/writer waker slots (not the
/// `readable()` waiter lists): polling them replaces whatever waker was left there by the
/// HTTP connection task that did the upgrade, so that finished task is freed instead of
/// being kept alive (about 5 KiB per idle connection) by a stale waker.
pub trait Transport: AsyncWrite + Unpin + Send + Sync + 'static {
    /// Polls until a read may make progress.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Polls until a write may make progress.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Waits until a read may make progress.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(|cx| self.poll_read_ready(cx))
    }
    /// Waits until a write may make progress.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(|cx| self.poll_write_ready(cx))
    }
    /// Reads what is there without waiting.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what fits without waiting.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Writes what the transport holds of bytes it already took (TLS records the socket
    /// did not take) as far as the socket takes it; true when nothing is left. Plain
    /// sockets hold nothing.
    fn flush_buffered(&self) -> io::Result<bool> {
        Ok(true)
    }
    /// True while the transport holds output of its own: the session must wait for the
    /// socket to be writable and `flush_buffered`, even with no frame left to write.
    fn holds_output(&self) -> bool {
        false
    }
}

macro_rules! transport {
    ($t:ty) => {
        impl Transport for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                // A short read means the socket is drained: clear its readiness now (by
                // reporting WouldBlock to `try_io`) instead of paying one more read
                // syscall that returns EAGAIN. Readiness that arrives after the read has
                // a newer tick and is not cleared, so no wake-up is lost.
                let mut got = 0;
                let len = buf.len();
                let read = <$t>::try_io(self, Interest::READABLE, || {
                    let n = <$t>::try_read(self, buf)?;
                    got = n;
                    if n > 0 && n < len {
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(n)
                    }
                });
                match read {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
                    other => other,
                }
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
        }
    };
}

transport!(TcpStream);

impl<T: Transport> crate::hub::client::Writer for T {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Transport::try_write_vectored(self, bufs)
    }
    fn flush_buffered(&self) -> io::Result<bool> {
        Transport::flush_buffered(self)
    }
}
