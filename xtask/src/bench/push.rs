//! What push costs the agent: two agents with every collector run side by side over the same
//! window, one pushing every second to a receiver that accepts everything (204), the other
//! not. CPU per push is the difference of their CPU time (all threads, from
//! /proc/<pid>/task/*/schedstat, nanoseconds) divided by the pushes; bytes per push is the
//! compressed body, from the agent's own counter.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::Path,
    time::Duration,
};

use anyhow::Result;

use super::{free_addr, get, start};

#[derive(Debug, Default, Clone)]
pub struct PushFigures {
    pub cpu_ms_per_push: f64,
    pub bytes_per_push: f64,
    pub samples_per_push: f64,
    pub pushes: f64,
}

/// CPU time of every thread of a process, nanoseconds.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// A remote_write receiver that reads each request and answers 204.
fn sink() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(clone) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(clone);
                let mut out = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    // Request line, then headers up to the blank line.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l
                            .to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                        {
                            length = v.parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err()
                        || out.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub fn measure(nodelens: &Path, seconds: u64) -> Result<PushFigures> {
    let receiver = sink()?;
    let push_addr = free_addr()?;
    let pushing = start(
        "nodelens",
        nodelens,
        &[
            "--listen-address".into(),
            push_addr.clone(),
            "--remote-write-url".into(),
            format!("http://{receiver}/api/v1/write"),
            "--remote-write-interval".into(),
            "1s".into(),
        ],
        push_addr.clone(),
    )?;
    let quiet_addr = free_addr()?;
    let quiet = start(
        "nodelens",
        nodelens,
        &["--listen-address".into(), quiet_addr.clone()],
        quiet_addr,
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let counters = || -> Result<(f64, f64, f64)> {
        let text = String::from_utf8(get(&push_addr, "/metrics")?)?;
        Ok((
            value(&text, "nodelens_remote_write_rounds_total"),
            value(&text, "nodelens_remote_write_sent_bytes_total"),
            value(
                &text,
                "nodelens_remote_write_samples_total{result=\"sent\"}",
            ),
        ))
    };
    let (r0, b0, s0) = counters()?;
    let (p0, q0) = (cpu_ns(pushing.pid())?, cpu_ns(quiet.pid())?);
    std::thread::sleep(Duration::from_secs(seconds));
    let (p1, q1) = (cpu_ns(pushing.pid())?, cpu_ns(quiet.pid())?);
    // The scrape of the counters costs the pushing agent too: read them after the CPU.
    let (r1, b1, s1) = counters()?;
    let pushes = r1 - r0;
    // Signed: a thread that exited takes its time out of the sum (schedstat is per live
    // thread), so a difference can come out negative; it is then noise, not a figure.
    let extra_ns = (p1 as f64 - p0 as f64) - (q1 as f64 - q0 as f64);
    Ok(PushFigures {
        cpu_ms_per_push: extra_ns / 1e6 / pushes.max(1.0),
        bytes_per_push: (b1 - b0) / pushes.max(1.0),
        samples_per_push: (s1 - s0) / pushes.max(1.0),
        pushes,
    })
}
