//! `inspect::report` on this process.

use svmap_linux::inspect::{self, Visibility};
use svmap_linux::maps::Target;

#[test]
fn report_of_self() {
    let r = inspect::report(Target::SelfProcess, 40).unwrap();
    assert_eq!(r.limit, 1 << 40);
    let stack = r.vmas.iter().find(|v| v.name == "[stack]").unwrap();
    assert_eq!(stack.visibility, Visibility::Invisible);
    assert!(stack.growsdown);
    assert!(r.beyond_user.iter().any(|v| v.name == "[vsyscall]"));
    assert!(r.free_bytes > 0 && !r.largest_free.is_empty());
    let (s, e) = r.largest_free[0];
    assert!(s >= r.floor && e <= r.limit);
    assert!((0.0..=1.0).contains(&r.fragmentation));
    let json = r.to_json();
    assert!(
        json.starts_with("{\"pid\":") && json.ends_with("]}"),
        "{json}"
    );
    assert!(json.contains("\"visibility\":\"invisible\""));
    let text = r.to_string();
    assert!(text.contains("largest free windows"));
    assert!(matches!(
        inspect::report(Target::Pid(4_194_321), 40),
        Err(svmap_linux::error::Error::NoSuchProcess { .. })
    ));
}
