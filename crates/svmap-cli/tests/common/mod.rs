//! Helpers shared by the CLI integration tests.

use std::io::Read;
use std::process::{Child, Output};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Reads `pipe` to its end on a thread and sends what it read (nothing
/// when there is no pipe).
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Waits at most `limit` for `child` to exit and for its piped stdout and
/// stderr to close, reading both on threads meanwhile so that a child
/// that writes more than a pipe holds does not block. Pipes the caller
/// has already taken, or did not ask for, read as empty. `None` when the
/// limit passed: the child is then killed and reaped.
pub fn wait_output(child: &mut Child, limit: Duration) -> Option<Output> {
    let deadline = Instant::now() + limit;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            // A process the child left behind may still hold the pipes:
            // wait for them within the limit (at least a second).
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            let stdout = stdout.recv_timeout(left).ok()?;
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            let stderr = stderr.recv_timeout(left).ok()?;
            return Some(Output {
                status,
                stdout,
                stderr,
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
