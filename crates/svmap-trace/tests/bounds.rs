//! Hostile traces get a bad line, in bounded time and memory: the line
//! length limit, linear duplicate-key checks, bounded quotes in messages,
//! strict errno names, device sizes, device page tables that do not grow
//! with a long replay.

use std::io::{BufReader, Read};

use svmap_svm::{Populate, MAX_DEVICES, MAX_TLB_ENTRIES};
use svmap_trace::trace::parse_line;
use svmap_trace::{
    replay, replay_with, ReplayError, Summary, SvmExecutor, MAX_LINE_LEN, MAX_QUOTED,
};

/// Replays `text` with `--check`; the result and the messages on `err`.
fn run(text: &[u8]) -> (Result<Summary, ReplayError>, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = replay(text, &mut out, &mut err, true);
    (r, String::from_utf8(err).unwrap())
}

/// The message of the bad line `text` must stop at, with its line number.
fn bad_line(text: &[u8]) -> (u64, String) {
    match run(text).0 {
        Err(ReplayError::BadLine { line, msg }) => (line, msg),
        r => panic!("not a bad line: {r:?}"),
    }
}

#[test]
fn lines_up_to_the_limit_replay_and_longer_ones_are_bad() {
    // A valid line padded with blanks to exactly the limit.
    let mut l = b"{\"op\": \"reset\"}".to_vec();
    l.resize(MAX_LINE_LEN, b' ');
    let mut text = l.clone();
    text.push(b'\n');
    text.extend_from_slice(&l); // the last line has no newline
    let (r, _) = run(&text);
    assert_eq!(r.unwrap().ops, 2);
    // One byte more, on line 3.
    let mut text = b"# a comment\n{\"op\": \"reset\"}\n".to_vec();
    l.push(b' ');
    text.extend_from_slice(&l);
    text.push(b'\n');
    let (line, msg) = bad_line(&text);
    assert_eq!(line, 3);
    assert!(msg.contains(&MAX_LINE_LEN.to_string()), "{msg}");
    // The same check in the parser on its own.
    let s = String::from_utf8(l).unwrap();
    assert!(parse_line(&s).unwrap_err().0.contains("longer than"));
    assert!(parse_line(&s[..MAX_LINE_LEN]).is_ok());
}

/// An endless input without a newline (`svmap replay /dev/zero`): the
/// driver reads one byte past the limit and stops.
#[test]
fn an_endless_line_stops_after_the_limit() {
    struct Counting<R> {
        inner: R,
        read: usize,
    }
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }
    let mut src = Counting {
        inner: std::io::repeat(0),
        read: 0,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = replay(
        BufReader::with_capacity(4096, &mut src),
        &mut out,
        &mut err,
        false,
    );
    match r {
        Err(ReplayError::BadLine { line: 1, msg }) => assert!(msg.contains("longer than")),
        r => panic!("{r:?}"),
    }
    assert!(src.read <= MAX_LINE_LEN + 4096, "read {} bytes", src.read);
    assert!(out.is_empty());
}

#[test]
fn many_keys_are_checked_in_linear_time_and_duplicates_found() {
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("\"k{i}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    };
    // 6,000 distinct keys: the first unknown one is named.
    let l = format!("{{\"op\":\"find\",{}}}", keys(6000));
    assert!(l.len() < MAX_LINE_LEN);
    let e = parse_line(&l).unwrap_err().0;
    assert!(e.starts_with("unknown field \"k0\""), "{e}");
    // The same keys, then a repeat of the first: found whatever the order.
    let l = format!("{{\"op\":\"find\",{},\"k0\":2}}", keys(6000));
    let e = parse_line(&l).unwrap_err().0;
    assert_eq!(e, "field \"k0\" appears twice");
    let l = r#"{"op": "find", "length": "1", "low_limit": "0", "high_limit": "1", "op": "find"}"#;
    assert_eq!(parse_line(l).unwrap_err().0, "field \"op\" appears twice");
    let l = r#"{"op": "find", "length": "1", "low_limit": "0", "high_limit": "1", "expect": {"ok": true, "ok": true}}"#;
    assert_eq!(parse_line(l).unwrap_err().0, "field \"ok\" appears twice");
}

#[test]
fn messages_quote_a_bounded_prefix_of_long_values() {
    let long = "x".repeat(60_000);
    let cases = [
        format!("{{\"op\": \"{long}\"}}\n"),
        format!("{{\"op\": \"reset\", \"{long}\": 1}}\n"),
        format!("{{\"op\": \"map\", \"start\": \"{long}\", \"end\": \"0x1000\"}}\n"),
        format!(
            "{{\"op\": \"device_access\", \"device\": \"{long}\", \"addr\": 0, \"write\": true}}\n"
        ),
        format!(
            "{{\"op\": \"protect\", \"start\": 0, \"length\": \"0x1000\", \"prot\": \"{long}\"}}\n"
        ),
        format!(
            "{{\"op\": \"mmap\", \"length\": \"0x1000\", \"expect\": {{\"err\": \"{long}\"}}}}\n"
        ),
    ];
    for t in &cases {
        let (line, msg) = bad_line(t.as_bytes());
        assert_eq!(line, 1);
        assert!(msg.len() < 300, "{} bytes: {}", msg.len(), &msg[..300]);
        assert!(msg.contains("(60000 bytes)"), "{msg}");
        assert!(
            msg.contains(&format!("\"{}\"...", "x".repeat(MAX_QUOTED))),
            "{msg}"
        );
    }
    // A cut never splits a character.
    let name = format!("{}ü{}", "a".repeat(MAX_QUOTED - 1), "b".repeat(100));
    let (_, msg) = bad_line(format!("{{\"op\": \"{name}\"}}").as_bytes());
    assert!(
        msg.contains(&format!("\"{}\"...", "a".repeat(MAX_QUOTED - 1))),
        "{msg}"
    );
}

#[test]
fn errno_names_are_parsed_strictly() {
    let line = |e: &str| {
        format!(
            "{{\"op\": \"find\", \"length\": \"0x1000\", \"low_limit\": \"0\", \"high_limit\": \"0x1000\", \"expect\": {{\"err\": \"{e}\"}}}}\n"
        )
    };
    for e in [
        "E+12", "E012", "E12", "E 12", "ENOMEM ", " ENOMEM", "enomem", "E", "",
    ] {
        let (_, msg) = bad_line(line(e).as_bytes());
        assert!(msg.contains("is not an errno name"), "{e:?}: {msg}");
    }
    for (e, mismatches) in [("ENOMEM", 0), ("EEXIST", 1)] {
        let (r, _) = run(line(e).as_bytes());
        assert_eq!(r.unwrap().mismatches, mismatches, "{e}");
    }
}

#[test]
fn device_sizes_beyond_the_limits_are_bad_lines() {
    let dev = |va: u32, ps: &str| {
        format!("{{\"op\":\"device\",\"name\":\"a\",\"va_bits\":{va},\"page_size\":\"{ps}\",\"mirror\":\"system\"}}\n")
    };
    for (va, ps, what) in [
        (64, "0x400000000", "power of two from 0x1000 to 0x40000000"),
        (64, "0x80000000", "power of two from 0x1000 to 0x40000000"),
        (12, "0x8000", "larger than the whole address space"),
        (29, "0x40000000", "larger than the whole address space"),
    ] {
        let (line, msg) = bad_line(dev(va, ps).as_bytes());
        assert_eq!(line, 1);
        assert!(msg.contains(what), "{va} {ps}: {msg}");
    }
    for (va, ps) in [(64, "0x40000000"), (30, "0x40000000"), (12, "0x1000")] {
        let (r, _) = run(dev(va, ps).as_bytes());
        assert_eq!(r.unwrap().ops, 1, "{va} {ps}");
    }
    // The TLB size of the executor is checked when a device is defined.
    for (entries, ok) in [
        (0, false),
        (1, true),
        (MAX_TLB_ENTRIES, true),
        (usize::MAX, false),
    ] {
        let mut exec = SvmExecutor::default().with_tlb_entries(entries);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = replay_with(
            dev(48, "0x1000").as_bytes(),
            &mut out,
            &mut err,
            &mut exec,
            false,
        );
        match r {
            Ok(_) => assert!(ok, "{entries}"),
            Err(e) => {
                assert!(!ok, "{entries}: {e}");
                assert!(e.to_string().contains("TLB entries"), "{e}");
            }
        }
    }
}

/// `MAX_DEVICES` `device` lines replay; one more is a bad line that names
/// the cap (before the cap, 100,000 devices made every later unmap visit
/// each of them); after a `reset` there is room again.
#[test]
fn a_device_beyond_the_cap_is_a_bad_line() {
    let line = |i: usize| format!("{{\"op\": \"device\", \"name\": \"d{i}\", \"va_bits\": 48}}\n");
    let full: String = (0..MAX_DEVICES).map(line).collect();
    let (r, _) = run(full.as_bytes());
    assert_eq!(r.unwrap().ops, MAX_DEVICES as u64);
    let over = format!("{full}{}", line(MAX_DEVICES));
    let (n, msg) = bad_line(over.as_bytes());
    assert_eq!(n, MAX_DEVICES as u64 + 1);
    assert!(msg.contains(&format!("{MAX_DEVICES} devices")), "{msg}");
    // A duplicate name in a full space is still an EEXIST result.
    let dup = format!(
        "{full}{{\"op\": \"device\", \"name\": \"d0\", \"va_bits\": 48, \"expect\": {{\"err\": \"EEXIST\"}}}}\n"
    );
    let (r, _) = run(dup.as_bytes());
    let s = r.unwrap();
    assert_eq!((s.checked, s.mismatches), (1, 0));
    let again = format!("{full}{{\"op\": \"reset\"}}\n{}", line(MAX_DEVICES));
    let (r, _) = run(again.as_bytes());
    assert_eq!(r.unwrap().ops, MAX_DEVICES as u64 + 2);
}

/// The page-table leak loop: map a page, touch it from a device, unmap it,
/// each time in a new 2 MiB region. The device's page table must hold one
/// root and nothing else at the end.
#[test]
fn a_long_map_access_unmap_loop_leaves_an_empty_page_table() {
    let mut text =
        String::from("{\"op\":\"device\",\"name\":\"g\",\"va_bits\":48,\"mirror\":\"system\"}\n");
    for i in 0..5000u64 {
        let a = (1u64 << 32) + i * 0x20_0000;
        text.push_str(&format!(
            "{{\"op\":\"map\",\"start\":\"{a:#x}\",\"end\":\"{:#x}\"}}\n\
             {{\"op\":\"device_access\",\"device\":\"g\",\"addr\":\"{a:#x}\",\"write\":true,\"expect\":{{\"ok\":true}}}}\n\
             {{\"op\":\"unmap\",\"start\":\"{a:#x}\",\"length\":\"0x1000\"}}\n",
            a + 0x1000
        ));
    }
    for populate in [Populate::OnFault, Populate::AtAlloc] {
        let mut exec = SvmExecutor::new(populate);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let s = replay_with(text.as_bytes(), &mut out, &mut err, &mut exec, true).unwrap();
        assert_eq!((s.ops, s.checked, s.mismatches), (15001, 5000, 0));
        let mmu = exec.space().device("g").unwrap().mmu();
        assert_eq!(mmu.table_counts(), (1, 0));
        assert_eq!(mmu.tlb_len(), 0);
    }
}
