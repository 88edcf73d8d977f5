//! A progress line on standard error for long runs, only when standard error
//! is a terminal and `CI` is unset (never in pipes, files or CI logs).

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// True if a progress line may be shown.
pub fn enabled() -> bool {
    io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// Wraps a reader and redraws `label: P% (N MiB)` at most five times a
/// second as its bytes are consumed; clears the line when dropped.
pub struct ProgressReader<R> {
    inner: R,
    label: &'static str,
    total: Option<u64>,
    done: u64,
    last: Instant,
    shown: bool,
}

impl<R> ProgressReader<R> {
    /// `total`: the input's size in bytes, if known.
    pub fn new(inner: R, label: &'static str, total: Option<u64>) -> Self {
        ProgressReader {
            inner,
            label,
            total,
            done: 0,
            last: Instant::now(),
            shown: false,
        }
    }

    fn tick(&mut self, n: usize) {
        self.done += n as u64;
        if self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        let mib = self.done as f64 / (1 << 20) as f64;
        let mut err = io::stderr();
        let _ = match self.total {
            Some(t) if t > 0 => write!(
                err,
                "\r{}: {:3.0}% ({mib:.0} MiB)\x1b[K",
                self.label,
                100.0 * self.done as f64 / t as f64
            ),
            _ => write!(err, "\r{}: {mib:.0} MiB\x1b[K", self.label),
        };
    }
}

impl<R> Drop for ProgressReader<R> {
    fn drop(&mut self) {
        if self.shown {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tick(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for ProgressReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.tick(amt);
    }
}
