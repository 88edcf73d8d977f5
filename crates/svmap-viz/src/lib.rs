//! # svmap-viz
//!
//! Pictures of address spaces: one or more spaces (the CPU's and a
//! device's) drawn side by side on one shared address axis, as a standalone
//! SVG 1.1 document.
//!
//! Address spaces span 4 KiB pages and 128 TiB holes at once, so the axis is
//! *segmented*: every region boundary (of every space, plus window bounds
//! and device limits) cuts the axis into segments; a segment that something
//! occupies gets a height that grows with the logarithm of its length (at
//! least [`MIN_SEGMENT`] pixels, so a single page stays visible), and a long
//! stretch that is free (or only unreachable) everywhere is compressed into
//! a fixed-height break mark. Every boundary is labelled in hex. High
//! addresses are at the top, as in `/proc/PID/maps` diagrams read upwards.
//!
//! ```
//! use svmap_viz::{Kind, Picture, Space};
//! let mut cpu = Space::new("CPU");
//! cpu.region(0x7f00_0000_0000, 0x7f00_0020_0000, Kind::Mapping, "libc.so.6");
//! cpu.region(0x100_0000, 0x200_0000, Kind::Reservation, "SVM window");
//! cpu.region(0x100_0000, 0x101_0000, Kind::SvmBuffer, "buffer 0");
//! let mut gpu = Space::new("device (40 bits)");
//! gpu.limit(1 << 40);
//! gpu.region(0x100_0000, 0x101_0000, Kind::SvmBuffer, "buffer 0");
//! let svg = Picture::new("two spaces").space(cpu).space(gpu).to_svg();
//! assert!(svg.starts_with("<?xml"));
//! ```
//!
//! The output is deterministic: the same picture gives the same bytes.

use std::fmt::Write as _;

/// The smallest height of an occupied segment, in pixels.
pub const MIN_SEGMENT: f64 = 16.0;
/// The largest height of an occupied segment, in pixels.
pub const MAX_SEGMENT: f64 = 64.0;
/// The height of a compressed free stretch (a break mark), in pixels.
pub const BREAK_SEGMENT: f64 = 30.0;
/// Free stretches at least this long are compressed into a break mark.
pub const BREAK_MIN_LEN: u64 = 1 << 24;

/// What a region is; decides its colour, its legend entry and whether a
/// stretch covered only by it may be compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Ordinary memory mapped in the process (code, heap, libraries, stack).
    Mapping,
    /// A reservation (`PROT_NONE`): address space held, no memory.
    Reservation,
    /// An SVM buffer: the same memory at the same address on every side.
    SvmBuffer,
    /// Taken on the device side only (its rings, doorbells, its own
    /// process's mappings): the CPU must not place SVM buffers there.
    DeviceOnly,
    /// Memory above the device limit that was to be shared: refused.
    AboveLimit,
    /// A freed SVM range: the device's accesses to it fault.
    Freed,
    /// A free window (candidate room for SVM ranges). Compressible.
    Free,
    /// Addresses the device cannot reach (at or above `2^N`). Compressible.
    Unreachable,
}

impl Kind {
    /// Every kind, in legend order.
    pub const ALL: [Kind; 8] = [
        Kind::Mapping,
        Kind::Reservation,
        Kind::SvmBuffer,
        Kind::DeviceOnly,
        Kind::AboveLimit,
        Kind::Freed,
        Kind::Free,
        Kind::Unreachable,
    ];

    /// The legend text.
    pub fn description(self) -> &'static str {
        match self {
            Kind::Mapping => "mapping (process memory)",
            Kind::Reservation => "reservation (PROT_NONE, no memory)",
            Kind::SvmBuffer => "SVM buffer (same address on both sides)",
            Kind::DeviceOnly => "taken on the device side only",
            Kind::AboveLimit => "above the device limit: cannot be shared",
            Kind::Freed => "freed: device access faults",
            Kind::Free => "free window",
            Kind::Unreachable => "unreachable by the device (>= 2^N)",
        }
    }

    /// A short machine name (`svm-buffer`, ...), used as the SVG class.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mapping => "mapping",
            Kind::Reservation => "reservation",
            Kind::SvmBuffer => "svm-buffer",
            Kind::DeviceOnly => "device-only",
            Kind::AboveLimit => "above-limit",
            Kind::Freed => "freed",
            Kind::Free => "free",
            Kind::Unreachable => "unreachable",
        }
    }

    /// Whether a stretch covered only by regions of this kind may be
    /// compressed into a break mark.
    pub fn compressible(self) -> bool {
        matches!(self, Kind::Free | Kind::Unreachable)
    }

    /// `(fill, stroke, dashed)`.
    fn style(self) -> (&'static str, &'static str, bool) {
        match self {
            Kind::Mapping => ("#9ecae1", "#3182bd", false),
            Kind::Reservation => ("#f2f2f2", "#636363", true),
            Kind::SvmBuffer => ("#74c476", "#238b45", false),
            Kind::DeviceOnly => ("#fdae6b", "#d94801", false),
            Kind::AboveLimit => ("url(#hatch-red)", "#cb181d", false),
            Kind::Freed => ("url(#hatch-grey)", "#525252", true),
            Kind::Free => ("#ffffff", "#969696", true),
            Kind::Unreachable => ("url(#hatch-pink)", "#fc9272", false),
        }
    }
}

/// One labelled range `[start, end)` of a space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last (exclusive; `> start`).
    pub end: u64,
    /// What it is.
    pub kind: Kind,
    /// Its label (any text; escaped on output).
    pub label: String,
}

/// One address space: a column of the picture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// The column heading.
    pub name: String,
    /// The regions (may nest: a buffer inside a reservation is drawn inset
    /// inside it; partial overlaps are drawn on top of each other).
    pub regions: Vec<Region>,
    /// A device window `[low, high)` drawn as a bracket beside the column.
    pub window: Option<(u64, u64)>,
    /// A device limit `2^N`: a dashed line across the column.
    pub limit: Option<u64>,
}

impl Space {
    /// An empty space with a heading.
    pub fn new(name: impl Into<String>) -> Space {
        Space {
            name: name.into(),
            ..Space::default()
        }
    }

    /// Adds a region (empty or inverted ranges are ignored).
    pub fn region(
        &mut self,
        start: u64,
        end: u64,
        kind: Kind,
        label: impl Into<String>,
    ) -> &mut Self {
        if end > start {
            self.regions.push(Region {
                start,
                end,
                kind,
                label: label.into(),
            });
        }
        self
    }

    /// Sets the device window `[low, high)`.
    pub fn window(&mut self, low: u64, high: u64) -> &mut Self {
        self.window = Some((low, high));
        self
    }

    /// Sets the device limit (`2^N`).
    pub fn limit(&mut self, limit: u64) -> &mut Self {
        self.limit = Some(limit);
        self
    }

    /// Adds every VMA of `map` as a region of `kind`, labelled `label`.
    pub fn add_map(&mut self, map: &svmap_core::AddressMap, kind: Kind, label: &str) -> &mut Self {
        for v in map.iter() {
            self.region(v.start, v.end, kind, label);
        }
        self
    }
}

/// A picture: a title, notes, and spaces side by side on one address axis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Picture {
    /// The title.
    pub title: String,
    /// Lines of text under the title.
    pub notes: Vec<String>,
    /// The columns, left to right.
    pub spaces: Vec<Space>,
    /// The axis range `[low, high)`; by default `[0, highest address)`.
    pub range: Option<(u64, u64)>,
}

/// One segment of the axis: `[start, end)` at `[y, y + h)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// Top (the `end` side), in pixels.
    pub y: f64,
    /// Height in pixels.
    pub h: f64,
    /// Compressed into a break mark.
    pub compressed: bool,
}

/// `0x7f12_3456_7000`: hex with `_` every four digits.
pub fn hex(v: u64) -> String {
    let s = format!("{v:x}");
    let mut out = String::from("0x");
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 4 == 0 {
            out.push('_');
        }
        out.push(c);
    }
    out
}

/// `4 KiB`, `1.5 MiB`, `128 TiB`: binary units, at most one decimal.
pub fn human(b: u64) -> String {
    const U: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if v >= 1023.95 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if (v - v.round()).abs() < 0.05 {
        format!("{:.0} {}", v.round(), U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Escapes text for XML content and attribute values (`&`, `<`, `>`, `"`,
/// `'`; control characters other than tab/newline become `?`).
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' => o.push(' '),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => {
                o.push('?')
            }
            c => o.push(c),
        }
    }
    o
}

/// Cuts `s` to at most `max` characters, ending in `…` when cut.
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut o: String = s.chars().take(max.saturating_sub(1)).collect();
    o.push('…');
    o
}

/// Height of an occupied segment of `len` bytes: log-scaled.
fn seg_height(len: u64) -> f64 {
    let pages = (len as f64 / 4096.0).max(1.0);
    (MIN_SEGMENT + 1.4 * pages.log2()).clamp(MIN_SEGMENT, MAX_SEGMENT)
}

// Layout constants (pixels).
const MARGIN: f64 = 20.0;
const AXIS_W: f64 = 150.0;
const COL_W: f64 = 300.0;
const COL_GAP: f64 = 70.0;
const RIGHT_W: f64 = 170.0;
const INSET: f64 = 10.0;
const FONT: &str = "DejaVu Sans, Verdana, Arial, sans-serif";
const MONO: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

fn f(v: f64) -> String {
    // Fixed precision keeps the output deterministic and compact.
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// `2^40` for a power of two, hex otherwise.
fn pow2(v: u64) -> String {
    if v.is_power_of_two() {
        format!("2^{}", v.trailing_zeros())
    } else {
        hex(v)
    }
}

/// Estimated width of `t` at font size 11 (DejaVu Sans metrics, roughly).
fn text_width(t: &str, bold: bool) -> f64 {
    t.chars().count() as f64 * if bold { 6.6 } else { 5.9 }
}

/// A font-size-11 label at `(x, y)` (baseline) on a white background.
fn label(out: &mut String, x: f64, y: f64, t: &str, fill: &str, bold: bool, bg: bool) {
    if bg {
        let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\" rx=\"2\" fill=\"#ffffff\" fill-opacity=\"0.85\"/>",
        f(x - 3.0),
        f(y - 11.0),
        f(text_width(t, bold) + 6.0)
    );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"11\"{} fill=\"{fill}\">{}</text>",
        f(x),
        f(y),
        if bold { " font-weight=\"bold\"" } else { "" },
        escape(t)
    );
}

impl Picture {
    /// An empty picture with a title.
    pub fn new(title: impl Into<String>) -> Picture {
        Picture {
            title: title.into(),
            ..Picture::default()
        }
    }

    /// Adds a column.
    pub fn space(mut self, s: Space) -> Picture {
        self.spaces.push(s);
        self
    }

    /// Adds a line of text under the title.
    pub fn note(mut self, n: impl Into<String>) -> Picture {
        self.notes.push(n.into());
        self
    }

    /// Sets the axis range `[low, high)` (regions outside are clipped).
    pub fn range(mut self, low: u64, high: u64) -> Picture {
        self.range = Some((low, high.max(low + 1)));
        self
    }

    fn axis_range(&self) -> (u64, u64) {
        if let Some(r) = self.range {
            return r;
        }
        let mut hi = 0u64;
        for s in &self.spaces {
            for r in &s.regions {
                hi = hi.max(r.end);
            }
            if let Some((_, h)) = s.window {
                hi = hi.max(h);
            }
            if let Some(l) = s.limit {
                hi = hi.max(l);
            }
        }
        (0, hi.max(0x1000))
    }

    /// The axis segments, top (highest addresses) first, starting at `y0`.
    pub fn segments(&self, y0: f64) -> Vec<Segment> {
        let (lo, hi) = self.axis_range();
        let mut cuts = vec![lo, hi];
        let clip = |a: u64| a.clamp(lo, hi);
        for s in &self.spaces {
            for r in &s.regions {
                cuts.push(clip(r.start));
                cuts.push(clip(r.end));
            }
            if let Some((a, b)) = s.window {
                cuts.push(clip(a));
                cuts.push(clip(b));
            }
            if let Some(l) = s.limit {
                cuts.push(clip(l));
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut segs = Vec::with_capacity(cuts.len());
        let mut y = y0;
        for w in cuts.windows(2).rev() {
            let (a, b) = (w[0], w[1]);
            let occupied = self.spaces.iter().any(|s| {
                s.regions
                    .iter()
                    .any(|r| !r.kind.compressible() && r.start < b && a < r.end)
            });
            let compressed = !occupied && b - a >= BREAK_MIN_LEN;
            let h = if compressed {
                BREAK_SEGMENT
            } else {
                seg_height(b - a)
            };
            segs.push(Segment {
                start: a,
                end: b,
                y,
                h,
                compressed,
            });
            y += h;
        }
        segs
    }

    /// The picture as a standalone SVG 1.1 document.
    pub fn to_svg(&self) -> String {
        let title_h = 34.0;
        let notes_h = 17.0 * self.notes.len() as f64;
        let head_h = 40.0;
        let y0 = MARGIN + title_h + notes_h + head_h;
        let segs = self.segments(y0);
        let plot_bottom = segs.last().map_or(y0, |s| s.y + s.h);
        let ncols = self.spaces.len().max(1) as f64;
        let col_x = |i: usize| MARGIN + AXIS_W + 10.0 + i as f64 * (COL_W + COL_GAP);
        let cols_right = col_x(self.spaces.len().max(1)) - COL_GAP;
        let width = (cols_right + RIGHT_W + MARGIN).max(MARGIN * 2.0 + AXIS_W + 10.0 + 640.0);
        let present: Vec<Kind> = Kind::ALL
            .iter()
            .copied()
            .filter(|k| {
                self.spaces
                    .iter()
                    .any(|s| s.regions.iter().any(|r| r.kind == *k))
            })
            .collect();
        let nlimits = {
            let mut l: Vec<u64> = self.spaces.iter().filter_map(|s| s.limit).collect();
            l.sort_unstable();
            l.dedup();
            l.len()
        };
        let legend_rows = (present.len() + nlimits).div_ceil(2) as f64;
        let legend_y = plot_bottom + 30.0;
        let height = legend_y + 24.0 + 22.0 * legend_rows + MARGIN;
        let _ = ncols;

        // Address -> y (linear inside its segment).
        let y_of = |addr: u64| -> f64 {
            for s in &segs {
                if addr >= s.end {
                    return s.y;
                }
                if addr >= s.start {
                    let frac = (s.end - addr) as f64 / (s.end - s.start) as f64;
                    return s.y + s.h * frac;
                }
            }
            plot_bottom
        };

        let mut o = String::new();
        o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n");
        let _ = writeln!(
            o,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\">",
            f(width),
            f(height),
            f(width),
            f(height)
        );
        let _ = writeln!(o, "<title>{}</title>", escape(&self.title));
        o.push_str(concat!(
            "<defs>\n",
            "<pattern id=\"hatch-red\" patternUnits=\"userSpaceOnUse\" width=\"8\" height=\"8\" patternTransform=\"rotate(45)\">",
            "<rect width=\"8\" height=\"8\" fill=\"#fcbba1\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"8\" stroke=\"#cb181d\" stroke-width=\"3\"/></pattern>\n",
            "<pattern id=\"hatch-pink\" patternUnits=\"userSpaceOnUse\" width=\"10\" height=\"10\" patternTransform=\"rotate(45)\">",
            "<rect width=\"10\" height=\"10\" fill=\"#fff5f0\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"10\" stroke=\"#fcbba1\" stroke-width=\"2\"/></pattern>\n",
            "<pattern id=\"hatch-grey\" patternUnits=\"userSpaceOnUse\" width=\"8\" height=\"8\" patternTransform=\"rotate(-45)\">",
            "<rect width=\"8\" height=\"8\" fill=\"#f0f0f0\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"8\" stroke=\"#969696\" stroke-width=\"2\"/></pattern>\n",
            "</defs>\n"
        ));
        let _ = writeln!(
            o,
            "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>",
            f(width),
            f(height)
        );
        // Title and notes.
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"19\" font-weight=\"bold\" fill=\"#111111\">{}</text>",
            f(MARGIN),
            f(MARGIN + 20.0),
            escape(&self.title)
        );
        for (i, n) in self.notes.iter().enumerate() {
            let _ = writeln!(
                o,
                "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"12.5\" fill=\"#333333\">{}</text>",
                f(MARGIN),
                f(MARGIN + title_h + 13.0 + 17.0 * i as f64),
                escape(n)
            );
        }
        // Axis heading.
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"12\" fill=\"#555555\" text-anchor=\"end\">address</text>",
            f(MARGIN + AXIS_W - 6.0),
            f(y0 - 12.0)
        );

        // Segment backgrounds: alternate shading for readability, break
        // marks for compressed stretches.
        o.push_str("<g class=\"axis\">\n");
        for (i, s) in segs.iter().enumerate() {
            if i % 2 == 1 && !s.compressed {
                let _ = writeln!(
                    o,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\"/>",
                    f(MARGIN + AXIS_W),
                    f(s.y),
                    f(cols_right - MARGIN - AXIS_W),
                    f(s.h)
                );
            }
        }
        let _ = writeln!(
            o,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#444444\" stroke-width=\"1\"/>",
            f(y0),
            f(plot_bottom),
            x = f(MARGIN + AXIS_W)
        );
        // Boundary labels (every boundary is at least MIN_SEGMENT apart,
        // except around break marks, which are taller still).
        let mut bounds: Vec<(u64, f64)> = segs.iter().map(|s| (s.end, s.y)).collect();
        if let Some(last) = segs.last() {
            bounds.push((last.start, last.y + last.h));
        }
        let limits: Vec<u64> = {
            let mut l: Vec<u64> = self.spaces.iter().filter_map(|s| s.limit).collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        for (a, y) in &bounds {
            let _ = writeln!(
                o,
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#444444\" stroke-width=\"1\"/>",
                f(MARGIN + AXIS_W - 4.0),
                f(MARGIN + AXIS_W),
                y = f(*y)
            );
            let (fill, text) = if limits.contains(a) {
                (
                    "#cb181d\" font-weight=\"bold",
                    format!("{} {}", pow2(*a), hex(*a)),
                )
            } else {
                ("#222222", hex(*a))
            };
            let _ = writeln!(
                o,
                "<text x=\"{}\" y=\"{}\" font-family=\"{MONO}\" font-size=\"10.5\" fill=\"{fill}\" text-anchor=\"end\">{text}</text>",
                f(MARGIN + AXIS_W - 7.0),
                f(y + 3.5),
            );
        }
        o.push_str("</g>\n");

        // Labels go last, on white backgrounds, above break marks.
        let mut labels = String::new();
        // Columns.
        for (ci, sp) in self.spaces.iter().enumerate() {
            let x = col_x(ci);
            let _ = writeln!(
                o,
                "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"14\" font-weight=\"bold\" fill=\"#111111\" text-anchor=\"middle\">{}</text>",
                f(x + COL_W / 2.0),
                f(y0 - 12.0),
                escape(&fit(&sp.name, 40))
            );
            let _ = writeln!(
                o,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#bdbdbd\" stroke-width=\"1\"/>",
                f(x),
                f(y0),
                f(COL_W),
                f(plot_bottom - y0)
            );
            let _ = writeln!(o, "<g class=\"space\" id=\"space-{ci}\">");
            // Containers first; each region inset by its nesting depth.
            let (lo, hi) = self.axis_range();
            let mut order: Vec<usize> = (0..sp.regions.len()).collect();
            order.sort_by_key(|&i| {
                let r = &sp.regions[i];
                (std::cmp::Reverse(r.end - r.start), r.start, i)
            });
            let depth = |i: usize| -> usize {
                let r = &sp.regions[i];
                sp.regions
                    .iter()
                    .enumerate()
                    .filter(|&(j, q)| {
                        j != i
                            && q.start <= r.start
                            && r.end <= q.end
                            && (q.end - q.start > r.end - r.start || j < i)
                    })
                    .count()
            };
            for &i in &order {
                let r = &sp.regions[i];
                let (s, e) = (r.start.max(lo), r.end.min(hi));
                if s >= e {
                    continue;
                }
                let d = depth(i).min(4) as f64;
                let (ytop, ybot) = (y_of(e), y_of(s));
                let rx = x + 4.0 + d * INSET;
                let rw = COL_W - 8.0 - 2.0 * d * INSET;
                let (fill, stroke, dashed) = r.kind.style();
                let _ = writeln!(
                    o,
                    "<rect class=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.2\"{}><title>{}</title></rect>",
                    r.kind.name(),
                    f(rx),
                    f(ytop + 1.0),
                    f(rw),
                    f((ybot - ytop - 2.0).max(1.0)),
                    if dashed { " stroke-dasharray=\"4 3\"" } else { "" },
                    escape(&format!(
                        "{}: [{}, {}) {} ({})",
                        r.label,
                        hex(r.start),
                        hex(r.end),
                        human(r.end - r.start),
                        r.kind.description()
                    ))
                );
                // Label: in the topmost segment of the region not covered
                // by a region nested inside it.
                let inner = |a: u64, b: u64| {
                    sp.regions
                        .iter()
                        .enumerate()
                        .any(|(j, q)| j != i && depth(j) > depth(i) && q.start < b && a < q.end)
                };
                let spot = segs
                    .iter()
                    .find(|g| g.start >= s && g.end <= e && !inner(g.start, g.end));
                if let Some(g) = spot {
                    if !r.label.is_empty() {
                        let max_chars = ((rw - 10.0) / 6.3).max(4.0) as usize;
                        let text = format!("{} · {}", r.label, human(r.end - r.start));
                        let ty = if g.compressed {
                            g.y + 13.0
                        } else {
                            g.y + g.h / 2.0 + 4.0
                        };
                        let bg = g.compressed || fill.starts_with("url(");
                        label(
                            &mut labels,
                            rx + 6.0,
                            ty,
                            &fit(&text, max_chars),
                            "#111111",
                            false,
                            bg,
                        );
                    }
                }
            }
            o.push_str("</g>\n");
            // Device window bracket, right of the column.
            if let Some((a, b)) = sp.window {
                let (a, b) = (a.clamp(lo, hi), b.clamp(lo, hi));
                if a < b {
                    let bx = x + COL_W + 8.0;
                    let (yt, yb) = (y_of(b), y_of(a));
                    let _ = writeln!(
                        o,
                        "<path class=\"window\" d=\"M {} {} H {} V {} H {}\" fill=\"none\" stroke=\"#6a51a3\" stroke-width=\"2\"><title>{}</title></path>",
                        f(bx - 5.0),
                        f(yt + 1.0),
                        f(bx),
                        f(yb - 1.0),
                        f(bx - 5.0),
                        escape(&format!("device window [{}, {})", hex(a), hex(b)))
                    );
                    let cy = (yt + yb) / 2.0;
                    let _ = writeln!(
                        o,
                        "<text x=\"{x}\" y=\"{y}\" font-family=\"{FONT}\" font-size=\"11\" fill=\"#6a51a3\" text-anchor=\"middle\" transform=\"rotate(90 {x} {y})\">device window {}</text>",
                        human(b - a),
                        x = f(bx + 10.0),
                        y = f(cy)
                    );
                }
            }
            // Device limit line.
            if let Some(l) = sp.limit {
                if l > lo && l <= hi {
                    let y = y_of(l);
                    let _ = writeln!(
                        o,
                        "<line class=\"limit\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#cb181d\" stroke-width=\"2\" stroke-dasharray=\"8 4\"/>",
                        f(x - 4.0),
                        f(x + COL_W + 4.0),
                        y = f(y)
                    );
                }
            }
        }

        // Break marks across the axis and every column.
        for s in segs.iter().filter(|s| s.compressed) {
            let ym = s.y + s.h / 2.0;
            let (x1, x2) = (MARGIN + AXIS_W - 10.0, cols_right + 4.0);
            let mut d = String::new();
            let mut d2 = String::new();
            let mut xx = x1;
            let mut up = true;
            let _ = write!(d, "M {} {}", f(xx), f(ym - 3.0));
            let _ = write!(d2, "M {} {}", f(xx), f(ym + 3.0));
            while xx < x2 {
                xx = (xx + 8.0).min(x2);
                let dy = if up { -4.0 } else { 0.0 };
                let _ = write!(d, " L {} {}", f(xx), f(ym - 3.0 + dy + 2.0));
                let _ = write!(d2, " L {} {}", f(xx), f(ym + 3.0 + dy + 2.0));
                up = !up;
            }
            let _ = writeln!(
                o,
                "<g class=\"break\"><path d=\"{d}\" fill=\"none\" stroke=\"#ffffff\" stroke-width=\"5\"/><path d=\"{d}\" fill=\"none\" stroke=\"#737373\" stroke-width=\"1\"/><path d=\"{d2}\" fill=\"none\" stroke=\"#737373\" stroke-width=\"1\"/></g>"
            );
            let _ = writeln!(
                o,
                "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"10.5\" font-style=\"italic\" fill=\"#555555\" text-anchor=\"end\">{} skipped</text>",
                f(MARGIN + AXIS_W - 7.0),
                f(ym + 4.0),
                human(s.end - s.start)
            );
        }

        o.push_str("<g class=\"labels\">\n");
        o.push_str(&labels);
        o.push_str("</g>\n");

        // Legend.
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"12\" font-weight=\"bold\" fill=\"#111111\">legend</text>",
            f(MARGIN + AXIS_W + 10.0),
            f(legend_y + 4.0)
        );
        o.push_str("<g class=\"legend\">\n");
        for (i, k) in present.iter().enumerate() {
            let lx = MARGIN + AXIS_W + 10.0 + (i % 2) as f64 * 330.0;
            let ly = legend_y + 16.0 + 22.0 * (i / 2) as f64;
            let (fill, stroke, dashed) = k.style();
            let _ = writeln!(
                o,
                "<rect x=\"{}\" y=\"{}\" width=\"26\" height=\"14\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.2\"{}/>",
                f(lx),
                f(ly),
                if dashed { " stroke-dasharray=\"4 3\"" } else { "" }
            );
            let _ = writeln!(
                o,
                "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"11.5\" fill=\"#222222\">{}</text>",
                f(lx + 34.0),
                f(ly + 11.0),
                escape(k.description())
            );
        }
        for (j, l) in limits.iter().enumerate() {
            let i = present.len() + j;
            let lx = MARGIN + AXIS_W + 10.0 + (i % 2) as f64 * 330.0;
            let ly = legend_y + 16.0 + 22.0 * (i / 2) as f64;
            let _ = writeln!(
                o,
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#cb181d\" stroke-width=\"2\" stroke-dasharray=\"8 4\"/>",
                f(lx),
                f(lx + 26.0),
                y = f(ly + 7.0)
            );
            let _ = writeln!(
                o,
                "<text x=\"{}\" y=\"{}\" font-family=\"{FONT}\" font-size=\"11.5\" fill=\"#222222\">device limit {} = {}</text>",
                f(lx + 34.0),
                f(ly + 11.0),
                pow2(*l),
                hex(*l)
            );
        }
        o.push_str("</g>\n</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_groups_digits() {
        assert_eq!(hex(0), "0x0");
        assert_eq!(hex(0x1000), "0x1000");
        assert_eq!(hex(0x10000), "0x1_0000");
        assert_eq!(hex(0x7fff_ffff_f000), "0x7fff_ffff_f000");
    }

    #[test]
    fn human_units() {
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(1 << 40), "1 TiB");
        assert_eq!(human(3 << 19), "1.5 MiB");
        assert_eq!(human(128 << 40), "128 TiB");
    }

    #[test]
    fn escape_text() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y"), "x?y");
    }

    #[test]
    fn page_and_huge_hole_both_visible() {
        let mut s = Space::new("cpu");
        s.region(0x1000, 0x2000, Kind::Mapping, "page");
        s.region(0x7f00_0000_0000, 0x7f00_0000_1000, Kind::Mapping, "page");
        let p = Picture::new("t").space(s).range(0, 1 << 47);
        let segs = p.segments(0.0);
        assert!(segs.iter().all(|g| g.h >= MIN_SEGMENT));
        assert!(segs.iter().any(|g| g.compressed));
        let total: f64 = segs.iter().map(|g| g.h).sum();
        assert!(total < 400.0, "{total}");
        // Contiguous, top first.
        for w in segs.windows(2) {
            assert_eq!(w[0].start, w[1].end);
        }
    }
}

pub mod xml;
