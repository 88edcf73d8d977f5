//! The SVG output: well-formed, complete, escaped, deterministic, and (when
//! `rsvg-convert` is installed) rendered to a PNG of a sane size.

use std::path::PathBuf;
use std::process::Command;

use svmap_viz::{hex, xml, Kind, Picture, Space};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// A picture shaped like the demo's: a 47-bit CPU space with mappings
/// above a 40-bit device limit, a reservation with buffers below it, a freed
/// buffer, a refused allocation, and a device column.
fn demo_like() -> Picture {
    let limit = 1u64 << 40;
    let top = 1u64 << 47;
    let win = (limit - 256 * MIB, limit);
    let bufs: Vec<(u64, u64)> = (0..8)
        .map(|i| (win.0 + i * 512 * KIB, win.0 + (i + 1) * 512 * KIB))
        .collect();
    let mut cpu = Space::new("CPU process (pid 1234)");
    cpu.limit(limit);
    cpu.region(
        0x5555_5555_4000,
        0x5555_5560_0000,
        Kind::Mapping,
        "svmap (5 VMAs)",
    );
    cpu.region(0x5555_5600_0000, 0x5555_5602_1000, Kind::Mapping, "[heap]");
    cpu.region(
        0x7fff_f7d0_0000,
        0x7fff_f7ff_f000,
        Kind::Mapping,
        "libc.so.6 & ld <2>",
    );
    cpu.region(
        0x7fff_e000_0000,
        0x7fff_e400_0000,
        Kind::AboveLimit,
        "Vec before the device: 64 MiB",
    );
    cpu.region(0x7fff_fffd_e000, 0x7fff_ffff_f000, Kind::Mapping, "[stack]");
    cpu.region(win.0, win.1, Kind::Reservation, "SVM window (reserved)");
    for (i, &(s, e)) in bufs.iter().enumerate() {
        let k = if i == 3 { Kind::Freed } else { Kind::SvmBuffer };
        cpu.region(s, e, k, format!("buffer {i}"));
    }
    let mut dev = Space::new("device (peer pid 1235, 40-bit MMU)");
    dev.limit(limit).window(0x10000, limit);
    dev.region(limit, top, Kind::Unreachable, "unreachable");
    dev.region(0x10000, win.0, Kind::Free, "free in both");
    dev.region(0x2000_0000, 0x2000_1000, Kind::DeviceOnly, "doorbell page");
    dev.region(win.0, win.1, Kind::Reservation, "SVM window (reserved)");
    for (i, &(s, e)) in bufs.iter().enumerate() {
        let k = if i == 3 { Kind::Freed } else { Kind::SvmBuffer };
        dev.region(s, e, k, format!("buffer {i}"));
    }
    Picture::new("svmap: CPU and device address spaces")
        .note("8 SVM buffers at identical addresses; buffer 3 freed (device faults)")
        .space(cpu)
        .space(dev)
        .range(0, top)
}

#[test]
fn well_formed_svg_1_1() {
    let svg = demo_like().to_svg();
    let names = xml::check(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert_eq!(names[0], "svg");
    assert!(svg.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\""));
    assert!(svg.contains("xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\""));
    // SVG 1.1 elements only.
    for n in &names {
        assert!(
            ["svg", "title", "defs", "pattern", "rect", "line", "text", "g", "path"]
                .contains(&n.as_str()),
            "{n}"
        );
    }
}

#[test]
fn every_range_is_drawn_with_its_addresses() {
    let p = demo_like();
    let svg = p.to_svg();
    for s in &p.spaces {
        for r in &s.regions {
            let t = format!("[{}, {})", hex(r.start), hex(r.end));
            assert!(svg.contains(&t), "{} {t} missing", r.label);
        }
    }
    let rects = svg.matches("<rect class=").count();
    let n: usize = p.spaces.iter().map(|s| s.regions.len()).sum();
    assert_eq!(rects, n);
    // A 4 KiB page and 128 TiB on one axis: the page's segment is visible.
    let segs = p.segments(0.0);
    let page = segs
        .iter()
        .find(|g| g.start == 0x2000_0000 && g.end == 0x2000_1000)
        .expect("the doorbell page's segment");
    assert!(page.h >= svmap_viz::MIN_SEGMENT);
    assert!(segs
        .iter()
        .any(|g| g.compressed && g.end - g.start > 64 << 40));
    // Boundaries are labelled in hex; the limit and the window are drawn.
    assert!(svg.contains(">2^40 0x100_0000_0000<"));
    assert!(svg.contains(">0x7fff_f7ff_f000<"));
    assert!(svg.contains("device limit 2^40"));
    assert!(svg.contains("device window"));
    assert!(svg.contains("class=\"legend\""));
    for k in [
        Kind::SvmBuffer,
        Kind::AboveLimit,
        Kind::Freed,
        Kind::Unreachable,
    ] {
        assert!(svg.contains(&svmap_viz::escape(k.description())), "{k:?}");
    }
}

#[test]
fn labels_are_escaped() {
    let mut s = Space::new("a <space> & \"quotes\"");
    s.region(
        0x1000,
        0x2000,
        Kind::Mapping,
        "</text><script>alert('x')</script> & co",
    );
    let svg = Picture::new("T & <b>").note("n < m").space(s).to_svg();
    xml::check(&svg).unwrap();
    assert!(!svg.contains("<script"));
    assert!(!svg.contains("<b>"));
    assert!(svg.contains("T &amp; &lt;b&gt;"));
    assert!(svg.contains("a &lt;space&gt; &amp; &quot;quotes&quot;"));
}

#[test]
fn deterministic() {
    assert_eq!(demo_like().to_svg(), demo_like().to_svg());
    let empty = Picture::new("empty").to_svg();
    xml::check(&empty).unwrap();
}

/// `rsvg-convert` on PATH, if any.
fn rsvg() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("rsvg-convert"))
        .find(|p| p.is_file())
}

/// Width and height from a PNG's IHDR.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

#[test]
fn renders_to_png_with_rsvg_convert() {
    let Some(rsvg) = rsvg() else {
        println!("SKIPPED renders_to_png_with_rsvg_convert: rsvg-convert is not on PATH (install librsvg2-bin)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("svmap-viz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg_path = dir.join("demo.svg");
    let png_path = dir.join("demo.png");
    let svg = demo_like().to_svg();
    std::fs::write(&svg_path, &svg).unwrap();
    let out = Command::new(rsvg)
        .arg("--format=png")
        .arg("-o")
        .arg(&png_path)
        .arg(&svg_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&png_path).unwrap();
    let (w, h) = png_size(&png).expect("a PNG");
    assert!(
        (600..4000).contains(&w) && (300..6000).contains(&h),
        "{w}x{h}"
    );
    assert!(png.len() > 10_000, "{} bytes", png.len());
    if let Some(keep) = std::env::var_os("SVMAP_VIZ_KEEP") {
        std::fs::copy(&png_path, PathBuf::from(&keep).join("viz-test.png")).unwrap();
        std::fs::copy(&svg_path, PathBuf::from(&keep).join("viz-test.svg")).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!("rendered {w}x{h} PNG, {} bytes", png.len());
}
