//! Checks of the whole trace path (parser, replay driver, executors, the
//! SVM layer and its device mirrors) on arbitrary input, shared by the
//! cargo-fuzz target `fuzz/fuzz_targets/trace_replay.rs` and the short
//! random run of `cargo test` (`tests/fuzz.rs`).
//!
//! [`check`] turns bytes into a trace ([`decode`]) and replays it
//! ([`run`]). Bytes that start like a trace line (`{`, `#`, a blank or a
//! newline) are the trace itself; any other bytes drive a generator that
//! writes mostly well-formed lines of every operation (with addresses
//! taken from earlier results, odd device geometries, huge sizes, `expect`
//! fields) and now and then a broken one.
//!
//! [`run`] panics (a crash for the fuzzer) when:
//! - the SVM layer breaks an invariant or a device mirror disagrees with
//!   the rule oracle (the executors run with
//!   [`SvmExecutor::with_invariant_checks`]);
//! - populating on fault with a 1-entry TLB and at allocation with a
//!   64-entry one give different output (results never depend on either);
//! - a trace of address-space operations only gives a different output
//!   on [`CpuExecutor`];
//! - a result line is not a JSON object, or a bad-line message is longer
//!   than [`MAX_MESSAGE_LEN`] or spans lines;
//! - anything panics.
//!
//! Not part of the stable API.

use std::fmt::Write as _;

use svmap_svm::Populate;

use crate::replay::{replay_with, Executor, ReplayError, Summary};
use crate::trace::{parse_line, Outcome};
use crate::{CpuExecutor, SvmExecutor};

/// The longest bad-line message [`run`] accepts: messages quote at most
/// [`crate::MAX_QUOTED`] bytes of any value, so they stay short whatever
/// the line.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The most lines [`decode`] generates.
pub const MAX_LINES: usize = 48;

/// Decodes `data` ([`decode`]) and replays it ([`run`]); panics on any
/// violation.
pub fn check(data: &[u8]) {
    let text = decode(data);
    let _ = run(&text);
}

/// The trace `data` stands for: `data` itself when it starts like a trace
/// line, else the trace its bytes generate.
pub fn decode(data: &[u8]) -> Vec<u8> {
    match data.first() {
        None => Vec::new(),
        Some(b'{' | b'#' | b' ' | b'\t' | b'\n' | b'\r') => data.to_vec(),
        Some(_) => Gen::new(&data[1..]).trace(),
    }
}

/// Replays `text` on several executors with every check on, compares what
/// they print, and returns the result of the first. Panics on any
/// violation (see the module documentation).
pub fn run(text: &[u8]) -> Result<Summary, ReplayError> {
    let go = |exec: &mut dyn Executor| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = replay_with(text, &mut out, &mut err, exec, true);
        let msg = r.as_ref().err().map(|e| e.to_string());
        (r, out, err, msg)
    };
    let (result, out, err, msg) = go(&mut SvmExecutor::new(Populate::OnFault)
        .with_tlb_entries(1)
        .with_invariant_checks());
    let (_, out2, err2, msg2) =
        go(&mut SvmExecutor::new(Populate::AtAlloc).with_invariant_checks());
    assert_eq!(
        (&msg, &err, &out),
        (&msg2, &err2, &out2),
        "the executors disagree on\n{}",
        String::from_utf8_lossy(text)
    );
    let (cpu, out2, err2, msg2) = go(&mut CpuExecutor::default());
    if cpu.is_ok() {
        assert_eq!(
            (&msg, &err, &out),
            (&msg2, &err2, &out2),
            "the CPU executor disagrees on\n{}",
            String::from_utf8_lossy(text)
        );
    }
    let out = String::from_utf8(out).expect("results are UTF-8");
    for l in out.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("result line {l:?}: {e}"));
        assert!(v.is_object(), "result line {l:?}");
    }
    if let Some(m) = &msg {
        assert!(
            m.len() <= MAX_MESSAGE_LEN && !m.contains('\n'),
            "message of {} bytes: {}",
            m.len(),
            &m[..m.len().min(2 * MAX_MESSAGE_LEN)]
        );
    }
    result
}

/// The generator: reads choices from the bytes (zeros once they run out)
/// and runs each line it writes on a shadow executor, so that later lines
/// can use the addresses earlier ones returned and name only devices that
/// exist.
struct Gen<'a> {
    data: &'a [u8],
    pos: usize,
    shadow: SvmExecutor,
    /// Addresses results returned, and addresses lines used.
    addrs: Vec<u64>,
    out: Vec<u8>,
}

const NAMES: [&str; 3] = ["a", "b", "gpu"];
const PAGE_SIZES: [u64; 9] = [
    0x1000,
    0x2000,
    0x10000,
    0x20_0000,
    0x4000_0000,
    0x8000_0000,
    1 << 34,
    0x3000,
    0x800,
];
const VA_BITS: [u64; 10] = [12, 13, 16, 20, 32, 39, 47, 48, 57, 64];
const ERRNOS: [&str; 8] = [
    "ENOMEM", "EEXIST", "EINVAL", "E+12", "E012", "E12", "E200", "enomem",
];

impl<'a> Gen<'a> {
    fn new(data: &'a [u8]) -> Self {
        Gen {
            data,
            pos: 0,
            shadow: SvmExecutor::default(),
            addrs: Vec::new(),
            out: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| (v << 8) | u64::from(self.byte()))
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[usize::from(self.byte()) % xs.len()]
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 != 0
    }

    /// A number field value: hex mostly, sometimes decimal or a JSON
    /// integer.
    fn num(&self, v: u64, style: u8) -> String {
        match style % 8 {
            0 => format!("\"{v}\""),
            1 if v <= 1 << 53 => v.to_string(),
            _ => format!("\"{v:#x}\""),
        }
    }

    /// An address: near an earlier one, in a few regions of interest, or
    /// anything.
    fn addr(&mut self) -> u64 {
        let k = self.byte();
        let v = match k % 8 {
            0..=3 if !self.addrs.is_empty() => {
                let a = self.pick(&self.addrs.clone());
                let pages = i64::from(self.byte() as i8 / 16);
                a.wrapping_add_signed(pages * 0x1000)
            }
            0..=5 => {
                let base: u64 = self.pick(&[
                    0x1_0000,
                    0x1000_0000,
                    0x1_0000_0000,
                    0x7f00_0000_0000,
                    0x7fff_f000_0000,
                    0,
                ]);
                let unit = self.pick(&[0x1000u64, 0x10000, 0x20_0000]);
                base.wrapping_add(u64::from(self.byte()) * unit)
            }
            6 => 1u64 << (self.byte() % 64),
            _ => self.u64() & !0xfff,
        };
        if self.addrs.len() < 64 {
            self.addrs.push(v);
        }
        v
    }

    fn len(&mut self) -> u64 {
        match self.byte() % 8 {
            0..=3 => u64::from(self.byte() % 16 + 1) * 0x1000,
            4 => 0x20_0000 * u64::from(self.byte() % 4 + 1),
            5 => 1u64 << (self.byte() % 64),
            6 => u64::from(self.byte()) * 0x10000,
            _ => self.u64() & !0xfff,
        }
    }

    fn device_name(&mut self) -> Option<&'static str> {
        let first = usize::from(self.byte());
        (0..NAMES.len())
            .map(|i| NAMES[(first + i) % NAMES.len()])
            .find(|n| self.shadow.has_device(n))
    }

    /// One line (without its newline).
    fn line(&mut self) -> String {
        let k = self.byte() % 17;
        let s = self.byte();
        let mut l = String::from("{");
        match k {
            0 => {
                l.push_str("\"op\": \"reset\"");
                if self.flag() {
                    let ts = self.pick(&[1u64 << 47, 1 << 39, 1 << 32, 1 << 56]);
                    let _ = write!(l, ", \"task_size\": {}", self.num(ts, s));
                }
                if self.flag() {
                    l.push_str(", \"layout\": \"legacy\"");
                }
            }
            1 | 2 => {
                let start = self.addr();
                let end = start.wrapping_add(self.len());
                let _ = write!(
                    l,
                    "\"op\": \"map\", \"start\": {}, \"end\": {}",
                    self.num(start, s),
                    self.num(end, s)
                );
                if self.byte().is_multiple_of(8) {
                    l.push_str(", \"flags\": \"growsdown\"");
                }
            }
            3 => {
                let (start, len) = (self.addr(), self.len());
                let _ = write!(
                    l,
                    "\"op\": \"unmap\", \"start\": {}, \"length\": {}",
                    self.num(start, s),
                    self.num(len, s)
                );
            }
            4 => {
                let (len, lo, hi) = (self.len(), self.addr(), self.addr());
                let _ = write!(
                    l,
                    "\"op\": \"find\", \"length\": {}, \"low_limit\": {}, \"high_limit\": {}, \"topdown\": {}",
                    self.num(len, s),
                    self.num(lo.min(hi), s),
                    self.num(lo.max(hi), s),
                    self.flag()
                );
            }
            5 => {
                let len = self.len();
                let _ = write!(l, "\"op\": \"mmap\", \"length\": {}", self.num(len, s));
                if self.flag() {
                    let hint = self.addr();
                    let fixed = self.pick(&["no", "fixed", "noreplace"]);
                    let _ = write!(
                        l,
                        ", \"hint\": {}, \"fixed\": \"{fixed}\"",
                        self.num(hint, s)
                    );
                }
            }
            6 | 7 => {
                let name = self.pick(&NAMES);
                let va = if self.byte().is_multiple_of(8) {
                    u64::from(self.byte() % 70)
                } else {
                    self.pick(&VA_BITS)
                };
                let ps = self.pick(&PAGE_SIZES);
                let base = self.pick(&[0u64, 0x1_0000, 0x1_0000_0000, 0x7f00_0000_0000]);
                let mirror = self.pick(&["buffers", "system"]);
                let _ = write!(
                    l,
                    "\"op\": \"device\", \"name\": \"{name}\", \"va_bits\": {va}, \"page_size\": {}, \"base\": {}, \"mirror\": \"{mirror}\"",
                    self.num(ps, s),
                    self.num(base, s)
                );
            }
            8 => {
                let Some(d) = self.device_name() else {
                    return self.line();
                };
                let ps = self.pick(&PAGE_SIZES[..5]);
                let start = self.addr() & !(ps - 1);
                let end = start.wrapping_add(ps * u64::from(self.byte() % 4 + 1));
                let cpu = self.pick(&["fault", "dummy_page"]);
                let _ = write!(
                    l,
                    "\"op\": \"device_map\", \"device\": \"{d}\", \"start\": {}, \"end\": {}, \"cpu\": \"{cpu}\"",
                    self.num(start, s),
                    self.num(end, s)
                );
            }
            9 | 10 => {
                let len = self.len();
                let mut devs = Vec::new();
                for _ in 0..self.byte() % 3 {
                    if let Some(d) = self.device_name() {
                        devs.push(format!("\"{d}\""));
                    }
                }
                let _ = write!(
                    l,
                    "\"op\": \"svm_alloc\", \"length\": {}, \"devices\": [{}], \"topdown\": {}",
                    self.num(len, s),
                    devs.join(", "),
                    self.flag()
                );
                if self.byte().is_multiple_of(4) {
                    let a = 1u64 << (self.byte() % 40);
                    let _ = write!(l, ", \"align\": {}", self.num(a, s));
                }
            }
            11 => {
                let a = self.addr();
                let _ = write!(l, "\"op\": \"svm_free\", \"addr\": {}", self.num(a, s));
            }
            12 => {
                let (start, len) = (self.addr(), self.len());
                let prot = self.pick(&["none", "r", "rw"]);
                let _ = write!(
                    l,
                    "\"op\": \"protect\", \"start\": {}, \"length\": {}, \"prot\": \"{prot}\"",
                    self.num(start, s),
                    self.num(len, s)
                );
            }
            13..=15 => {
                let Some(d) = self.device_name() else {
                    return self.line();
                };
                let a = self
                    .addr()
                    .wrapping_add(u64::from(self.byte() % 16) * 0x100);
                let _ = write!(
                    l,
                    "\"op\": \"device_access\", \"device\": \"{d}\", \"addr\": {}, \"write\": {}",
                    self.num(a, s),
                    self.flag()
                );
            }
            _ => return self.broken_line(),
        }
        if self.byte().is_multiple_of(4) {
            let e = match self.byte() % 4 {
                0 => {
                    let a = self.addr();
                    format!("\"addr\": {}", self.num(a, s))
                }
                1 => format!("\"err\": \"{}\"", self.pick(&ERRNOS)),
                2 => "\"ok\": true".to_owned(),
                _ => format!(
                    "\"fault\": \"{}\"",
                    self.pick(&["unmapped", "protection", "out_of_range"])
                ),
            };
            let _ = write!(l, ", \"expect\": {{{e}}}");
        }
        l.push('}');
        l
    }

    /// A line that is probably bad: raw bytes, a well-formed line with one
    /// byte changed, many keys, or a long value.
    fn broken_line(&mut self) -> String {
        match self.byte() % 4 {
            0 => {
                let n = usize::from(self.byte() % 48);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| match self.byte() {
                        b'\n' => b' ',
                        b => b,
                    })
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            1 => {
                let mut l = self.line().into_bytes();
                if !l.is_empty() {
                    let i = usize::from(self.byte()) % l.len();
                    l[i] = match self.byte() {
                        b'\n' => b'"',
                        b => b,
                    };
                }
                String::from_utf8_lossy(&l).into_owned()
            }
            2 => {
                let n = usize::from(self.byte());
                let dup = self.flag();
                let mut l = String::from("{\"op\": \"find\"");
                for i in 0..n {
                    let _ = write!(l, ", \"k{}\": 1", if dup { i / 2 } else { i });
                }
                l.push('}');
                l
            }
            _ => {
                // Now and then past the line length limit.
                let unit = if self.byte().is_multiple_of(16) {
                    300
                } else {
                    4
                };
                let n = usize::from(self.byte()) * unit;
                let field = self.pick(&["op", "name", "k"]);
                format!("{{\"op\": \"device\", \"{field}\": \"{}\"}}", "x".repeat(n))
            }
        }
    }

    /// The whole trace: lines until the bytes run out or [`MAX_LINES`].
    /// A line the shadow executor refuses (a bad line, where a replay
    /// stops) is mostly dropped; one in eight is kept, and ends the trace.
    fn trace(mut self) -> Vec<u8> {
        for _ in 0..MAX_LINES {
            if self.done() {
                break;
            }
            let l = self.line();
            let good = match parse_line(&l) {
                Err(_) => false,
                Ok(entry) => {
                    !entry
                        .op
                        .device_refs()
                        .iter()
                        .any(|n| !self.shadow.has_device(n))
                        && match self.shadow.execute(&entry.op) {
                            Ok(Some(Outcome::Addr(a))) => {
                                if self.addrs.len() < 64 {
                                    self.addrs.push(a);
                                }
                                true
                            }
                            Ok(_) => true,
                            Err(_) => false,
                        }
                }
            };
            let last = !good && self.byte().is_multiple_of(8);
            if good || last {
                self.out.extend_from_slice(l.as_bytes());
                self.out.push(b'\n');
            }
            if last {
                break;
            }
        }
        self.out
    }
}
