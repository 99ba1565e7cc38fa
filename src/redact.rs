//! Keeping credentials out of every output.
//!
//! Connection strings carry passwords (`mongodb://user:secret@host`) and sometimes other secrets
//! in their options. Everything mongoshift prints, logs, serializes or writes to a file goes
//! through these functions first; the raw string is only ever handed to the driver.

use std::ops::Range;

/// What a redacted secret is replaced with.
pub const MASK: &str = "****";

/// Connection-string options whose values are secret (compared lower-case).
const SECRET_OPTIONS: &[&str] = &["authmechanismproperties", "tlscertificatekeyfilepassword"];

const SCHEMES: &[&str] = &["mongodb+srv://", "mongodb://"];

/// Returns the connection string with its password and secret options replaced by `****`.
///
/// Works on malformed strings too (a password with an unescaped `@`, `/` or `?`): when the
/// userinfo cannot be told apart from the rest, more is masked, never less.
pub fn redact_uri(uri: &str) -> String {
    apply_mask(uri, &secret_ranges(uri))
}

/// The password of a connection string, percent-decoded, when it has one.
pub fn uri_password(uri: &str) -> Option<String> {
    let range = password_range(uri)?;
    (!range.is_empty()).then(|| percent_decode(&uri[range]))
}

/// Byte ranges of the secrets in a connection string: the password and secret option values.
pub fn secret_ranges(uri: &str) -> Vec<Range<usize>> {
    let Some(scheme) = SCHEMES.iter().find(|s| uri.starts_with(**s)) else {
        return Vec::new();
    };
    let start = scheme.len();
    let rest = &uri[start..];
    let mut ranges = Vec::new();
    let query_from = match userinfo_end(rest) {
        Some(at) => {
            if let Some(colon) = rest[..at].find(':') {
                ranges.push(start + colon + 1..start + at);
            }
            start + at + 1
        }
        None => start,
    };
    if let Some(q) = uri[query_from..].find('?') {
        let mut offset = query_from + q + 1;
        for pair in uri[offset..].split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && SECRET_OPTIONS.contains(&key.to_ascii_lowercase().as_str())
                && !value.is_empty()
            {
                let value_start = offset + key.len() + 1;
                ranges.push(value_start..value_start + value.len());
            }
            offset += pair.len() + 1;
        }
    }
    ranges
}

fn password_range(uri: &str) -> Option<Range<usize>> {
    let scheme = SCHEMES.iter().find(|s| uri.starts_with(**s))?;
    let rest = &uri[scheme.len()..];
    let at = userinfo_end(rest)?;
    let colon = rest[..at].find(':')?;
    Some(scheme.len() + colon + 1..scheme.len() + at)
}

/// The byte offset (in the text after the scheme) of the `@` that ends the userinfo, if any.
///
/// Valid strings percent-encode `@`, `/`, `?` and `:` in the userinfo, but options such as
/// `appName=a@b` may contain `@`, and users do write raw passwords. So: an `@` ends the
/// userinfo when what follows it is a host list, and what precedes it is not already inside the
/// options (`?name=`). When no `@` qualifies although one is present and the string would not
/// make sense without userinfo, the last `@` is taken: masking too much is safe, too little
/// is not.
fn userinfo_end(rest: &str) -> Option<usize> {
    let candidates: Vec<usize> = rest
        .match_indices('@')
        .map(|(i, _)| i)
        .filter(|&at| is_host_list(host_segment(&rest[at + 1..])))
        .collect();
    if let Some(&at) = candidates
        .iter()
        .rev()
        .find(|&&at| !inside_options(&rest[..at]))
    {
        return Some(at);
    }
    let last = *candidates.last()?;
    (!is_host_list(host_segment(rest))).then_some(last)
}

fn host_segment(s: &str) -> &str {
    s.split(['/', '?']).next().unwrap_or_default()
}

/// True for `?name=` somewhere in the text: the options have started.
fn inside_options(prefix: &str) -> bool {
    prefix.match_indices('?').any(|(i, _)| {
        let after = &prefix[i + 1..];
        let name_len = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .count();
        name_len > 0 && after[name_len..].starts_with('=')
    })
}

/// `host[:port][,host[:port]...]`, with bracketed IPv6 hosts and numeric ports.
fn is_host_list(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|host| {
            let (name, port) = if let Some(v6) = host.strip_prefix('[') {
                match v6.split_once(']') {
                    Some((addr, tail)) => (addr, tail.strip_prefix(':')),
                    None => return false,
                }
            } else {
                match host.split_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (host, None),
                }
            };
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_%:".contains(c))
                && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
}

fn apply_mask(text: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in ranges {
        out.push_str(&text[last..r.start]);
        out.push_str(MASK);
        last = r.end;
    }
    out.push_str(&text[last..]);
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Free text with every embedded connection string redacted, plus a map from offsets in the
/// original text to offsets in the redacted one (so highlighted spans still line up).
#[derive(Debug, Clone)]
pub struct RedactedText {
    /// The redacted text.
    pub text: String,
    /// (original range, length of its replacement), in order.
    replacements: Vec<(Range<usize>, usize)>,
}

impl RedactedText {
    /// Redacts every `mongodb://` or `mongodb+srv://` token in the text.
    pub fn new(original: &str) -> Self {
        let mut replacements = Vec::new();
        let mut search_from = 0;
        while let Some(start) = SCHEMES
            .iter()
            .filter_map(|s| original[search_from..].find(s).map(|i| i + search_from))
            .min()
        {
            let token_len = original[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
                .unwrap_or(original.len() - start);
            let token = &original[start..start + token_len];
            for r in secret_ranges(token) {
                replacements.push((start + r.start..start + r.end, MASK.len()));
            }
            search_from = start + token_len.max(1);
        }
        let ranges: Vec<Range<usize>> = replacements.iter().map(|(r, _)| r.clone()).collect();
        Self {
            text: apply_mask(original, &ranges),
            replacements,
        }
    }

    /// Maps an offset in the original text to the redacted text. Offsets inside a secret map to
    /// the start of its mask.
    pub fn map_offset(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for (range, new_len) in &self.replacements {
            if offset < range.start {
                break;
            }
            if offset < range.end {
                return range.start.saturating_add_signed(shift);
            }
            shift += *new_len as isize - range.len() as isize;
        }
        offset.saturating_add_signed(shift).min(self.text.len())
    }
}

/// Redacts every `mongodb://` or `mongodb+srv://` token inside free text.
pub fn redact_uris_in_text(text: &str) -> String {
    RedactedText::new(text).text
}

/// Removes known secrets and any embedded connection-string credentials from free text, such as
/// an error message from the driver that may quote the URI it was given.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor that knows the secrets of the given connection strings.
    pub fn for_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets = Vec::new();
        for uri in uris {
            for r in secret_ranges(uri) {
                // Messages may show the decoded form or the form written in the URI.
                secrets.push(percent_decode(&uri[r.clone()]));
                secrets.push(uri[r].to_owned());
            }
        }
        // Very short secrets would mask unrelated text; they are still masked inside URIs.
        secrets.retain(|s| s.len() >= 3);
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// Returns the text with every known secret and every URI password masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_uris_in_text(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_and_keeps_the_rest() {
        assert_eq!(
            redact_uri("mongodb://alice:s3cret@db1:27017,db2:27017/app?replicaSet=rs0"),
            "mongodb://alice:****@db1:27017,db2:27017/app?replicaSet=rs0"
        );
        assert_eq!(
            redact_uri("mongodb+srv://bob:p%40ss@cluster0.example.net/"),
            "mongodb+srv://bob:****@cluster0.example.net/"
        );
        assert_eq!(redact_uri("mongodb://host:1/"), "mongodb://host:1/");
        assert_eq!(redact_uri("mongodb://user@host/"), "mongodb://user@host/");
        assert_eq!(
            redact_uri("mongodb://h:1/?appName=a@b"),
            "mongodb://h:1/?appName=a@b"
        );
        assert_eq!(
            redact_uri("mongodb://u:pw@h:1/?appName=a@b"),
            "mongodb://u:****@h:1/?appName=a@b"
        );
        assert_eq!(
            redact_uri("mongodb://u:pw@[::1]:27017/"),
            "mongodb://u:****@[::1]:27017/"
        );
    }

    #[test]
    fn masks_malformed_passwords_whole() {
        for uri in [
            "mongodb://u:pa@ss/wo?rd@host:1/?appName=a@b",
            "mongodb://u:p?x=1@host:1/",
            "mongodb://u:a@b@host/",
        ] {
            let r = redact_uri(uri);
            for fragment in ["pa@ss", "wo?rd", "p?x=1", "a@b@"] {
                assert!(!r.contains(fragment), "{uri} -> {r}");
            }
            assert!(r.starts_with("mongodb://u:****@"), "{uri} -> {r}");
        }
    }

    #[test]
    fn masks_secret_options() {
        let r = redact_uri(
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok&tls=true",
        );
        assert_eq!(
            r,
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=****&tls=true"
        );
    }

    #[test]
    fn password_is_decoded() {
        assert_eq!(
            uri_password("mongodb://u:p%40ss@h/").as_deref(),
            Some("p@ss")
        );
        assert_eq!(uri_password("mongodb://u@h/"), None);
    }

    #[test]
    fn redactor_cleans_free_text() {
        let uri = "mongodb://u:p%40ss@h:1/";
        let r = Redactor::for_uris([uri]);
        let msg = format!("failed to connect to {uri}: auth failed for password p@ss (p%40ss)");
        let clean = r.redact(&msg);
        assert!(
            !clean.contains("p@ss") && !clean.contains("p%40ss"),
            "{clean}"
        );
        assert!(clean.contains("mongodb://u:****@h:1/"), "{clean}");
    }

    #[test]
    fn redacted_text_maps_offsets() {
        let text = "a = \"mongodb://u:longpassword@h:1/\"\nb = 2\n";
        let red = RedactedText::new(text);
        assert_eq!(red.text, "a = \"mongodb://u:****@h:1/\"\nb = 2\n");
        let b = text.find("b =").unwrap();
        assert_eq!(&red.text[red.map_offset(b)..red.map_offset(b) + 3], "b =");
        let pw = text.find("longpassword").unwrap();
        assert_eq!(red.map_offset(pw + 4), red.text.find("****").unwrap());
        assert_eq!(red.map_offset(4), 4);
    }
}
