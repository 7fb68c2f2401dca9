//! Lexical pieces of the RFC 3261 §25.1 grammar shared by the URI, header and message parsers:
//! `token`, LWS, `quoted-string`, generic `;name=value` parameters and comma splitting.

use std::fmt;

use super::error::HeaderError;

/// One `;name[=value]` parameter of a URI or a header field, kept as written (escapes and quotes
/// included) so that forwarding it changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    name: String,
    value: Option<String>,
}

impl Param {
    /// A parameter; `value` `None` is a flag such as `lr` or `rport`.
    pub fn new(name: impl Into<String>, value: Option<String>) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }

    /// The name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value as written (a quoted-string keeps its quotes); `None` for a flag.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The value with surrounding quotes and `\` escapes of a quoted-string removed.
    pub fn unquoted_value(&self) -> Option<String> {
        self.value.as_deref().map(unquote)
    }

    pub(crate) fn set_value(&mut self, value: Option<String>) {
        self.value = value;
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

/// Finds a parameter by name, case-insensitively (RFC 3261 §7.3.1, §19.1.4).
pub(crate) fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Sets (replacing the first of that name, in place) or appends a parameter.
pub(crate) fn set_param(params: &mut Vec<Param>, name: &str, value: Option<String>) {
    if let Some(p) = params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        p.set_value(value);
    } else {
        params.push(Param::new(name, value));
    }
}

/// Removes every parameter of that name; returns whether one was present.
pub(crate) fn remove_param(params: &mut Vec<Param>, name: &str) -> bool {
    let before = params.len();
    params.retain(|p| !p.name.eq_ignore_ascii_case(name));
    params.len() != before
}

/// RFC 3261 §25.1 `token` characters: alphanumerics and ``- . ! % * _ + ` ' ~``.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A non-empty RFC 3261 `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// SP or HTAB (after unfolding, all LWS is made of these).
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Index of the first non-whitespace byte at or after `i`.
pub(crate) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that is not a token character.
pub(crate) fn scan_token(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_token_char(s[i]) {
        i += 1;
    }
    i
}

/// `s[i]` is `"`: returns the index just past the closing quote (RFC 3261 §25.1
/// `quoted-string`, with `quoted-pair` escapes).
pub(crate) fn scan_quoted(s: &[u8], i: usize) -> Result<usize, HeaderError> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(HeaderError::UnterminatedQuote)
}

/// Removes the quotes and `\` escapes of a quoted-string; other text is returned unchanged.
pub(crate) fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters allowed in a generic-param value besides token characters: `host` needs `:`
/// and `[`/`]` for IPv6 references (RFC 3261 §25.1 `gen-value = token / host / quoted-string`).
fn is_gen_value_char(b: u8) -> bool {
    is_token_char(b) || matches!(b, b':' | b'[' | b']')
}

/// Parses `*( SEMI generic-param )` from `s[i..]` to the end of `s`, with LWS allowed around
/// `;` and `=` (RFC 3261 §25.1 `SEMI`, `EQUAL`). Anything else left over is an error.
pub(crate) fn parse_params(s: &str, mut i: usize) -> Result<Vec<Param>, HeaderError> {
    let b = s.as_bytes();
    let mut params = Vec::new();
    i = skip_ws(b, i);
    while i < b.len() {
        if b[i] != b';' {
            return Err(HeaderError::Trailing);
        }
        i = skip_ws(b, i + 1);
        let name_end = scan_token(b, i);
        if name_end == i {
            return Err(HeaderError::InvalidParam);
        }
        let name = &s[i..name_end];
        i = skip_ws(b, name_end);
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i = skip_ws(b, i + 1);
            let start = i;
            if i < b.len() && b[i] == b'"' {
                i = scan_quoted(b, i)?;
            } else {
                while i < b.len() && is_gen_value_char(b[i]) {
                    i += 1;
                }
            }
            if i == start {
                return Err(HeaderError::InvalidParam);
            }
            value = Some(s[start..i].to_owned());
            i = skip_ws(b, i);
        }
        params.push(Param::new(name, value));
    }
    Ok(params)
}

/// Writes `;name[=value]` for each parameter.
pub(crate) fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        write!(f, ";{p}")?;
    }
    Ok(())
}

/// Splits a header value on commas that are outside quoted strings and `<...>` (RFC 3261
/// §7.3.1: `field-name: value *(,value)`). Elements are trimmed; empty elements are kept so
/// that validators can reject them.
pub(crate) fn split_commas(value: &str) -> Vec<&str> {
    let b = value.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b',' if !in_quotes && !in_angle => {
                out.push(value[start..i].trim_matches([' ', '\t']));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(value[start.min(value.len())..].trim_matches([' ', '\t']));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_tolerate_lws_and_keep_quotes() {
        let s = " ;  branch  =   z9hG4bK9ikj8 ;rport; +sip.instance=\"<urn:uuid:1>\"";
        let p = parse_params(s, 0).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], Param::new("branch", Some("z9hG4bK9ikj8".into())));
        assert_eq!(p[1], Param::new("rport", None));
        assert_eq!(p[2].value(), Some("\"<urn:uuid:1>\""));
        assert_eq!(p[2].unquoted_value().as_deref(), Some("<urn:uuid:1>"));
    }

    #[test]
    fn params_reject_empty_names_and_garbage() {
        assert_eq!(parse_params(";;", 0), Err(HeaderError::InvalidParam));
        assert_eq!(parse_params(";a=", 0), Err(HeaderError::InvalidParam));
        assert_eq!(parse_params(" x", 0), Err(HeaderError::Trailing));
        assert_eq!(
            parse_params(";a=\"x", 0),
            Err(HeaderError::UnterminatedQuote)
        );
    }

    #[test]
    fn split_respects_quotes_and_angles() {
        let v = r#""Watson, T" <sip:a@b;x=1,2>;q=1 , <sip:c@d>,"a\",b" <sip:e@f>"#;
        assert_eq!(
            split_commas(v),
            vec![
                r#""Watson, T" <sip:a@b;x=1,2>;q=1"#,
                "<sip:c@d>",
                r#""a\",b" <sip:e@f>"#
            ]
        );
        assert_eq!(split_commas("a,,b"), vec!["a", "", "b"]);
    }

    #[test]
    fn unquote_removes_escapes() {
        assert_eq!(unquote(r#""J Rosenberg \\\"""#), r#"J Rosenberg \""#);
        assert_eq!(unquote("token"), "token");
    }
}
