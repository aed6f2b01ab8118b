//! `Transport`: the readiness-based socket API a session needs (read into a lent buffer,
//! vectored writes), implemented by TCP streams and by the Unix socket a TLS connection
//! is bridged through.

use std::future::Future;
use std::io::{self, IoSlice};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A socket with readiness waits and non-blocking reads and writes.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Waits until a read may make progress.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Waits until a write may make progress.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what is there without waiting.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what fits without waiting.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

macro_rules! transport {
    ($t:ty) => {
        impl Transport for $t {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::readable(self)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::writable(self)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$t>::try_read(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }
        }
    };
}

transport!(TcpStream);
transport!(UnixStream);
