//! What the fuzz targets assert about every value the server's parsers accept and every error
//! they return. A broken assertion is a crash, which libFuzzer saves as an artifact.
//!
//! The checks are written from API.md's "Names and limits" table, not from the parsers' code,
//! so a parser that drifts from the contract fails here.

use chat_server::domain::{ClientMsgId, EventId, MessageText, RoomId, RoomSecret, Username};
use chat_server::error::ApiError;

/// Every error code API.md defines, with its HTTP status.
pub const API_CODES: &[(&str, u16)] = &[
    ("invalid_request", 400),
    ("unsupported_media_type", 415),
    ("unauthorized", 401),
    ("forbidden", 403),
    ("room_not_found", 404),
    ("not_member", 404),
    ("not_found", 404),
    ("room_exists", 409),
    ("username_taken", 409),
    ("payload_too_large", 413),
    ("rate_limited", 429),
    ("unavailable", 503),
];

/// `err` is one of API.md's codes, with its status, a message, and one of `expected`.
pub fn error(err: &ApiError, expected: &[&str]) {
    let code = err.code();
    let status = API_CODES
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, status)| *status);
    assert_eq!(
        status,
        Some(chat_server::http::error::status_of(err).as_u16()),
        "code {code} is not API.md's or has the wrong status"
    );
    assert!(
        expected.contains(&code),
        "{code} where {expected:?} was expected"
    );
    assert!(!err.to_string().is_empty(), "an error without a message");
    let body = err.body();
    assert!(serde_json::to_string(&body).is_ok());
}

fn room_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// 1-64 characters of `A-Z a-z 0-9 . _ -`, and it parses again to itself.
pub fn room_id(room: &RoomId) {
    let raw = room.as_str();
    assert!(
        (1..=64).contains(&raw.len()),
        "room id length {}",
        raw.len()
    );
    assert!(raw.bytes().all(room_id_char), "room id {raw:?}");
    assert_eq!(RoomId::parse(raw).as_ref(), Ok(room));
    assert_eq!(room.to_string(), raw);
}

/// Trimmed, 1-32 characters, no control characters; it parses again to itself and its key
/// is the one a stored name gets.
pub fn username(name: &Username) {
    let display = name.as_str();
    let chars = display.chars().count();
    assert!((1..=32).contains(&chars), "username of {chars} characters");
    assert!(
        !display.chars().any(char::is_control),
        "control character in {display:?}"
    );
    assert_eq!(
        display.trim_matches(char::is_whitespace),
        display,
        "untrimmed username"
    );
    assert_eq!(Username::parse(display).as_ref(), Ok(name));
    assert_eq!(Username::from_stored(display.to_owned()).key(), name.key());
}

/// Not blank, at most `max_bytes` bytes.
pub fn message(message: &MessageText, max_bytes: usize) {
    let raw = message.as_str();
    assert!(raw.len() <= max_bytes, "message of {} bytes", raw.len());
    assert!(
        !raw.trim_matches(char::is_whitespace).is_empty(),
        "blank message"
    );
    assert_eq!(
        MessageText::parse(raw.to_owned(), max_bytes).as_ref(),
        Ok(message)
    );
}

/// 1-128 characters.
pub fn secret(secret: &RoomSecret) {
    let chars = secret.expose().chars().count();
    assert!((1..=128).contains(&chars), "secret of {chars} characters");
}

/// 1-64 of `A-Z a-z 0-9 . _ : -`, and it parses again to itself.
pub fn client_msg_id(key: &ClientMsgId) {
    let raw = key.as_str();
    assert!((1..=64).contains(&raw.len()));
    assert!(
        raw.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')),
        "idempotency key {raw:?}"
    );
    assert_eq!(ClientMsgId::parse(raw).as_ref(), Ok(key));
}

/// `parse(id.to_string()) == id`, and the text is `<digits>-<digits>`.
pub fn event_id(id: EventId) {
    let text = id.to_string();
    assert_eq!(
        text.parse::<EventId>(),
        Ok(id),
        "{text} does not round-trip"
    );
    let (ms, seq) = text.split_once('-').expect("an event id has a dash");
    assert_eq!(ms.parse::<u64>(), Ok(id.ms));
    assert_eq!(seq.parse::<u64>(), Ok(id.seq));
}
