//! Option parsing shared by the subcommands: `--name value` and
//! `--name=value` both work.

/// Splits `--name=value` into the name and the inline value; any other
/// argument comes back whole, without a value.
pub fn split_option(a: &str) -> (&str, Option<&str>) {
    match a.split_once('=') {
        Some((n, v)) if n.starts_with("--") => (n, Some(v)),
        _ => (a, None),
    }
}

/// The value of the option at `args[*i]`: its inline value, or else the
/// next argument (then `*i` moves onto it). `None` when there is none.
pub fn option_value(args: &[String], i: &mut usize, inline: Option<&str>) -> Option<String> {
    if let Some(v) = inline {
        return Some(v.to_owned());
    }
    *i += 1;
    args.get(*i).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_separate_values() {
        assert_eq!(split_option("--svg=a=b"), ("--svg", Some("a=b")));
        assert_eq!(split_option("x=y"), ("x=y", None));
        let args: Vec<String> = ["--svg", "pic.svg"].iter().map(|s| s.to_string()).collect();
        let mut i = 0;
        assert_eq!(
            option_value(&args, &mut i, None).as_deref(),
            Some("pic.svg")
        );
        assert_eq!(i, 1);
        let mut j = 1;
        assert_eq!(option_value(&args, &mut j, None), None);
        let mut k = 0;
        assert_eq!(option_value(&args, &mut k, Some("v")).as_deref(), Some("v"));
        assert_eq!(k, 0);
    }
}
