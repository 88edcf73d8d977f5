//! An allocation-free reader and parser for `/proc/self/smaps`.
//!
//! [`SmapsSnapshot::read_self`] reads the whole file with raw `open`/`read`/`close` into a
//! buffer allocated beforehand, so a caller can take a snapshot and make a system call right
//! after it with no heap allocation in between: the process's own `malloc` may map memory,
//! and the snapshot must be exactly the state the next system call sees.
//! [`SmapsSnapshot::vmas`] then walks the text without allocating either.
//!
//! The parser needs only two kinds of lines of each block:
//!
//! ```text
//! 7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
//! Size:                132 kB
//! ...
//! VmFlags: rd wr mr mw me gd ac
//! ```
//!
//! A header line starts with a lowercase hex digit; every field line starts with an uppercase
//! letter. `gd` in `VmFlags` marks a `VM_GROWSDOWN` mapping.

use crate::sys::{find_byte, read_file_into};
use core::fmt;
use std::io;

/// One VMA of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmapsVma<'a> {
    /// First address (page aligned).
    pub start: u64,
    /// One past the last address (page aligned).
    pub end: u64,
    /// `VmFlags` has `gd` (`VM_GROWSDOWN`).
    pub growsdown: bool,
    /// The path or pseudo-name (`[stack]`, `[heap]`, ...) of the header line; empty for
    /// anonymous memory.
    pub name: &'a [u8],
}

/// What was wrong with a line of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmapsError {
    /// The header line at this byte offset is not `start-end perms offset dev inode [name]`.
    BadHeader {
        /// Byte offset of the line in the snapshot.
        offset: usize,
    },
    /// A field line at this byte offset came before any header line.
    FieldBeforeHeader {
        /// Byte offset of the line in the snapshot.
        offset: usize,
    },
}

impl fmt::Display for SmapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmapsError::BadHeader { offset } => {
                write!(f, "smaps: malformed VMA header line at byte {offset}")
            }
            SmapsError::FieldBeforeHeader { offset } => {
                write!(
                    f,
                    "smaps: field line before any VMA header at byte {offset}"
                )
            }
        }
    }
}

impl std::error::Error for SmapsError {}

/// A buffer holding the text of one `/proc/self/smaps` read.
pub struct SmapsSnapshot {
    buf: Vec<u8>,
    len: usize,
}

impl SmapsSnapshot {
    /// An empty snapshot with room for `bytes` bytes of text (about 1.1 KiB per VMA).
    pub fn with_capacity(bytes: usize) -> Self {
        SmapsSnapshot {
            buf: vec![0; bytes.max(4096)],
            len: 0,
        }
    }

    /// Reads all of `/proc/self/smaps` into the buffer.
    ///
    /// Makes no heap allocation unless the buffer turns out to be too small; then it grows the
    /// buffer and reads again, so the text it leaves behind was always read after the last
    /// allocation this function made.
    pub fn read_self(&mut self) -> io::Result<()> {
        loop {
            if read_file_into(c"/proc/self/smaps", &mut self.buf, &mut self.len)? {
                return Ok(());
            }
            let more = self.buf.len();
            self.buf
                .try_reserve_exact(more)
                .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
            self.buf.resize(2 * more, 0);
        }
    }

    /// The text of the last read.
    pub fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The VMAs of the last read, in address order.
    pub fn vmas(&self) -> SmapsIter<'_> {
        SmapsIter::new(self.text())
    }
}

/// Iterator over the VMAs of a snapshot text; see [`SmapsSnapshot::vmas`].
pub struct SmapsIter<'a> {
    text: &'a [u8],
    pos: usize,
    pending: Option<SmapsVma<'a>>,
    failed: bool,
}

impl<'a> SmapsIter<'a> {
    /// Parses `text` (the content of an smaps file).
    pub fn new(text: &'a [u8]) -> Self {
        SmapsIter {
            text,
            pos: 0,
            pending: None,
            failed: false,
        }
    }

    /// The line starting at `self.pos` (without its newline); moves `self.pos` past it.
    fn take_line(&mut self) -> &'a [u8] {
        let rest = &self.text[self.pos..];
        match find_byte(rest, b'\n') {
            Some(i) => {
                self.pos += i + 1;
                &rest[..i]
            }
            None => {
                self.pos = self.text.len();
                rest
            }
        }
    }
}

impl<'a> Iterator for SmapsIter<'a> {
    type Item = Result<SmapsVma<'a>, SmapsError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Looks only at the first byte of most lines: this runs over every line of every
        // snapshot and must stay cheap in debug builds.
        while !self.failed && self.pos < self.text.len() {
            let offset = self.pos;
            match self.text[offset] {
                b'0'..=b'9' | b'a'..=b'f' => {
                    let line = self.take_line();
                    let Some(vma) = parse_header(line) else {
                        self.failed = true;
                        return Some(Err(SmapsError::BadHeader { offset }));
                    };
                    if let Some(done) = self.pending.replace(vma) {
                        return Some(Ok(done));
                    }
                }
                first => {
                    let line = self.take_line();
                    let Some(vma) = self.pending.as_mut() else {
                        if line.is_empty() {
                            continue;
                        }
                        self.failed = true;
                        return Some(Err(SmapsError::FieldBeforeHeader { offset }));
                    };
                    if first == b'V' {
                        if let Some(flags) = line.strip_prefix(b"VmFlags:") {
                            vma.growsdown = flags.split(|&b| b == b' ').any(|f| f == b"gd");
                            return self.pending.take().map(Ok);
                        }
                    }
                }
            }
        }
        self.pending.take().map(Ok)
    }
}

/// Parses `start-end perms offset dev inode [name]`.
fn parse_header(line: &[u8]) -> Option<SmapsVma<'_>> {
    let mut rest = line;
    let start = take_hex(&mut rest, b'-')?;
    let end = take_hex(&mut rest, b' ')?;
    // perms, offset, dev, inode
    for _ in 0..4 {
        rest = rest.strip_prefix(b" ").unwrap_or(rest);
        let field_end = find_byte(rest, b' ').unwrap_or(rest.len());
        if field_end == 0 {
            return None;
        }
        rest = &rest[field_end..];
    }
    let skip = rest.iter().take_while(|&&b| b == b' ').count();
    let name = &rest[skip..];
    (start < end).then_some(SmapsVma {
        start,
        end,
        growsdown: false,
        name,
    })
}

/// Parses lowercase hex digits up to `stop` and consumes the stop byte.
fn take_hex(rest: &mut &[u8], stop: u8) -> Option<u64> {
    let end = find_byte(rest, stop)?;
    if end == 0 || end > 16 {
        return None;
    }
    let mut value = 0u64;
    for &b in &rest[..end] {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(digit);
    }
    *rest = &rest[end + 1..];
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
555555554000-555555556000 r--p 00000000 fe:00 247030                     /usr/bin/cat
Size:                  8 kB
VmFlags: rd mr mw me 
555555556000-555555557000 rw-p 00000000 00:00 0 
Size:                  4 kB
VmFlags: rd wr mr mw me ac 
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
VmFlags: rd wr mr mw me gd ac 
";

    #[test]
    fn parses_blocks_names_and_growsdown() {
        let vmas: Vec<_> = SmapsIter::new(SAMPLE).map(Result::unwrap).collect();
        assert_eq!(vmas.len(), 3);
        assert_eq!(
            vmas[0],
            SmapsVma {
                start: 0x5555_5555_4000,
                end: 0x5555_5555_6000,
                growsdown: false,
                name: b"/usr/bin/cat",
            }
        );
        assert_eq!(vmas[1].name, b"");
        assert!(!vmas[1].growsdown);
        assert_eq!(vmas[2].name, b"[stack]");
        assert!(vmas[2].growsdown);
        assert_eq!(vmas[2].end, 0x7fff_ffff_f000);
    }

    #[test]
    fn block_without_vmflags_and_missing_final_newline() {
        let text = b"1000-2000 ---p 00000000 00:00 0\n3000-5000 ---p 00000000 00:00 0";
        let vmas: Vec<_> = SmapsIter::new(text).map(Result::unwrap).collect();
        assert_eq!(vmas.len(), 2);
        assert_eq!((vmas[1].start, vmas[1].end), (0x3000, 0x5000));
    }

    #[test]
    fn rejects_malformed_lines() {
        let bad = b"10zz-2000 ---p 00000000 00:00 0\n";
        let mut it = SmapsIter::new(bad);
        assert_eq!(it.next(), Some(Err(SmapsError::BadHeader { offset: 0 })));
        assert_eq!(it.next(), None);
        let orphan = b"Size: 4 kB\n";
        assert_eq!(
            SmapsIter::new(orphan).next(),
            Some(Err(SmapsError::FieldBeforeHeader { offset: 0 }))
        );
    }

    #[test]
    fn empty_and_unterminated_inputs() {
        assert_eq!(find_byte(&[], b'\n'), None);
        assert_eq!(find_byte(b"abc", b'\n'), None);
        assert_eq!(find_byte(b"ab\n", b'\n'), Some(2));
        assert_eq!(SmapsIter::new(b"").next(), None);
        // A header cut before its end address ends the walk with an error.
        assert_eq!(
            SmapsIter::new(b"1000-").next(),
            Some(Err(SmapsError::BadHeader { offset: 0 }))
        );
    }

    #[test]
    fn read_self_closes_its_descriptor() {
        let count = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let mut snap = SmapsSnapshot::with_capacity(4096);
        snap.read_self().unwrap();
        let before = count();
        for _ in 0..16 {
            snap.read_self().unwrap();
        }
        // Other tests run on other threads and may hold descriptors for a
        // moment; 16 leaked ones would show regardless.
        assert!(count() < before + 16, "read_self leaks descriptors");
        let mut buf = [0u8; 1];
        let mut len = 0;
        assert!(read_file_into(c"/nonexistent/smaps", &mut buf, &mut len).is_err());
    }

    #[test]
    fn reads_own_smaps() {
        let mut snap = SmapsSnapshot::with_capacity(4096);
        snap.read_self().unwrap();
        let vmas: Vec<_> = snap.vmas().map(Result::unwrap).collect();
        assert!(vmas.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(vmas.iter().any(|v| v.name == b"[stack]" && v.growsdown));
    }
}
