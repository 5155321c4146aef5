//! A plain HTTP/1.0 GET on std's socket, read to the end: the latency figures are the
//! agent's, not an HTTP client's. (xtask builds unoptimized, and ureq then took longer to
//! read a 2 MB scrape than the agent took to write it; Prometheus's own client is compiled
//! Go.)
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

pub fn get(addr: &str, path: &str) -> Result<Vec<u8>> {
    get_with(addr, path, &[])
}

/// [`get`] with more request headers (`Accept`).
pub fn get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<Vec<u8>> {
    use std::io::{Read as _, Write as _};
    let url = format!("http://{addr}{path}");
    let socket = addr
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("{addr}: not an IP address and port"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5))
        .with_context(|| format!("GET {url}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .with_context(|| format!("GET {url}"))?;
    let mut response = Vec::with_capacity(64 << 10);
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("GET {url}: reading the response"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("GET {url}: no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.split_off(split + 4);
    let status = head.lines().next().unwrap_or("no status line");
    if status.split_ascii_whitespace().nth(1) != Some("200") {
        bail!("GET {url}: {status}");
    }
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if let Some(length) = length
        && length != body.len()
    {
        bail!(
            "GET {url}: {} of {length} bytes before the connection closed",
            body.len()
        );
    }
    Ok(body)
}
