//! The domain values of a chat room, parsed once at the edge ("parse, don't validate").
//!
//! Every rule of API.md's "Names and limits" table lives here and nowhere else: once a handler
//! holds a [`RoomId`], [`Username`], [`MessageText`], [`RoomSecret`] or [`ClientMsgId`], the
//! value is known to be valid. Member tokens are [`MemberToken`]s, whose `Debug` never prints
//! the secret; only their [`TokenHash`] is ever stored or compared.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{
    GeneralCategory, GeneralCategoryGroup, UnicodeEmoji, UnicodeGeneralCategory,
};

use crate::error::ApiError;

/// A room's id: 1-64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let valid = (1..=Self::MAX_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ApiError::invalid(
                "roomId must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A member's name as shown (`display`, trimmed) and the key members are stored and looked up
/// by (`key`: NFKC, lowercased), so `Alice`, `alice` and `Ａｌｉｃｅ` are one member.
///
/// Uniqueness goes further than the key: two names are one name when any of their
/// [`identity_keys`](Username::identity_keys) are equal, which adds UTS #39 confusable
/// skeletons, so `аlice` (Cyrillic `а`) cannot pass for `alice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username {
    display: String,
    key: String,
}

impl Username {
    pub const MAX_CHARS: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        // `char::is_whitespace` is exactly Unicode's White_Space property.
        let display = raw.trim_matches(char::is_whitespace);
        let chars = display.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(ApiError::invalid(
                "username must be 1-32 characters after trimming white space",
            ));
        }
        if let Some(hidden) = hidden_char(display) {
            return Err(ApiError::invalid(format!(
                "username must not contain control, format or bidi-control characters \
                 (it has U+{:04X})",
                u32::from(hidden)
            )));
        }
        if display.chars().all(is_invisible) {
            return Err(ApiError::invalid(
                "username must have a visible character, not only white space, combining \
                 marks or fillers",
            ));
        }
        Ok(Self {
            display: display.to_owned(),
            key: Self::key_of(display),
        })
    }

    /// Rebuilds a username read back from the store, where it was validated on the way in.
    pub fn from_stored(display: String) -> Self {
        let key = Self::key_of(&display);
        Self { display, key }
    }

    fn key_of(display: &str) -> String {
        display.nfkc().collect::<String>().to_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The member key: a room stores and finds its members by it (leave, presence, kicks).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Every key this name holds in its room, [`key`](Username::key) first, without repeats:
    /// the key and the UTS #39 skeletons of the name and of the key. A new name is taken when
    /// any of its identity keys is held by a member.
    ///
    /// Both skeletons are needed because skeletons do not fold case and lowercasing can hide
    /// a look-alike: `Аlice` (Cyrillic capital) is caught by the skeleton of its key
    /// (`alice`), `Ηello` (Greek capital eta) by the skeleton of the name itself (`Hello`,
    /// also held by `Hello`). Skeletons keep `ß` apart from `ss`, so `straße` and `strasse`
    /// stay two names, as NFKC and lowercasing keep them.
    pub fn identity_keys(&self) -> Vec<String> {
        let mut keys = vec![self.key.clone()];
        for source in [&self.display, &self.key] {
            let skeleton: String = unicode_security::skeleton(source).collect();
            if !keys.contains(&skeleton) {
                keys.push(skeleton);
            }
        }
        keys
    }

    pub fn into_string(self) -> String {
        self.display
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// The first character a username may not contain: controls (Cc), format characters (Cf:
/// zero-width characters, bidi controls such as U+202E, which can make `\u{202E}nimda` show
/// as "admin") and line or paragraph separators (Zl, Zp). Emoji need two kinds of format
/// character, which pass exactly where emoji sequences put them: U+200D ZERO WIDTH JOINER
/// between two emoji (man, ZWJ, woman, ZWJ, girl is a family), and tag characters after
/// U+1F3F4 WAVING BLACK FLAG ending in U+E007F CANCEL TAG (the flags of England, Scotland
/// and Wales).
fn hidden_char(name: &str) -> Option<char> {
    let chars: Vec<char> = name.chars().collect();
    (0..chars.len()).find_map(|at| {
        let c = chars[at];
        let before = at.checked_sub(1).map(|at| chars[at]);
        let after = chars.get(at + 1).copied();
        let allowed = match c {
            ZWJ => {
                before.is_some_and(|b| b == EMOJI_PRESENTATION || is_emoji(b))
                    && after.is_some_and(is_emoji)
            }
            TAG_SPEC_FIRST..=TAG_SPEC_LAST => {
                before.is_some_and(|b| b == BLACK_FLAG || is_tag_spec(b))
                    && after.is_some_and(|a| a == CANCEL_TAG || is_tag_spec(a))
            }
            CANCEL_TAG => before.is_some_and(is_tag_spec),
            _ => !is_hidden(c),
        };
        (!allowed).then_some(c)
    })
}

const ZWJ: char = '\u{200D}';
const EMOJI_PRESENTATION: char = '\u{FE0F}';
const BLACK_FLAG: char = '\u{1F3F4}';
const TAG_SPEC_FIRST: char = '\u{E0020}';
const TAG_SPEC_LAST: char = '\u{E007E}';
const CANCEL_TAG: char = '\u{E007F}';

/// Control, format, line and paragraph separator characters: refused in a name except where
/// `hidden_char` allows an emoji sequence's ZWJ or tags.
pub(crate) fn is_hidden(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Characters that show nothing yet are letters or symbols, so neither white space nor marks:
/// the Hangul fillers and the blank braille pattern.
const FILLERS: [char; 5] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}'];

/// An emoji that a ZWJ may join. The ASCII characters with Emoji=Yes (digits, `#`, `*`) only
/// start keycaps, which are never joined, so `1\u{200D}2` stays refused.
fn is_emoji(c: char) -> bool {
    !c.is_ascii() && c.is_emoji_char()
}

fn is_tag_spec(c: char) -> bool {
    (TAG_SPEC_FIRST..=TAG_SPEC_LAST).contains(&c)
}

/// Whether a character shows nothing on its own: white space, combining marks (variation
/// selectors among them), fillers, and Default_Ignorable_Code_Point characters, which UTS #39
/// drops from skeletons for that reason (the skeleton of one such character is empty). A
/// name made only of these is refused.
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.general_category_group() == GeneralCategoryGroup::Mark
        || FILLERS.contains(&c)
        || unicode_security::skeleton(c.encode_utf8(&mut [0; 4]))
            .next()
            .is_none()
}

/// A chat message's text: not blank, at most `MAX_MESSAGE_BYTES` bytes of UTF-8. It is stored
/// exactly as sent (no trimming), so what a client posts is what every member sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: String, max_bytes: usize) -> Result<Self, ApiError> {
        if raw.trim_matches(char::is_whitespace).is_empty() {
            return Err(ApiError::invalid("message must not be empty"));
        }
        if raw.len() > max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "message must be at most {max_bytes} bytes of UTF-8"
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A room's optional secret, 1-128 characters. `Debug` hides it.
#[derive(Clone)]
pub struct RoomSecret(String);

impl RoomSecret {
    pub fn parse(raw: String) -> Result<Self, ApiError> {
        let chars = raw.chars().count();
        if chars == 0 || chars > 128 {
            return Err(ApiError::invalid("secret must be 1-128 characters"));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoomSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomSecret(<redacted>)")
    }
}

/// A client-chosen idempotency key for a chat message: 1-64 of `A-Z a-z 0-9 . _ : -`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let valid = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ApiError::invalid(
                "idempotency key must be 1-64 characters of A-Z a-z 0-9 . _ : -",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A member token as the client holds it: 256 random bits, hex encoded. The server keeps only
/// its [`TokenHash`]; `Debug` and `Display` are deliberately absent or redacted.
#[derive(Clone)]
pub struct MemberToken(String);

impl MemberToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Wraps a token presented by a client. Anything may be presented; a wrong one simply
    /// hashes to a value no member has.
    pub fn presented(raw: &str) -> Self {
        Self(raw.to_owned())
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(self.0.as_bytes())).into())
    }

    /// The token itself, for the one reply that hands it to its member.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MemberToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberToken(<redacted>)")
    }
}

/// A stream ticket: a short-lived, single-use stand-in for a member token in an SSE URL, so
/// the token itself stays out of request logs that record full URLs. The same kind of secret
/// as a member token (256 random bits, only its hash stored), so it reuses that type's
/// generation and hashing rather than repeating them.
#[derive(Clone, Debug)]
pub struct StreamTicket(MemberToken);

impl StreamTicket {
    pub fn generate() -> Self {
        Self(MemberToken::generate())
    }

    /// Wraps a ticket presented by a client; a wrong one hashes to a value no ticket has.
    pub fn presented(raw: &str) -> Self {
        Self(MemberToken::presented(raw))
    }

    pub fn hash(&self) -> TokenHash {
        self.0.hash()
    }

    /// The ticket itself, for the one reply that hands it out.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// SHA-256 of a member token, hex encoded: what the store keeps and looks tokens up by. A
/// fast hash is right here because tokens carry 256 bits of entropy (no dictionary to
/// attack), unlike room secrets, which people choose and which get argon2.
///
/// Shared, not copied: a member's hash is held by its record, the token index and each of its
/// connections.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(Arc<str>);

impl TokenHash {
    pub fn from_stored(hex: String) -> Self {
        Self(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so the time taken does not tell how much of a hash matched.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// An event id, `<milliseconds>-<sequence>` as Redis stream ids are; ordered part by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ApiError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || ApiError::invalid("event ids look like 1732560000000-0");
        let (ms, seq) = raw.split_once('-').ok_or_else(bad)?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Milliseconds since the Unix epoch on this machine's clock, the unit of event ids.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Why a member left its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    Left,
    Timeout,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Timeout => "timeout",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "left" => Some(Self::Left),
            "timeout" => Some(Self::Timeout),
            _ => None,
        }
    }
}

/// What happened in a room: one entry of its ordered log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    RoomCreated {
        username: String,
    },
    MemberAdded {
        username: String,
    },
    MemberRemoved {
        username: String,
        reason: LeaveReason,
    },
    Chat {
        username: String,
        message: String,
    },
}

impl EventKind {
    /// The event's name on every transport, as the original socket.io server named it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RoomCreated { .. } => "create:room:success",
            EventKind::MemberAdded { .. } => "add:member:success",
            EventKind::MemberRemoved { .. } => "remove:member:success",
            EventKind::Chat { .. } => "create:chat:success",
        }
    }

    pub fn username(&self) -> &str {
        match self {
            EventKind::RoomCreated { username }
            | EventKind::MemberAdded { username }
            | EventKind::MemberRemoved { username, .. }
            | EventKind::Chat { username, .. } => username,
        }
    }
}

/// One event of a room's log, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomEvent {
    pub id: EventId,
    /// The id of the event before this one in the room's log (`0-0` for the first), so a
    /// reader can tell a gap in what it received from a quiet room.
    pub prev: EventId,
    pub room: RoomId,
    pub kind: EventKind,
}

/// The wire form of a chat message, as history, the post reply and the `create:chat` ack
/// show it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The event id of the message.
    #[schema(value_type = String, example = "1732560000000-0")]
    pub id: EventId,
    pub room_id: String,
    pub username: String,
    pub message: String,
    /// When the message was stored: RFC 3339 UTC with milliseconds.
    #[schema(example = "2026-11-25T21:00:00.000Z")]
    pub ts: String,
}

impl RoomEvent {
    /// The chat message this event carries, if it is one.
    pub fn as_chat(&self) -> Option<ChatMessage> {
        match &self.kind {
            EventKind::Chat { username, message } => Some(ChatMessage {
                id: self.id,
                room_id: self.room.to_string(),
                username: username.clone(),
                message: message.clone(),
                ts: timestamp(self.id),
            }),
            _ => None,
        }
    }

    /// The event's `data` object, identical on every transport.
    pub fn data(&self) -> EventData<'_> {
        let (message, reason, ts) = match &self.kind {
            EventKind::RoomCreated { .. } | EventKind::MemberAdded { .. } => (None, None, None),
            EventKind::MemberRemoved { reason, .. } => (None, Some(reason.as_str()), None),
            EventKind::Chat { message, .. } => {
                (Some(message.as_str()), None, Some(timestamp(self.id)))
            }
        };
        EventData {
            room_id: self.room.as_str(),
            username: self.kind.username(),
            message,
            reason,
            ts,
        }
    }
}

/// The `data` of a room event: `{roomId, username}` plus `message` and `ts` for chat, `reason`
/// for removals.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData<'a> {
    pub room_id: &'a str,
    pub username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

/// The `ts` of an event: the millisecond part of its id, which is when the log stored it, so
/// ids and timestamps can never disagree.
pub fn timestamp(id: EventId) -> String {
    let millis = i64::try_from(id.ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_collide_by_nfkc_lowercase() {
        let a = Username::parse("Alice").unwrap();
        let b = Username::parse("  alice\u{3000}").unwrap();
        let c = Username::parse("Ａｌｉｃｅ").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), c.key());
        assert_eq!(b.as_str(), "alice");
    }

    #[test]
    fn username_limits() {
        assert!(Username::parse("   ").is_err());
        assert!(Username::parse(&"é".repeat(32)).is_ok());
        assert!(Username::parse(&"é".repeat(33)).is_err());
        assert!(Username::parse("a\u{7}b").is_err());
    }

    #[test]
    fn usernames_may_be_any_script_or_emoji_but_never_hidden_characters() {
        let accepted = [
            "alice",
            "Zoë",
            "Zoe\u{308}",
            "李雷",
            "José María",
            "Ελένη",
            "محمد",
            "שרה",
            "दीपिका",
            "🙂",
            "👍🏽",
            "👨\u{200D}👩\u{200D}👧",
            "🏳\u{FE0F}\u{200D}🌈",
            "🧑\u{1F3FD}\u{200D}💻",
            "1\u{FE0F}\u{20E3}",
            "🇫🇷",
            "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
            "e\u{301}",
            "\u{3164}a",
        ];
        for name in accepted {
            assert!(Username::parse(name).is_ok(), "{name:?} must be accepted");
        }
        let refused = [
            // Format characters: zero-width, bidi controls, invisible operators, BOM.
            "a\u{200B}lice",
            "a\u{200C}lice",
            "a\u{200D}lice",
            "\u{202E}nimda",
            "\u{2066}alice\u{2069}",
            "alice\u{200E}",
            "ali\u{AD}ce",
            "a\u{2062}b",
            "\u{FEFF}alice",
            "\u{200B}",
            // Line and paragraph separators.
            "a\u{2028}b",
            "a\u{2029}b",
            // A ZWJ or tags outside the emoji sequences that need them.
            "🙂\u{200D}",
            "\u{200D}🙂",
            "1\u{200D}2",
            "alice\u{E0067}\u{E007F}",
            "🏴\u{E0067}\u{E0062}",
            "🏴\u{E007F}",
            // Only invisible characters.
            "\u{3164}",
            "\u{115F}\u{1160}",
            "\u{FFA0}",
            "\u{2800}",
            "\u{301}\u{301}",
            "\u{20E3}",
            "\u{FE0F}",
            "\u{34F}",
            "\u{3164} \u{3164}",
        ];
        for name in refused {
            let refusal = Username::parse(name);
            assert!(
                matches!(refusal, Err(ApiError::InvalidRequest(_))),
                "{name:?} must be refused as invalid, got {refusal:?}"
            );
        }
    }

    /// Whether two valid names are one name in a room: any identity key in common.
    fn same_name(a: &str, b: &str) -> bool {
        let a = Username::parse(a).unwrap().identity_keys();
        let b = Username::parse(b).unwrap().identity_keys();
        a.iter().any(|key| b.contains(key))
    }

    #[test]
    fn look_alike_usernames_are_one_name() {
        for (a, b) in [
            ("alice", "alice"),
            ("alice", "ALICE"),
            ("alice", "Ａｌｉｃｅ"),
            ("alice", "\u{430}lice"),
            ("alice", "\u{410}lice"),
            ("Alice", "\u{410}lice"),
            ("ALICE", "\u{430}LICE"),
            ("Hello", "\u{397}ello"),
            ("paypal", "p\u{430}yp\u{430}l"),
            ("Zoë", "Zoe\u{308}"),
            ("l1l", "Il1"),
        ] {
            assert!(same_name(a, b), "{a:?} and {b:?} must be one name");
        }
        for (a, b) in [
            ("straße", "strasse"),
            ("alice", "alicea"),
            ("alice", "bob"),
            ("李雷", "李"),
            ("👨\u{200D}👩\u{200D}👧", "👨"),
        ] {
            assert!(!same_name(a, b), "{a:?} and {b:?} must be two names");
        }
        let alice = Username::parse("Alice").unwrap();
        assert_eq!(
            alice.identity_keys()[0],
            alice.key(),
            "the member key comes first"
        );
    }

    #[test]
    fn event_ids_order_numerically() {
        let a: EventId = "9-5".parse().unwrap();
        let b: EventId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert!("10".parse::<EventId>().is_err());
        assert!("a-1".parse::<EventId>().is_err());
    }

    #[test]
    fn timestamps_have_milliseconds() {
        assert_eq!(
            timestamp(EventId::new(1_732_560_000_123, 0)),
            "2024-11-25T18:40:00.123Z"
        );
    }
}
