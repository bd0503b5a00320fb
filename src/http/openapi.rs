//! The JSON Schemas of the contract's names and limits (room ids, usernames, secrets,
//! messages, event ids), written once and used by the handlers' `schema_with` annotations,
//! so `/openapi.json` (assembled in [`super::api_doc`]) states each rule the way the domain
//! types enforce it.

use std::sync::LazyLock;

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

use crate::domain::{self, Username};

/// Unicode `White_Space`, as a regular-expression class body (what usernames are trimmed of
/// and what a blank message consists of).
const WHITE_SPACE: &str =
    r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

fn string(pattern: Option<String>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
}

/// `roomId`: 1-64 characters of `A-Z a-z 0-9 . _ -`.
pub fn room_id() -> Object {
    string(Some(r"^[A-Za-z0-9._-]{1,64}$".to_owned()))
        .description(Some("1-64 characters of A-Z a-z 0-9 . _ -"))
        .examples(["lobby"])
        .build()
}

/// `username`: `Username::parse`'s rule as a regular expression, so that the names
/// schemathesis generates from it are accepted and the ones it does not match are refused.
pub fn username() -> Object {
    string(Some(USERNAME_PATTERN.clone()))
        .description(Some(
            "1-32 characters after trimming white space; no control, format (zero-width) or \
             bidi-control characters (a ZWJ between emoji and the tags of subdivision flags \
             are accepted too); not only invisible characters (white space, combining marks, \
             fillers); unique in its room, comparing NFKC-lowercased names and UTS #39 \
             confusable skeletons",
        ))
        .examples(["alice"])
        .build()
}

/// Built once: its character classes come from scanning every Unicode scalar value with the
/// predicates `Username::parse` uses, so the two cannot disagree. Characters are written
/// `\uXXXX` in the Basic Multilingual Plane and as themselves above it, the one spelling
/// Python's `re` (schemathesis) and ECMA-262 with the `u` flag share. One lookahead asks for a
/// visible character. Stricter than the server in one place only: the ZWJ of emoji sequences
/// and the tags of subdivision flags are left out, since allowing them where they belong
/// takes lookbehinds that leave schemathesis unable to generate names.
static USERNAME_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let space = WHITE_SPACE;
    let hidden = class_of(domain::is_hidden);
    let invisible = class_of(domain::is_invisible);
    let edge = format!("[^{space}{hidden}]");
    format!(
        "^[{space}]*(?=[\\s\\S]*[^{invisible}]){edge}(?:[^{hidden}]{{0,{inner}}}{edge})?\
         [{space}]*$",
        inner = Username::MAX_CHARS - 2
    )
});

/// A character class body (without the brackets) of every character `member` holds, as
/// ranges.
fn class_of(member: fn(char) -> bool) -> String {
    let mut ranges: Vec<(char, char)> = Vec::new();
    for c in ('\0'..=char::MAX).filter(|&c| member(c)) {
        match ranges.last_mut() {
            // A char range steps over the surrogates, which are not characters.
            Some((_, last)) if (*last..).nth(1) == Some(c) => *last = c,
            _ => ranges.push((c, c)),
        }
    }
    ranges
        .into_iter()
        .map(|(first, last)| match first == last {
            true => escaped(first),
            false => format!("{}-{}", escaped(first), escaped(last)),
        })
        .collect()
}

/// One character as a regular expression: `\uXXXX` in the Basic Multilingual Plane (what
/// would otherwise be a metacharacter included), the character itself above it.
fn escaped(c: char) -> String {
    if u32::from(c) <= 0xFFFF {
        format!("\\u{:04x}", u32::from(c))
    } else {
        c.to_string()
    }
}

/// `secret`: 1-128 characters, optional (absent or null when there is none).
pub fn secret() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(128))
        .description(Some("1-128 characters"))
        .build()
}

/// `message`: not blank; its byte limit is the server's `MAX_MESSAGE_BYTES` (413 beyond).
pub fn message() -> Object {
    string(Some(format!("[^{WHITE_SPACE}]")))
        .description(Some(
            "not blank; at most MAX_MESSAGE_BYTES bytes of UTF-8 (default 4096, 413 beyond)",
        ))
        .examples(["hi"])
        .build()
}

/// An event id, `<milliseconds>-<sequence>`.
pub fn event_id() -> Object {
    string(Some(r"^[0-9]{1,19}-[0-9]{1,19}$".to_owned()))
        .description(Some("an event id, <milliseconds>-<sequence>"))
        .examples(["1732560000000-0"])
        .build()
}

/// Where a stream resumes: an event id, or empty for none (as absent).
pub fn resume_after() -> Object {
    string(Some(r"^(?:[0-9]{1,19}-[0-9]{1,19})?$".to_owned()))
        .description(Some(
            "replay the events after this event id; empty or absent starts live",
        ))
        .examples(["1732560000000-0"])
        .build()
}
