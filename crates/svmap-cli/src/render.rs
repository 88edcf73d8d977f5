//! The renderings of `svmap inspect`'s report
//! ([`svmap_linux::inspect::Report`]): text for people, JSON (through
//! `serde_json`) for tools.

use std::fmt::Write;

use serde_json::{json, Value};
use svmap_linux::inspect::{Report, VmaInfo};

/// An address as a `"0x..."` string (addresses exceed the 2^53 that JSON
/// numbers hold exactly in most readers).
fn hex(v: u64) -> Value {
    Value::String(format!("{v:#x}"))
}

fn vma_json(v: &VmaInfo) -> Value {
    json!({
        "start": hex(v.start),
        "end": hex(v.end),
        "perms": v.perms,
        "growsdown": v.growsdown,
        "visibility": v.visibility.name(),
        "name": v.name,
        "reserved": v.reserved,
    })
}

/// The report as one JSON object: `pid`, `va_bits`, `limit`, `floor`,
/// `free_bytes`, `free_holes`, `mapped_above_bytes`, `reserved_above_bytes`
/// (`PROT_NONE` reservations, not memory), `fragmentation`,
/// `largest_free` (`[{start, end, bytes}]`), `vmas` and `beyond_user`
/// (`[{start, end, perms, growsdown, visibility, name, reserved}]`); addresses as
/// `"0x..."` strings.
pub fn inspect_json(r: &Report) -> Value {
    json!({
        "pid": r.pid,
        "va_bits": r.va_bits,
        "limit": hex(r.limit),
        "floor": hex(r.floor),
        "free_bytes": r.free_bytes,
        "free_holes": r.free_holes,
        "mapped_above_bytes": r.mapped_above_bytes,
        "reserved_above_bytes": r.reserved_above_bytes,
        "fragmentation": r.fragmentation,
        "largest_free": r
            .largest_free
            .iter()
            .map(|&(s, e)| json!({"start": hex(s), "end": hex(e), "bytes": e - s}))
            .collect::<Vec<_>>(),
        "vmas": r.vmas.iter().map(vma_json).collect::<Vec<_>>(),
        "beyond_user": r.beyond_user.iter().map(vma_json).collect::<Vec<_>>(),
    })
}

/// Bytes with a binary unit, one decimal: `1.5 GiB`.
pub fn human(b: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

/// The report as text: a header line, one line per VMA, the free space and
/// the largest free windows.
pub fn inspect_text(r: &Report) -> String {
    let mut f = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        f,
        "process {}: {} VMAs; device window [{:#x}, {:#x}) ({} bits)",
        r.pid,
        r.vmas.len(),
        r.floor,
        r.limit,
        r.va_bits
    );
    for v in r.vmas.iter().chain(&r.beyond_user) {
        let _ = writeln!(
            f,
            "  {:>16x}-{:<16x} {} {:<9} {}{}",
            v.start,
            v.end,
            v.perms,
            v.visibility.name(),
            if v.reserved {
                "(reserved, no memory)"
            } else {
                &v.name
            },
            if v.growsdown { " (grows down)" } else { "" }
        );
    }
    let _ = writeln!(
        f,
        "free below the limit: {} in {} holes; mapped above it: {} (and {} reserved, no memory); fragmentation {:.1}%",
        human(r.free_bytes),
        r.free_holes,
        human(r.mapped_above_bytes),
        human(r.reserved_above_bytes),
        r.fragmentation * 100.0
    );
    let _ = writeln!(f, "largest free windows:");
    for (s, e) in &r.largest_free {
        let _ = writeln!(f, "  {s:#x}-{e:#x} {}", human(e - s));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use svmap_linux::inspect::Visibility;

    fn report() -> Report {
        let vma = |start, end, name: &str, growsdown, visibility| VmaInfo {
            start,
            end,
            perms: "rw-p".to_owned(),
            name: name.to_owned(),
            growsdown,
            visibility,
            reserved: false,
        };
        Report {
            pid: 42,
            va_bits: 40,
            limit: 1 << 40,
            floor: 0x10000,
            vmas: vec![
                vma(
                    0x40_0000,
                    0x41_0000,
                    "/bin/\"x\"",
                    false,
                    Visibility::Visible,
                ),
                vma(
                    0x7fff_0000_0000,
                    0x7fff_0002_1000,
                    "[stack]",
                    true,
                    Visibility::Invisible,
                ),
            ],
            beyond_user: vec![vma(
                0xffff_ffff_ff60_0000,
                0xffff_ffff_ff60_1000,
                "[vsyscall]",
                false,
                Visibility::Invisible,
            )],
            largest_free: vec![(0x41_0000, 1 << 40), (0x10000, 0x40_0000)],
            free_bytes: (1 << 40) - 0x41_0000 + 0x40_0000 - 0x10000,
            free_holes: 2,
            mapped_above_bytes: 0x2_1000,
            reserved_above_bytes: 0x1000,
            fragmentation: 0.25,
        }
    }

    #[test]
    fn json_has_every_field_with_hex_addresses() {
        let r = report();
        let v = inspect_json(&r);
        // A JSON text that reads back as the same value.
        let back: Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(back, v);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["limit"], "0x10000000000");
        assert_eq!(v["floor"], "0x10000");
        assert_eq!(v["fragmentation"], 0.25);
        assert_eq!(v["largest_free"][0]["start"], "0x410000");
        assert_eq!(v["largest_free"][1]["bytes"], 0x40_0000 - 0x10000);
        assert_eq!(v["vmas"][0]["name"], "/bin/\"x\"");
        assert_eq!(v["vmas"][1]["visibility"], "invisible");
        assert_eq!(v["vmas"][1]["growsdown"], true);
        assert_eq!(v["beyond_user"][0]["name"], "[vsyscall]");
        assert_eq!(v["reserved_above_bytes"], 0x1000);
        assert_eq!(v["vmas"][0]["reserved"], false);
        // Field order as the help text lists it.
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pid",
                "va_bits",
                "limit",
                "floor",
                "free_bytes",
                "free_holes",
                "mapped_above_bytes",
                "reserved_above_bytes",
                "fragmentation",
                "largest_free",
                "vmas",
                "beyond_user"
            ]
        );
    }

    #[test]
    fn text_lists_every_vma_and_window() {
        let t = inspect_text(&report());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "process 42: 2 VMAs; device window [0x10000, 0x10000000000) (40 bits)"
        );
        assert!(lines[2].ends_with("[stack] (grows down)"), "{}", lines[2]);
        assert!(lines[2].contains("invisible"));
        assert!(lines[3].contains("[vsyscall]"));
        assert!(lines[4].contains("in 2 holes") && lines[4].contains("fragmentation 25.0%"));
        assert_eq!(lines[5], "largest free windows:");
        assert_eq!(lines[7], "  0x10000-0x400000 3.9 MiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(10), "10.0 B");
    }
}
