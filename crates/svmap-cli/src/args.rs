//! Command-line parsing shared by the subcommands, on top of [`lexopt`]:
//! `--name value` and `--name=value` both work (and `-o FILE`, `-oFILE`
//! for short options), `--` ends the options, and arguments stay
//! [`OsString`] until a subcommand needs text (a number, a layout name),
//! so file names and the command line of `svmap run` pass through
//! unchanged whatever their bytes. Every mistake becomes one message; the
//! subcommand prints it with its usage line and exits 2.

use std::ffi::OsString;

pub use lexopt::{Arg, Parser};

/// Why parsing stopped without options to run with.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `-h` / `--help`: print the help and exit 0.
    Help,
    /// A usage error, with its message: exit 2.
    Usage(String),
}

impl From<lexopt::Error> for Stop {
    fn from(e: lexopt::Error) -> Stop {
        Stop::Usage(message(e))
    }
}

impl From<String> for Stop {
    fn from(m: String) -> Stop {
        Stop::Usage(m)
    }
}

/// A parser over the arguments after the subcommand's name.
pub fn parser(args: &[OsString]) -> Parser {
    Parser::from_args(args.iter().cloned())
}

/// The message of a lexopt error, in svmap's words.
pub fn message(e: lexopt::Error) -> String {
    use lexopt::Error;
    match e {
        Error::MissingValue { option: Some(o) } => format!("{o} needs a value"),
        Error::MissingValue { option: None } => "a value is missing".to_owned(),
        Error::UnexpectedOption(o) => format!("unknown option {o:?}"),
        Error::UnexpectedArgument(a) => format!("unexpected argument {a:?}"),
        Error::UnexpectedValue { option, value } => {
            format!("{option} takes no value (got {value:?})")
        }
        Error::NonUnicodeValue(v) => format!("{v:?} is not valid UTF-8"),
        other => other.to_string(),
    }
}

/// The error for an argument the subcommand does not take ("unknown
/// option \"--x\"", "unexpected argument \"x\"").
pub fn unknown(arg: Arg<'_>) -> Stop {
    Stop::Usage(message(arg.unexpected()))
}

/// The value of the option `name` just seen, or the message "`name` needs
/// `what`" when the command line ends there.
pub fn value(p: &mut Parser, name: &str, what: &str) -> Result<OsString, Stop> {
    p.value()
        .map_err(|_| Stop::Usage(format!("{name} needs {what}")))
}

/// The value of the option `name` as text (for numbers and names), or a
/// message that says it is not valid UTF-8.
pub fn text(name: &str, v: OsString) -> Result<String, Stop> {
    v.into_string()
        .map_err(|v| Stop::Usage(format!("{name} {v:?}: not valid UTF-8")))
}

/// The value of the option `name`, a number in `range` (decimal), or the
/// message "`name` "v": expected `what` in `range`".
pub fn number_in(
    name: &str,
    v: OsString,
    range: std::ops::RangeInclusive<u32>,
    what: &str,
) -> Result<u32, Stop> {
    let bad = |v: &dyn std::fmt::Debug| {
        Stop::Usage(format!(
            "{name} {v:?}: expected {what} in {}..={}",
            range.start(),
            range.end()
        ))
    };
    let s = v.into_string().map_err(|v| bad(&v))?;
    match s.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(&s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn os(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn inline_and_separate_values() {
        let args = os(&["--svg=a=b", "--svg", "pic.svg", "-oout", "-o", "x"]);
        let mut p = parser(&args);
        let mut got = Vec::new();
        while let Some(arg) = p.next().unwrap() {
            match arg {
                Arg::Long("svg") => got.push(value(&mut p, "--svg", "a file").unwrap()),
                Arg::Short('o') => got.push(value(&mut p, "-o", "a file").unwrap()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, os(&["a=b", "pic.svg", "out", "x"]));
        let args = os(&["--svg"]);
        let mut p = parser(&args);
        assert_eq!(p.next().unwrap(), Some(Arg::Long("svg")));
        assert_eq!(
            value(&mut p, "--svg", "a file"),
            Err(Stop::Usage("--svg needs a file".to_owned()))
        );
    }

    #[test]
    fn messages_name_the_argument() {
        let args = os(&["--json=1", "--bogus", "-x", "extra"]);
        let mut p = parser(&args);
        assert_eq!(p.next().unwrap(), Some(Arg::Long("json")));
        assert_eq!(
            Stop::from(p.next().unwrap_err()),
            Stop::Usage("--json takes no value (got \"1\")".to_owned())
        );
        let a = p.next().unwrap().unwrap();
        assert_eq!(
            unknown(a),
            Stop::Usage("unknown option \"--bogus\"".to_owned())
        );
        let a = p.next().unwrap().unwrap();
        assert_eq!(unknown(a), Stop::Usage("unknown option \"-x\"".to_owned()));
        let a = p.next().unwrap().unwrap();
        assert_eq!(
            unknown(a),
            Stop::Usage("unexpected argument \"extra\"".to_owned())
        );
    }

    #[test]
    fn numbers_and_text() {
        let n = |s: &str| number_in("--va-bits", OsString::from(s), 20..=56, "bits");
        assert_eq!(n("40"), Ok(40));
        assert_eq!(
            n("57"),
            Err(Stop::Usage(
                "--va-bits \"57\": expected bits in 20..=56".to_owned()
            ))
        );
        assert!(n("forty").is_err() && n("").is_err() && n("-1").is_err());
        let bad = OsString::from_vec(vec![b'4', 0xff]);
        assert!(
            matches!(number_in("--va-bits", bad.clone(), 20..=56, "bits"), Err(Stop::Usage(m)) if m.contains("20..=56"))
        );
        assert!(matches!(text("--layout", bad), Err(Stop::Usage(m)) if m.contains("UTF-8")));
    }
}
