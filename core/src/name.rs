//! Validated names (topics, queues, methods) and subscription patterns.
//!
//! A name is dot-separated segments: `orders.created`, `jobs.resize`. Segments are
//! non-empty, printable, without whitespace and without `*` or `>`. A pattern may
//! also use `*` for exactly one segment and `>` (last only) for one or more
//! trailing segments: `orders.*`, `sensors.>`.

use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;

/// The longest name or pattern accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// A validated topic, queue or method name. Cheap to clone.
#[derive(Clone)]
pub struct Name(Text);

/// Static names (event topics) are never copied; others are shared.
#[derive(Clone)]
enum Text {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    /// Validates `name`, returning [`Error::InvalidName`] when it breaks a rule.
    pub fn new(name: &str) -> Result<Self> {
        validate(name, false)?;
        Ok(Name(Text::Shared(Arc::from(name))))
    }

    /// Validates a `'static` name without allocating.
    pub fn from_static(name: &'static str) -> Result<Self> {
        validate(name, false)?;
        Ok(Name(Text::Static(name)))
    }

    /// A name [`validate`]d already (by the wire decoder), without checking again.
    pub(crate) fn checked(name: &str) -> Self {
        Name(Text::Shared(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Text::Static(s) => s,
            Text::Shared(s) => s,
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::str::FromStr for Name {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Name::new(s)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A validated subscription pattern; a plain name is a pattern matching only itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
    literal: bool,
}

impl Pattern {
    /// Validates `pattern`, returning [`Error::InvalidName`] when it breaks a rule.
    pub fn new(pattern: &str) -> Result<Self> {
        validate(pattern, true)?;
        let literal = !pattern.split('.').any(|s| s == "*" || s == ">");
        Ok(Pattern {
            text: Arc::from(pattern),
            literal,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern has no wildcard and so matches exactly one topic.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// The leading segments before the first wildcard, with their trailing dot
    /// (`orders.eu.` for `orders.eu.*`); the whole pattern when it is literal.
    ///
    /// Brokers that only match prefixes subscribe to this and filter exactly with
    /// [`Pattern::matches`].
    pub fn literal_prefix(&self) -> &str {
        if self.literal {
            return &self.text;
        }
        let mut end = 0;
        for segment in self.text.split('.') {
            if segment == "*" || segment == ">" {
                break;
            }
            end += segment.len() + 1;
        }
        &self.text[..end]
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        if self.literal {
            return *self.text == *topic;
        }
        let mut topic_segments = topic.split('.');
        for segment in self.text.split('.') {
            match segment {
                ">" => return topic_segments.next().is_some(),
                "*" => {
                    if topic_segments.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if topic_segments.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic_segments.next().is_none()
    }
}

impl From<Name> for Pattern {
    fn from(name: Name) -> Self {
        let text = match name.0 {
            Text::Static(s) => Arc::from(s),
            Text::Shared(s) => s,
        };
        Pattern {
            text,
            literal: true,
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Pattern::new(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

pub(crate) fn validate(text: &str, wildcards: bool) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: text.chars().take(MAX_NAME_LEN).collect(),
            reason,
        })
    };
    if text.is_empty() {
        return invalid("a name must not be empty");
    }
    if text.len() > MAX_NAME_LEN {
        return invalid("a name must be at most 256 bytes");
    }
    let mut segments = text.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return invalid("segments must not be empty (no leading, trailing or double dots)");
        }
        if wildcards && segment == "*" {
            continue;
        }
        if wildcards && segment == ">" {
            if segments.peek().is_some() {
                return invalid("`>` may only be the last segment");
            }
            continue;
        }
        if segment.contains(['*', '>']) {
            return invalid(if wildcards {
                "wildcards `*` and `>` must be whole segments"
            } else {
                "`*` and `>` are only allowed in subscription patterns"
            });
        }
        if segment.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("names must not contain whitespace or control characters");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dotted_names() {
        for ok in ["orders", "orders.created", "a.b-c.d_e", "日本.語"] {
            Name::new(ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "a\n", "a*b",
        ] {
            assert!(
                matches!(Name::new(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(Name::new(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in ["a.>.b", "a*", "a.b*", ">>", "", "a..*"] {
            assert!(Pattern::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn star_matches_one_segment() {
        let p = Pattern::new("orders.*").unwrap();
        assert!(p.matches("orders.created"));
        assert!(!p.matches("orders"));
        assert!(!p.matches("orders.eu.created"));
        assert!(!p.matches("ordersx.created"));
        let p = Pattern::new("*.created").unwrap();
        assert!(p.matches("orders.created"));
        assert!(!p.matches("orders.deleted"));
    }

    #[test]
    fn gt_matches_one_or_more_trailing_segments() {
        let p = Pattern::new("sensors.>").unwrap();
        assert!(p.matches("sensors.a"));
        assert!(p.matches("sensors.a.b.c"));
        assert!(!p.matches("sensors"));
        assert!(!p.matches("other.a"));
        assert!(Pattern::new(">").unwrap().matches("anything.at.all"));
    }

    #[test]
    fn literal_patterns_match_exactly() {
        let p = Pattern::new("orders.created").unwrap();
        assert!(p.is_literal());
        assert!(p.matches("orders.created"));
        assert!(!p.matches("orders.created.x"));
        assert_eq!(p.literal_prefix(), "orders.created");
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(
            Pattern::new("orders.eu.*").unwrap().literal_prefix(),
            "orders.eu."
        );
        assert_eq!(Pattern::new("*.x").unwrap().literal_prefix(), "");
        assert_eq!(Pattern::new("a.>").unwrap().literal_prefix(), "a.");
    }
}
