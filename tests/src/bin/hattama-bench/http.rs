//! The benches' one HTTP client: minimal HTTP/1.1 keep-alive, one request at a time, bodies with
//! `Content-Length` only. A client thread's own cost then stays small next to the server's on
//! the shared cores (a blocking reqwest client costs several times as much CPU per request), and
//! the server and nginx are always measured with the same client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// One keep-alive connection.
pub struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    line: String,
}

/// An answer: status, the headers asked for, the body.
pub struct Answer {
    pub status: u16,
    pub offset: Option<u64>,
    pub body: Vec<u8>,
}

impl Conn {
    pub fn connect(url: &str) -> Result<Self> {
        let addr = url.strip_prefix("http://").context("an http:// URL")?.to_owned();
        let stream = TcpStream::connect(&addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self {
            addr,
            reader: BufReader::with_capacity(64 << 10, stream),
            request: Vec::with_capacity(4096),
            line: String::new(),
        })
    }

    /// Sends `method path` with `headers` and `body`; reads the answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer> {
        let mut out = Vec::new();
        let (status, offset) = self.exchange(method, path, headers, body, &mut out)?;
        Ok(Answer { status, offset, body: out })
    }

    /// GETs `path` with `headers` into `out` (reusing its allocation); returns the status.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)], out: &mut Vec<u8>) -> Result<u16> {
        Ok(self.exchange("GET", path, headers, &[], out)?.0)
    }

    /// One request and its answer: the status and `Upload-Offset`; the body goes into `out`.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(u16, Option<u64>)> {
        self.request.clear();
        write!(self.request, "{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr)?;
        for (name, value) in headers {
            write!(self.request, "{name}: {value}\r\n")?;
        }
        if method != "GET" || !body.is_empty() {
            write!(self.request, "Content-Length: {}\r\n", body.len())?;
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        self.reader.get_mut().write_all(&self.request)?;
        self.line.clear();
        self.reader.read_line(&mut self.line)?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {:?}", self.line))?;
        let (mut len, mut offset, mut close) = (0usize, None, false);
        loop {
            self.line.clear();
            ensure!(self.reader.read_line(&mut self.line)? > 0, "connection closed in headers");
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                len = value.parse().context("Content-Length")?;
            } else if name.eq_ignore_ascii_case("upload-offset") {
                offset = Some(value.parse().context("Upload-Offset")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("{method} {path}: Transfer-Encoding {value} is not supported here");
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
        out.clear();
        out.resize(len, 0);
        self.reader.read_exact(out)?;
        if close {
            *self = Self::connect(&format!("http://{}", self.addr))?;
        }
        Ok((status, offset))
    }
}
