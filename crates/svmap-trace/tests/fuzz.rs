//! The check of the `trace_replay` fuzz target (`svmap_trace::fuzzing`) on
//! a few thousand random byte strings (a few seconds), and on every trace
//! under `tests/data/` that is small enough for its per-step checks.

use std::path::Path;
use std::time::{Duration, Instant};

use svmap_trace::fuzzing;

/// xorshift64*: a fixed, reproducible stream.
struct Gen(u64);

impl Gen {
    fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn fuzz_check_on_random_inputs() {
    let budget = Duration::from_secs(4);
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let (mut iters, mut lines, mut bad) = (0u64, 0u64, 0u64);
    while iters < 3000 && (iters < 200 || start.elapsed() < budget) {
        let len = (g.u64() % 256) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| g.u64() as u8).collect();
        // Mostly generated traces; one input in eight is raw text.
        if iters % 8 == 0 {
            if let Some(b) = data.first_mut() {
                *b = b'{';
            }
        } else if let Some(b) = data.first_mut() {
            *b |= 0x80;
        }
        let text = fuzzing::decode(&data);
        lines += text.iter().filter(|&&b| b == b'\n').count() as u64;
        let r = std::panic::catch_unwind(|| fuzzing::run(&text));
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => bad += 1,
            Err(_) => panic!(
                "input #{iters} {data:02x?}\ntrace:\n{}",
                String::from_utf8_lossy(&text)
            ),
        }
        iters += 1;
    }
    eprintln!(
        "fuzz_check_on_random_inputs: {iters} inputs, {lines} lines, {bad} stopped at a bad line, {:.2?}",
        start.elapsed()
    );
    assert!(iters >= 200);
    // The generator must reach past the first line and mostly write good
    // lines, or the check tests little.
    assert!(lines > 4 * iters, "{lines} lines for {iters} inputs");
    assert!(bad < iters, "every input stopped at a bad line");
}

#[test]
fn fuzz_check_on_the_svm_traces() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("svm-") || name.starts_with("example-")) {
            continue;
        }
        let text = std::fs::read(&p).unwrap();
        let s = fuzzing::run(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.mismatches, 0, "{name}");
        n += 1;
    }
    assert!(n >= 4, "{n} traces in {}", dir.display());
}

#[test]
fn hostile_inputs_pass_the_check() {
    // The reproductions this check must keep out, as fuzz inputs.
    let cases: Vec<Vec<u8>> = vec![
        format!(
            "{{\"op\":\"find\",{}}}\n",
            (0..5000)
                .map(|i| format!("\"k{i}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .into_bytes(),
        vec![0u8; 200_000],
        format!("{{\"op\": \"{}\"}}\n", "a".repeat(60_000)).into_bytes(),
        b"{\"op\":\"device\",\"name\":\"a\",\"va_bits\":64,\"page_size\":\"0x400000000\"}\n".to_vec(),
        b"{\"op\":\"device\",\"name\":\"a\",\"va_bits\":12,\"page_size\":\"0x8000\",\"mirror\":\"system\"}\n".to_vec(),
        b"{\"op\":\"find\",\"length\":\"0x1000\",\"low_limit\":\"0\",\"high_limit\":\"0x1000\",\"expect\":{\"err\":\"E+12\"}}\n".to_vec(),
    ];
    for (i, c) in cases.iter().enumerate() {
        let e = fuzzing::run(c).expect_err("a bad line");
        assert!(e.to_string().starts_with("line 1: "), "case {i}: {e}");
    }
}
