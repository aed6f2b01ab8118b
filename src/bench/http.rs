//! A bare HTTP/1.1 keep-alive client for publishing: one request in flight per
//! connection, reconnecting when the server closes. Answers with a Content-Length or a
//! chunked body are read; their bodies are discarded.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tls::Stream;
use super::wire::Url;

/// One keep-alive connection to a publish URL.
pub struct Client {
    url: Url,
    /// The header lines before the Content-Length value.
    head: Vec<u8>,
    stream: Option<Stream>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Client {
    /// A client that POSTs to `url` with these extra header lines (each ending in CRLF).
    pub fn new(url: Url, content_type: &str, extra_headers: &str) -> Client {
        let head = format!(
            "Host: {}\r\nContent-Type: {content_type}\r\n{extra_headers}Content-Length: ",
            url.host
        )
        .into_bytes();
        Client {
            url,
            head,
            stream: None,
            request: Vec::with_capacity(1024),
            response: Vec::with_capacity(1024),
        }
    }

    /// POSTs `body` to the URL's path and reads the answer; its status code.
    pub async fn post(&mut self, body: &[u8]) -> io::Result<u16> {
        let path = std::mem::take(&mut self.url.path);
        let result = self.post_to(&path, body).await;
        self.url.path = path;
        result
    }

    /// POSTs `body` to `path` (with its query) on the URL's server; the status code.
    pub async fn post_to(&mut self, path: &str, body: &[u8]) -> io::Result<u16> {
        self.request.clear();
        self.request
            .extend_from_slice(format!("POST {path} HTTP/1.1\r\n").as_bytes());
        self.request.extend_from_slice(&self.head);
        self.request
            .extend_from_slice(format!("{}\r\n\r\n", body.len()).as_bytes());
        self.request.extend_from_slice(body);
        // A kept-alive connection may have been closed by the server: retry once, fresh.
        let reused = self.stream.is_some();
        match self.exchange().await {
            Err(_) if reused => {
                self.stream = None;
                self.exchange().await
            }
            other => other,
        }
    }

    async fn exchange(&mut self) -> io::Result<u16> {
        let result = self.exchange_once().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange_once(&mut self) -> io::Result<u16> {
        if self.stream.is_none() {
            self.stream = Some(Stream::connect(&self.url, None).await?);
            self.response.clear();
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&self.request).await?;
        stream.flush().await?;
        loop {
            match parse_response(&self.response)? {
                Some(answer) => {
                    self.response.drain(..answer.len);
                    if answer.close {
                        self.stream = None;
                    }
                    return Ok(answer.status);
                }
                None => {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the publish connection",
                        ));
                    }
                    self.response.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// A complete response at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// Bytes it takes, head and body.
    len: usize,
    /// The server will close the connection.
    close: bool,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Parses a complete response; `None` when more bytes are needed.
fn parse_response(buf: &[u8]) -> io::Result<Option<Answer>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(bad("response head too long"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            close = value.contains("close") || (close && !value.contains("keep-alive"));
        }
    }
    let body = head_end + 4;
    let end = if chunked {
        match chunked_end(&buf[body..])? {
            Some(n) => body + n,
            None => return Ok(None),
        }
    } else if let Some(len) = length {
        if buf.len() < body + len {
            return Ok(None);
        }
        body + len
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        body
    } else {
        return Err(bad("response without a length (not supported)"));
    };
    Ok(Some(Answer {
        status,
        len: end,
        close,
    }))
}

/// The length of a complete chunked body (with its last chunk and trailers).
fn chunked_end(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut pos = 0;
    loop {
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|_| bad("bad chunk"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"offset\":1}HTTP/1.1";
        assert_eq!(
            parse_response(r).unwrap(),
            Some(Answer {
                status: 200,
                len: r.len() - 8,
                close: false
            })
        );
        assert_eq!(parse_response(&r[..30]).unwrap(), None);
        let c = b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(c).unwrap().unwrap().status, 404);
        assert!(parse_response(c).unwrap().unwrap().close);
    }

    #[test]
    fn chunked_responses() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap().unwrap().len, r.len());
        assert_eq!(parse_response(&r[..r.len() - 1]).unwrap(), None);
    }
}
