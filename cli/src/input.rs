//! JSON values from the command line or from stdin, one per line.

use crate::exit::{CmdResult, Failure};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines, Stdin};

/// Parses a JSON argument, naming `what` it is in the error.
pub(crate) fn parse_json(text: &str, what: &str) -> CmdResult<Value> {
    serde_json::from_str(text).map_err(|err| {
        Failure::BadInput(format!(
            "{what} is not valid JSON ({err}); quote strings, e.g. '\"text\"'"
        ))
    })
}

/// The most `read_stdin_json` reads: twice the largest payload, so a
/// pretty-printed request that fits once compacted is still accepted.
pub(crate) const MAX_STDIN_JSON: usize = 2 * busbar::DEFAULT_MAX_PAYLOAD;

/// Reads the whole of stdin as one JSON value (any layout, several lines
/// allowed), refusing more than [`MAX_STDIN_JSON`] bytes.
pub(crate) async fn read_stdin_json(what: &str) -> CmdResult<Value> {
    let mut text = Vec::new();
    tokio::io::stdin()
        .take(MAX_STDIN_JSON as u64 + 1)
        .read_to_end(&mut text)
        .await?;
    if text.len() > MAX_STDIN_JSON {
        return Err(Failure::BusContext(
            format!("{what} on stdin is too large"),
            busbar::Error::TooLarge {
                size: text.len(),
                limit: MAX_STDIN_JSON,
            },
        ));
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(Failure::BadInput(format!(
            "stdin is empty: give {what} as JSON (e.g. null)"
        )));
    }
    serde_json::from_slice(&text)
        .map_err(|err| Failure::BadInput(format!("{what} on stdin is not valid JSON ({err})")))
}

/// Where values come from: the argument repeated, or stdin's lines.
pub(crate) enum Values {
    /// One value, given `remaining` more times.
    Repeat {
        /// The value.
        value: Value,
        /// How many times it is still to be given.
        remaining: u64,
    },
    /// Lines of stdin (blank lines skipped), at most `remaining` of them.
    Stdin {
        /// The lines.
        lines: Lines<BufReader<Stdin>>,
        /// The number of the last line read.
        line: u64,
        /// How many values may still be read.
        remaining: u64,
    },
}

impl Values {
    /// The argument `count` times (once by default), or else stdin's lines.
    pub(crate) fn new(json: Option<&str>, count: Option<u64>) -> CmdResult<Values> {
        Ok(match json {
            Some(text) => Values::Repeat {
                value: parse_json(text, "the JSON argument")?,
                remaining: count.unwrap_or(1),
            },
            None => Values::Stdin {
                lines: BufReader::new(tokio::io::stdin()).lines(),
                line: 0,
                remaining: count.unwrap_or(u64::MAX),
            },
        })
    }

    /// The next value, `None` when done.
    pub(crate) async fn next(&mut self) -> CmdResult<Option<Value>> {
        match self {
            Values::Repeat { value, remaining } => {
                if *remaining == 0 {
                    return Ok(None);
                }
                *remaining -= 1;
                Ok(Some(value.clone()))
            }
            Values::Stdin {
                lines,
                line,
                remaining,
            } => loop {
                if *remaining == 0 {
                    return Ok(None);
                }
                let Some(text) = lines.next_line().await? else {
                    return Ok(None);
                };
                *line += 1;
                if text.trim().is_empty() {
                    continue;
                }
                *remaining -= 1;
                return parse_json(&text, &format!("stdin line {line}")).map(Some);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn repeats_the_argument() {
        let mut values = Values::new(Some("{\"a\":1}"), Some(2)).unwrap();
        assert_eq!(values.next().await.unwrap().unwrap()["a"], 1);
        assert!(values.next().await.unwrap().is_some());
        assert!(values.next().await.unwrap().is_none());
    }

    #[test]
    fn bad_json_is_bad_input() {
        let err = Values::new(Some("not json"), None).err().unwrap();
        assert_eq!(err.code(), crate::exit::BAD_INPUT);
        assert!(err.message().contains("not valid JSON"));
    }
}
