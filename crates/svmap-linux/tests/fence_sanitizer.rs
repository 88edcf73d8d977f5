//! `fence::sanitizer_of` and `fence::user_top` on inputs that are not
//! sanitizer binaries: no false positives, no panic on files that are not
//! (complete) ELF files.

use svmap_linux::fence;

#[test]
fn plain_programs_and_non_elf_files_are_not_sanitizers() {
    for p in ["/bin/sh", "/bin/true", "/proc/self/exe"] {
        assert_eq!(fence::sanitizer_of(std::path::Path::new(p)), None, "{p}");
    }
    let dir = std::env::temp_dir().join(format!("svmap-sanitizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = std::fs::read("/bin/sh").unwrap();
    // A script, an empty file, an ELF header alone, and an ELF file cut
    // in its middle.
    let cases: [(&str, &[u8]); 4] = [
        ("script", b"#!/bin/sh\necho __asan_init\n"),
        ("empty", b""),
        ("header", &sh[..64]),
        ("half", &sh[..sh.len() / 2]),
    ];
    for (name, bytes) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(fence::sanitizer_of(&p), None, "{name}");
    }
    assert_eq!(fence::sanitizer_of(&dir.join("missing")), None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_user_top_is_one_of_the_two_paging_levels() {
    let top = fence::user_top();
    assert!(
        top == (1 << 47) - 4096 || top == (1 << 56) - 4096,
        "{top:#x}"
    );
    // Every mapping of this process lies below it (but [vsyscall]).
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for l in maps.lines().filter(|l| !l.ends_with("[vsyscall]")) {
        let end = u64::from_str_radix(l.split(['-', ' ']).nth(1).unwrap(), 16).unwrap();
        assert!(end <= top + 4096, "{l}");
    }
}
