//! wss:// and https:// for the generator (issue #18 item 5): a connection is plain TCP or
//! TLS (tokio-rustls), trusting the certificates of `--ca-file` (e.g. the server's own
//! self-signed certificate, as bench/run.sh makes for its `-wss` cases).

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::wire::{tcp, Url};

/// The TLS client of this run, once `--ca-file` is given.
static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();

/// Trusts the PEM certificates in `ca_file` for wss:// and https:// URLs.
pub fn trust(ca_file: &Path) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("--ca-file {}", ca_file.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    anyhow::ensure!(added > 0, "--ca-file {}: no certificate", ca_file.display());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let _ = CONNECTOR.set(TlsConnector::from(Arc::new(config)));
    Ok(())
}

/// A connection to the server under test.
#[derive(Debug)]
pub enum Stream {
    /// ws:// or http://.
    Plain(TcpStream),
    /// wss:// or https://.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects to `url` (from `source` when given), with the TLS handshake for wss://
    /// and https:// (the server name is the URL's host).
    pub async fn connect(url: &Url, source: Option<Ipv4Addr>) -> io::Result<Stream> {
        let stream = tcp(url.addr, source).await?;
        if !url.tls {
            return Ok(Stream::Plain(stream));
        }
        let connector = CONNECTOR.get().ok_or_else(|| {
            io::Error::other("wss:// and https:// need --ca-file (the server's certificate)")
        })?;
        let host = match url.host.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => url.host.as_str(),
        };
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = connector.connect(name, stream).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
