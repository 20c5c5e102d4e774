//! Compile-time checks of names, with the rules of `busbar_core::Name`/`Pattern`,
//! and the default names derived from Rust identifiers.

use proc_macro2::Span;
use syn::LitStr;

/// The longest name accepted, in bytes (`busbar_core::MAX_NAME_LEN`).
const MAX_NAME_LEN: usize = 256;

/// What is being named, for the error messages.
#[derive(Clone, Copy)]
pub(crate) enum NameKind {
    /// A topic or RPC method name: no wildcards.
    Name,
    /// A subscription pattern: `*` and `>` allowed as whole segments.
    Pattern,
}

/// Checks `text` against busbar's naming rules, returning the rule it breaks.
pub(crate) fn check(text: &str, kind: NameKind) -> Result<(), &'static str> {
    let wildcards = matches!(kind, NameKind::Pattern);
    if text.is_empty() {
        return Err("a name must not be empty");
    }
    if text.len() > MAX_NAME_LEN {
        return Err("a name must be at most 256 bytes");
    }
    let mut segments = text.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return Err("segments must not be empty (no leading, trailing or double dots)");
        }
        if wildcards && segment == "*" {
            continue;
        }
        if wildcards && segment == ">" {
            if segments.peek().is_some() {
                return Err("`>` may only be the last segment");
            }
            continue;
        }
        if segment.contains(['*', '>']) {
            return Err(if wildcards {
                "wildcards `*` and `>` must be whole segments"
            } else {
                "`*` and `>` are only allowed in subscription patterns: use #[subscriber(pattern = \"...\")]"
            });
        }
        if segment.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("names must not contain whitespace or control characters");
        }
    }
    Ok(())
}

/// Checks a name given in an attribute, with an error pointing at the literal.
pub(crate) fn check_lit(lit: &LitStr, kind: NameKind) -> syn::Result<String> {
    let text = lit.value();
    check(&text, kind).map_err(|reason| {
        let what = match kind {
            NameKind::Name => "name",
            NameKind::Pattern => "pattern",
        };
        syn::Error::new(
            lit.span(),
            format!("invalid {what} {text:?}: {reason}; names are dot-separated segments such as \"orders.created\""),
        )
    })?;
    Ok(text)
}

/// The snake_case form of a type name: an `_` goes before an uppercase letter that
/// follows a lowercase letter or a digit, or that starts a word after an acronym
/// (`HTTPRequest` → `http_request`), and every letter is lowercased.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if (prev.is_lowercase() || prev.is_ascii_digit()) || (prev.is_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// An error covering `tokens` (all of them, not only the first).
pub(crate) fn error_at(
    tokens: impl quote::ToTokens,
    message: impl std::fmt::Display,
) -> syn::Error {
    syn::Error::new_spanned(tokens, message)
}

/// An error at `span`.
pub(crate) fn error(span: Span, message: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_follows_the_documented_rule() {
        assert_eq!(snake_case("OrderCreated"), "order_created");
        assert_eq!(snake_case("HTTPRequest"), "http_request");
        assert_eq!(snake_case("Sensor2Reading"), "sensor2_reading");
        assert_eq!(snake_case("Ping"), "ping");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn names_follow_core_rules() {
        assert!(check("orders.created", NameKind::Name).is_ok());
        assert!(check("orders.*", NameKind::Name).is_err());
        assert!(check("orders.*", NameKind::Pattern).is_ok());
        assert!(check("a.>.b", NameKind::Pattern).is_err());
        assert!(check("a..b", NameKind::Name).is_err());
        assert!(check("a b", NameKind::Name).is_err());
        assert!(check("", NameKind::Name).is_err());
    }
}
