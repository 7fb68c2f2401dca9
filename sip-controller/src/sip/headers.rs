//! The header section: an ordered list of fields that keeps every name as it was spelled and
//! every value as received (after unfolding), with lookups that ignore case and understand the
//! compact forms (RFC 3261 §7.3.1, §7.3.3, §20 and the IANA "Header Fields" registry).
//!
//! A field whose grammar is a comma-separated list (Via, Contact, Route, Allow...) is split into
//! its values on commas outside quotes and `<>`; every other field is one value, so
//! Authorization, WWW-Authenticate, Date, and extension headers the codec does not know pass
//! through whole (RFC 4475 §3.1.1.1 `UnknownHeaderWithUnusualValue`).

use std::net::SocketAddr;

use super::{
    error::{HeaderError, ParseError},
    grammar::split_commas,
    typed::{
        parse_content_length, parse_expires, parse_max_forwards, validate_call_id, CSeq, Contact,
        MediaType, NameAddr, Via,
    },
};

/// Compact forms: RFC 3261 §7.3.3 (c e f i k l m s t v), RFC 3515 (r), RFC 3841 (a d j),
/// RFC 3892 (b), RFC 4028 (x), RFC 4474 (n), RFC 6665 (o u), RFC 8224 (y).
const COMPACT_FORMS: [(u8, &str); 20] = [
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Header fields whose grammar is `value *(COMMA value)` (RFC 3261 §20 and extensions).
const LIST_HEADERS: [&str; 38] = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Resource-Priority",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Call-Info",
    "Contact",
    "Content-Encoding",
    "Content-Language",
    "Diversion",
    "Error-Info",
    "Feature-Caps",
    "Geolocation",
    "History-Info",
    "In-Reply-To",
    "P-Asserted-Identity",
    "P-Associated-URI",
    "P-Preferred-Identity",
    "Path",
    "Proxy-Require",
    "Reason",
    "Record-Route",
    "Recv-Info",
    "Reject-Contact",
    "Request-Disposition",
    "Require",
    "Resource-Priority",
    "Route",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Service-Route",
    "Supported",
    "Unsupported",
    "Via",
];

/// The full name for a one-letter compact form (case-insensitive); other names unchanged.
pub fn expand_compact(name: &str) -> &str {
    match name.as_bytes() {
        [c] => COMPACT_FORMS
            .iter()
            .find(|(short, _)| short.eq_ignore_ascii_case(c))
            .map_or(name, |(_, full)| full),
        _ => name,
    }
}

/// Whether two header names denote the same field: case-insensitive, compact forms expanded.
pub fn names_match(a: &str, b: &str) -> bool {
    expand_compact(a).eq_ignore_ascii_case(expand_compact(b))
}

/// Whether the field's values are a comma-separated list.
pub fn is_list_header(name: &str) -> bool {
    let full = expand_compact(name);
    LIST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(full))
}

/// One header field: name as spelled, value unfolded and trimmed. `Debug` redacts the values
/// of credential fields (`Authorization`, `Proxy-Authorization`): messages are kept in call
/// state that may be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    name: String,
    value: String,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = names_match(&self.name, "Authorization")
            || names_match(&self.name, "Proxy-Authorization");
        f.debug_struct("Header")
            .field("name", &self.name)
            .field("value", if secret { &"<redacted>" } else { &self.value })
            .finish()
    }
}

impl Header {
    /// A field. CR, LF and NUL in either part are written as spaces by the encoder, so a value
    /// copied from elsewhere can never inject a header line.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The name as spelled.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole value.
    pub fn value(&self) -> &str {
        &self.value
    }

    pub(crate) fn value_mut(&mut self) -> &mut String {
        &mut self.value
    }

    /// Whether this field is `name` (compact forms and case ignored).
    pub fn is(&self, name: &str) -> bool {
        names_match(&self.name, name)
    }
}

/// The ordered header fields of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<Header>,
}

impl Headers {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of fields (lines), not values.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// All fields in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.fields.iter()
    }

    /// Whether a field of that name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.fields.iter().any(|h| h.is(name))
    }

    /// The whole value of the first field of that name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|h| h.is(name)).map(Header::value)
    }

    /// The whole value of every field of that name, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |h| h.is(name))
            .map(Header::value)
    }

    /// Every value of that name in order: list fields split on commas (empty elements skipped),
    /// other fields whole.
    pub fn values(&self, name: &str) -> Vec<&str> {
        let list = is_list_header(name);
        let mut out = Vec::new();
        for v in self.fields.iter().filter(|h| h.is(name)).map(Header::value) {
            if list {
                out.extend(split_commas(v).into_iter().filter(|e| !e.is_empty()));
            } else {
                out.push(v);
            }
        }
        out
    }

    /// The first value of that name (the first element of a list field).
    pub fn first_value(&self, name: &str) -> Option<&str> {
        let v = self.get(name)?;
        if is_list_header(name) {
            split_commas(v).into_iter().find(|e| !e.is_empty())
        } else {
            Some(v)
        }
    }

    /// Appends a field at the bottom.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.fields.push(Header::new(name, value));
    }

    /// Replaces the first field of that name in place (keeping its spelling) and removes the
    /// others; appends a field when there is none.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.fields.iter().position(|h| h.is(name)) {
            Some(first) => {
                self.fields[first].value = value;
                let mut index = 0;
                self.fields.retain(|h| {
                    let keep = index <= first || !h.is(name);
                    index += 1;
                    keep
                });
            }
            None => self.push(name, value),
        }
    }

    /// Removes every field of that name; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|h| !h.is(name));
        before - self.fields.len()
    }

    /// Inserts a field above the first field of that name, or at the very top when there is
    /// none: the topmost Via a UA or proxy adds (RFC 3261 §8.1.1.7, §16.6 item 8) and the
    /// Record-Route a proxy prepends (§16.6 item 4).
    pub fn insert_top(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let header = Header::new(name, value);
        let at = self
            .fields
            .iter()
            .position(|h| h.is(&header.name))
            .unwrap_or(0);
        self.fields.insert(at, header);
    }

    /// Removes and returns the first value of that name: the topmost Via a proxy strips from a
    /// response (RFC 3261 §16.7 item 3). A list field holding several values keeps the rest.
    pub fn pop_first_value(&mut self, name: &str) -> Option<String> {
        let index = self.fields.iter().position(|h| h.is(name))?;
        if !is_list_header(name) {
            return Some(self.fields.remove(index).value);
        }
        let elements = split_commas(&self.fields[index].value);
        let mut rest = elements.into_iter().skip_while(|e| e.is_empty());
        let first = rest.next().unwrap_or_default().to_owned();
        let remaining: Vec<&str> = rest.filter(|e| !e.is_empty()).collect();
        if remaining.is_empty() {
            self.fields.remove(index);
        } else {
            self.fields[index].value = remaining.join(", ");
        }
        Some(first)
    }

    /// Replaces the first value of that name (the first element of a list field), keeping the
    /// other values of the field; returns `false` when there is no such field.
    pub fn replace_first_value(&mut self, name: &str, value: &str) -> bool {
        let Some(index) = self.fields.iter().position(|h| h.is(name)) else {
            return false;
        };
        if !is_list_header(name) {
            value.clone_into(&mut self.fields[index].value);
            return true;
        }
        let elements = split_commas(&self.fields[index].value);
        let mut replaced = false;
        let rebuilt: Vec<&str> = elements
            .into_iter()
            .filter(|e| !e.is_empty())
            .map(|e| {
                if replaced {
                    e
                } else {
                    replaced = true;
                    value
                }
            })
            .collect();
        self.fields[index].value = if rebuilt.is_empty() {
            value.to_owned()
        } else {
            rebuilt.join(", ")
        };
        true
    }

    pub(crate) fn fields_mut(&mut self) -> &mut Vec<Header> {
        &mut self.fields
    }

    /// Parses a mandatory single-valued field with `parse`.
    fn required<'a, T>(
        &'a self,
        name: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, HeaderError>,
    ) -> Result<T, ParseError> {
        let value = self.get(name).ok_or(ParseError::MissingHeader { name })?;
        parse(value).map_err(|source| ParseError::InvalidHeader { name, source })
    }

    /// Parses an optional single-valued field with `parse`.
    fn optional<'a, T>(
        &'a self,
        name: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, HeaderError>,
    ) -> Result<Option<T>, ParseError> {
        self.get(name)
            .map(parse)
            .transpose()
            .map_err(|source| ParseError::InvalidHeader { name, source })
    }

    /// Parses every value of a list field with `parse`; an empty element is an error.
    fn list<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, HeaderError>,
    ) -> Result<Vec<T>, ParseError> {
        let invalid = |source| ParseError::InvalidHeader { name, source };
        let mut out = Vec::new();
        for field in self.get_all(name) {
            for element in split_commas(field) {
                if element.is_empty() {
                    return Err(invalid(HeaderError::Empty));
                }
                out.push(parse(element).map_err(invalid)?);
            }
        }
        Ok(out)
    }

    /// Every Via value, topmost first.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.list("Via", Via::parse)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        self.required("Via", |_| Ok(()))?;
        let first = self.first_value("Via").unwrap_or_default();
        Via::parse(first).map_err(|source| ParseError::InvalidHeader {
            name: "Via",
            source,
        })
    }

    /// Replaces the topmost Via value (after [`Via::stamp_received`], say).
    pub fn set_top_via(&mut self, via: &Via) -> bool {
        self.replace_first_value("Via", &via.to_string())
    }

    /// The From field.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.required("From", NameAddr::parse)
    }

    /// The To field.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.required("To", NameAddr::parse)
    }

    /// The Call-ID, trimmed.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        self.required("Call-ID", validate_call_id)
    }

    /// The `CSeq`.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        self.required("CSeq", CSeq::parse)
    }

    /// Max-Forwards, when present.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.optional("Max-Forwards", parse_max_forwards)
    }

    /// Every Contact value. A `*` mixed with addresses is an error (RFC 3261 §10.2.2).
    pub fn contacts(&self) -> Result<Vec<Contact>, ParseError> {
        let contacts = self.list("Contact", Contact::parse)?;
        if contacts.len() > 1 && contacts.contains(&Contact::Wildcard) {
            return Err(ParseError::InvalidHeader {
                name: "Contact",
                source: HeaderError::WildcardMixed,
            });
        }
        Ok(contacts)
    }

    /// Every Route value, topmost first.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.list("Route", NameAddr::parse)
    }

    /// Every Record-Route value, topmost first.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.list("Record-Route", NameAddr::parse)
    }

    /// Content-Type, when present.
    pub fn content_type(&self) -> Result<Option<MediaType>, ParseError> {
        self.optional("Content-Type", MediaType::parse)
    }

    /// Content-Length as written, when present (the encoder always writes the body's length).
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        self.optional("Content-Length", parse_content_length)
    }

    /// Expires, when present.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.optional("Expires", parse_expires)
    }

    /// Stamps the topmost Via of a request received from `source` (RFC 3261 §18.2.1,
    /// RFC 3581 §4); see [`Via::stamp_received`].
    pub fn stamp_top_via(&mut self, source: SocketAddr) -> Result<(), ParseError> {
        let mut via = self.top_via()?;
        via.stamp_received(source);
        self.set_top_via(&via);
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;

    fn into_iter(self) -> Self::IntoIter {
        self.fields.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_out_of_debug() {
        let mut headers = Headers::new();
        headers.push(
            "Proxy-Authorization",
            "Digest username=\"a\", response=\"0123abcd\"",
        );
        headers.push("Subject", "visible");
        let debug = format!("{headers:?}");
        assert!(!debug.contains("0123abcd"), "{debug}");
        assert!(debug.contains("visible"));
    }

    fn sample() -> Headers {
        let mut h = Headers::new();
        h.push(
            "v",
            "SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/UDP b.example;branch=z9hG4bK2",
        );
        h.push("Via", "SIP/2.0/TCP c.example;branch=z9hG4bK3");
        h.push("f", "\"Watson, Thomas\" <sip:t@example.org>;tag=1");
        h.push(
            "Authorization",
            "Digest username=\"bob\", realm=\"b.example\", nonce=\"x\"",
        );
        h.push("Route", "<sip:p1.example;lr>,<sip:p2.example;lr>");
        h.push("X-Custom", "a,b");
        h
    }

    #[test]
    fn lookups_ignore_case_and_compact_forms() {
        let h = sample();
        assert!(names_match("v", "VIA"));
        assert!(names_match("I", "call-id"));
        assert!(names_match("o", "Event"));
        assert!(!names_match("v", "Contact"));
        assert_eq!(
            h.get("FROM"),
            Some("\"Watson, Thomas\" <sip:t@example.org>;tag=1")
        );
        assert_eq!(h.get_all("via").count(), 2);
        assert_eq!(expand_compact("y"), "Identity");
        assert_eq!(expand_compact("Q"), "Q");
    }

    #[test]
    fn list_fields_split_and_others_stay_whole() {
        let h = sample();
        assert_eq!(h.values("Via").len(), 3);
        assert_eq!(
            h.first_value("Via"),
            Some("SIP/2.0/UDP a.example;branch=z9hG4bK1")
        );
        assert_eq!(h.values("From").len(), 1);
        assert_eq!(h.values("Authorization").len(), 1);
        assert_eq!(h.values("X-Custom"), ["a,b"]);
        assert_eq!(
            h.values("route"),
            ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
        );
        let vias = h.vias().unwrap();
        assert_eq!(vias[2].branch(), Some("z9hG4bK3"));
        assert_eq!(h.routes().unwrap().len(), 2);
    }

    #[test]
    fn set_replaces_in_place_and_removes_duplicates() {
        let mut h = sample();
        h.set("VIA", "SIP/2.0/UDP z.example;branch=z9hG4bKz");
        assert_eq!(h.len(), 5);
        assert_eq!(h.iter().next().map(Header::name), Some("v"));
        assert_eq!(h.values("Via"), ["SIP/2.0/UDP z.example;branch=z9hG4bKz"]);
        h.set("Max-Forwards", "70");
        assert_eq!(h.iter().last().map(Header::value), Some("70"));
        assert_eq!(h.remove("route"), 1);
        assert_eq!(h.remove("route"), 0);
    }

    #[test]
    fn insert_top_goes_above_the_first_field_of_its_name() {
        let mut h = sample();
        h.insert_top("Route", "<sip:p0.example;lr>");
        assert_eq!(h.values("Route")[0], "<sip:p0.example;lr>");
        assert_eq!(h.iter().nth(4).map(Header::name), Some("Route"));
        h.insert_top("Record-Route", "<sip:me.example;lr>");
        assert_eq!(h.iter().next().map(Header::name), Some("Record-Route"));
        h.insert_top("Via", "SIP/2.0/TLS me.example;branch=z9hG4bKme");
        assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bKme"));
    }

    #[test]
    fn pop_and_replace_first_value_keep_the_rest_of_a_combined_field() {
        let mut h = sample();
        assert_eq!(
            h.pop_first_value("Via").as_deref(),
            Some("SIP/2.0/UDP a.example;branch=z9hG4bK1")
        );
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP b.example;branch=z9hG4bK2"));
        let mut top = h.top_via().unwrap();
        top.set_received("192.0.2.9".parse().unwrap());
        assert!(h.set_top_via(&top));
        assert_eq!(
            h.values("Via")[0],
            "SIP/2.0/UDP b.example;branch=z9hG4bK2;received=192.0.2.9"
        );
        assert_eq!(
            h.pop_first_value("Via").as_deref(),
            Some("SIP/2.0/UDP b.example;branch=z9hG4bK2;received=192.0.2.9")
        );
        assert_eq!(
            h.pop_first_value("Via").as_deref(),
            Some("SIP/2.0/TCP c.example;branch=z9hG4bK3")
        );
        assert_eq!(h.pop_first_value("Via"), None);
        assert!(!h.replace_first_value("Via", "x"));
        assert!(h.replace_first_value("From", "<sip:new@example.org>;tag=2"));
        assert_eq!(h.from().unwrap().tag(), Some("2"));
    }

    #[test]
    fn typed_accessors_report_missing_and_invalid_fields() {
        let mut h = Headers::new();
        assert_eq!(h.cseq(), Err(ParseError::MissingHeader { name: "CSeq" }));
        assert_eq!(h.top_via(), Err(ParseError::MissingHeader { name: "Via" }));
        assert_eq!(h.max_forwards(), Ok(None));
        h.push("CSeq", "x INVITE");
        assert_eq!(
            h.cseq(),
            Err(ParseError::InvalidHeader {
                name: "CSeq",
                source: HeaderError::InvalidNumber
            })
        );
        h.push("m", "*");
        h.push("Contact", "<sip:a@b>");
        assert_eq!(
            h.contacts(),
            Err(ParseError::InvalidHeader {
                name: "Contact",
                source: HeaderError::WildcardMixed
            })
        );
        h.push("Route", "<sip:a@b>,,<sip:c@d>");
        assert_eq!(
            h.routes(),
            Err(ParseError::InvalidHeader {
                name: "Route",
                source: HeaderError::Empty
            })
        );
        h.push("Expires", "3600");
        assert_eq!(h.expires(), Ok(Some(3600)));
    }

    #[test]
    fn stamping_the_top_via() {
        let mut h = sample();
        h.stamp_top_via("203.0.113.5:5062".parse().unwrap())
            .unwrap();
        assert_eq!(
            h.first_value("Via"),
            Some("SIP/2.0/UDP a.example;branch=z9hG4bK1;received=203.0.113.5")
        );
        assert_eq!(h.values("Via").len(), 3);
    }
}
