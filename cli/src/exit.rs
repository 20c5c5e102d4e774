//! Failures of a command and their exit codes.
//!
//! Each [`busbar::Error`] kind has its own exit code, so scripts can tell a
//! missing provider from a timeout or a failing handler.

use busbar::Error;
use std::process::ExitCode;

/// Exit code of a failure that has no code of its own (I/O, a child process).
pub(crate) const OTHER: u8 = 1;
/// Exit code of input that is not valid JSON.
pub(crate) const BAD_INPUT: u8 = 3;
/// Exit code of a benchmark that lost messages or saw errors.
pub(crate) const BENCH_INCOMPLETE: u8 = 4;

/// Exit codes by [`Error::kind`], as listed in `busbar --help`.
pub(crate) const KIND_CODES: &[(&str, u8)] = &[
    ("invalid_name", 10),
    ("invalid_url", 11),
    ("no_responders", 12),
    ("timeout", 13),
    ("remote", 14),
    ("codec", 15),
    ("malformed", 16),
    ("too_large", 17),
    ("lagged", 18),
    ("transport", 19),
    ("closed", 20),
    ("unsupported", 21),
    ("interrupted", 22),
    ("provider_lost", 23),
];

/// The exit code for an error kind (`timeout`, `remote`, ...).
pub(crate) fn code_of_kind(kind: &str) -> u8 {
    KIND_CODES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(OTHER, |(_, code)| *code)
}

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The bus reported an error.
    Bus(Error),
    /// The bus reported an error; this text says what was being done.
    BusContext(String, Error),
    /// A JSON argument or input line did not parse.
    BadInput(String),
    /// Reading or writing the terminal or a file failed.
    Io(std::io::Error),
    /// A benchmark finished but lost messages or saw errors.
    BenchIncomplete(String),
    /// Anything else, with its message.
    Other(String),
}

/// The result type of every command.
pub(crate) type CmdResult<T = ()> = Result<T, Failure>;

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::Bus(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure::Io(err)
    }
}

impl Failure {
    /// The process exit code for this failure.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Failure::Bus(err) | Failure::BusContext(_, err) => code_of_kind(err.kind()),
            Failure::BadInput(_) => BAD_INPUT,
            Failure::BenchIncomplete(_) => BENCH_INCOMPLETE,
            Failure::Io(_) | Failure::Other(_) => OTHER,
        }
    }

    /// Prints the failure on stderr and gives the exit code.
    ///
    /// A closed stdout (`busbar sub x | head -1`) is a normal end, not a failure.
    pub(crate) fn report(self) -> ExitCode {
        if let Failure::Io(err) = &self {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
        }
        eprintln!("busbar: error: {}", self.message());
        ExitCode::from(self.code())
    }

    /// The one-line message shown to the user.
    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Bus(err) => describe(err),
            Failure::BusContext(context, err) => format!("{context}: {}", describe(err)),
            Failure::BadInput(msg) => format!("bad input: {msg}"),
            Failure::Io(err) => format!("i/o: {err}"),
            Failure::BenchIncomplete(msg) | Failure::Other(msg) => msg.clone(),
        }
    }
}

/// An error's text with its kind and, for transport errors, the cause chain.
pub(crate) fn describe(err: &Error) -> String {
    let mut text = format!("{err} [{}]", err.kind());
    if let Error::NoResponders { .. } = err {
        text.push_str(" (is a `busbar serve` or another provider running on this URL?)");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Adds what was being done to a bus error.
pub(crate) trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl FnOnce() -> String) -> CmdResult<T>;
}

impl<T> Context<T> for Result<T, Error> {
    fn context(self, context: impl FnOnce() -> String) -> CmdResult<T> {
        self.map_err(|err| Failure::BusContext(context(), err))
    }
}

/// The exit-code table shown at the end of `busbar --help`.
pub(crate) fn help_table() -> String {
    let mut text = String::from(
        "Exit codes:\n  0   success\n  1   other failure (i/o, a command that could not run)\n  \
         2   usage error\n  3   input that is not valid JSON\n  \
         4   a benchmark lost messages or saw errors\n",
    );
    for (kind, code) in KIND_CODES {
        text.push_str(&format!("  {code}  {kind}\n"));
    }
    text.push_str(
        "\nEnvironment:\n  BUSBAR_URL  the bus URL when --url is not given\n  \
         RUST_LOG    log filter for stderr (quiet when unset), e.g. RUST_LOG=busbar=debug\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_code() {
        let mut codes: Vec<u8> = KIND_CODES.iter().map(|(_, c)| *c).collect();
        codes.extend([OTHER, 2, BAD_INPUT, BENCH_INCOMPLETE]);
        let count = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), count);
    }

    #[test]
    fn every_error_kind_has_a_code_of_its_own() {
        let errors = [
            Error::InvalidName {
                name: "x".into(),
                reason: "r",
            },
            Error::InvalidUrl {
                url: "x".into(),
                reason: "r".into(),
            },
            Error::NoResponders { method: "m".into() },
            Error::Timeout,
            Error::ProviderLost { method: "m".into() },
            Error::Remote {
                kind: "k".into(),
                message: "m".into(),
            },
            Error::codec("c"),
            Error::Malformed("m".into()),
            Error::TooLarge { size: 2, limit: 1 },
            Error::Lagged { missed: 1 },
            Error::Interrupted,
            Error::transport("t"),
            Error::Closed,
            Error::Unsupported {
                transport: "t",
                operation: "o",
            },
        ];
        for err in errors {
            assert_ne!(
                code_of_kind(err.kind()),
                OTHER,
                "{} has no exit code",
                err.kind()
            );
        }
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(Failure::Bus(Error::Timeout).code(), 13);
        let remote = Error::Remote {
            kind: "x".into(),
            message: "y".into(),
        };
        assert_eq!(Failure::Bus(remote).code(), 14);
        let none = Error::NoResponders { method: "m".into() };
        assert_eq!(Failure::Bus(none).code(), 12);
        assert_eq!(code_of_kind("something_new"), OTHER);
    }
}
