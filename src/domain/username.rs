//! Usernames: what a name may be (API.md's rule, extended against look-alikes and hidden
//! characters) and when two names are one name in a room. The checks use the Unicode
//! properties (`unicode-properties`) and UTS #39 confusable skeletons (`unicode-security`)
//! instead of tables of our own.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{
    GeneralCategory, GeneralCategoryGroup, UnicodeEmoji, UnicodeGeneralCategory,
};

use crate::error::ApiError;

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
}
