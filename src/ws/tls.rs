//! `Tls`: a wss:// session served straight on its TCP socket (issue #18 item 5), with
//! rustls in the transport: no socket pair, no copy task, one descriptor per connection.
//!
//! Reads take ciphertext from the socket into rustls and hand out plaintext; writes
//! first flush the ciphertext rustls still holds (and report `WouldBlock` while some
//! remains), then encrypt at most [`MAX_PLAINTEXT`] bytes and write what the socket
//! takes. Ciphertext of plaintext already taken that the socket did not take is
//! `holds_output`: the session waits for the socket to be writable and
//! `flush_buffered`s it, even when nothing else is ever written.

use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use parking_lot::Mutex;
use rustls::ServerConnection;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::transport::Transport;

/// Most plaintext taken per write: bounds the ciphertext a connection holds.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Most socket reads per `try_read`: a client sending records that hold no plaintext
/// (empty records, alerts) cannot keep one call going for as long as it sends.
const MAX_READS: usize = 32;

/// A TLS session on its TCP socket. Shared (`Arc`) by the session and the fan-out
/// flusher; the lock orders their use of the TLS state (never held across `.await`).
pub struct Tls {
    tcp: TcpStream,
    tls: Mutex<ServerConnection>,
}

/// The socket as the `Read`/`Write` rustls wants: calls that never wait.
struct Io<'a>(&'a TcpStream);

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the ciphertext `tls` holds as far as the socket takes it; true when none is left.
fn flush(tcp: &TcpStream, tls: &mut ServerConnection) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(&mut Io(tcp)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// True when `tls` has something for the reader without reading the socket: plaintext,
/// the peer's close_notify, or an error.
fn readable_now(tls: &mut ServerConnection) -> bool {
    match tls.process_new_packets() {
        Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
        Err(_) => true,
    }
}

impl Tls {
    /// The TLS session of a finished handshake and its socket (from
    /// `tokio_rustls::server::TlsStream::into_inner`).
    pub fn new(tcp: TcpStream, mut tls: ServerConnection) -> Self {
        tls.set_buffer_limit(Some(MAX_PLAINTEXT));
        Tls {
            tcp,
            tls: Mutex::new(tls),
        }
    }
}

impl Transport for Tls {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Plaintext rustls decrypted but the last read had no room for.
        if readable_now(&mut self.tls.lock()) {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    /// Plaintext into `buf` until it is full or the socket is drained; `Ok(0)` once the
    /// client sent close_notify; `UnexpectedEof` when TCP ended without it; a TLS error
    /// (its alert sent, best effort) as `InvalidData`.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tls = self.tls.lock();
        let mut filled = 0;
        // Every turn fills `buf`, ends, or reads ciphertext (at most one record's room).
        for _ in 0..MAX_READS {
            if filled == buf.len() {
                return Ok(filled);
            }
            match tls.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) if filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut Io(&self.tcp)) {
                // EOF: rustls says next whether it was clean (close_notify) or not.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = flush(&self.tcp, &mut tls);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        // Out of turns with the socket still readable: its readiness is still set, so
        // the session comes back at once (after tokio's budget lets others run).
        if filled > 0 {
            Ok(filled)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Flushes held ciphertext first (`WouldBlock` while some remains), then takes at
    /// most [`MAX_PLAINTEXT`] bytes (rustls's buffer limit), encrypts them and writes
    /// what the socket takes; the rest is held for [`Transport::flush_buffered`].
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut tls = self.tls.lock();
        if !flush(&self.tcp, &mut tls)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = tls.writer().write_vectored(bufs)?;
        flush(&self.tcp, &mut tls)?;
        Ok(taken)
    }

    fn flush_buffered(&self) -> io::Result<bool> {
        flush(&self.tcp, &mut self.tls.lock())
    }

    fn holds_output(&self) -> bool {
        self.tls.lock().wants_write()
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match Transport::try_write_vectored(&*self, &[IoSlice::new(buf)]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?
                }
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.flush_buffered()? {
            ready!(self.tcp.poll_write_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// close_notify if the socket takes it now (never waiting: a client that does not
    /// read must not hold the session), then the TCP write side shut.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let tls = this.tls.get_mut();
        tls.send_close_notify();
        let _ = flush(&this.tcp, tls);
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl Drop for Tls {
    /// The session is over (after its close handshake and `CLOSE_WAIT`, as for TCP):
    /// close_notify goes out if the socket takes it now, then the socket closes.
    fn drop(&mut self) {
        let tls = self.tls.get_mut();
        tls.send_close_notify();
        let _ = flush(&self.tcp, tls);
    }
}
