//! Fuzz target: arbitrary WebSocket text frames through the client-event decoder
//! (`chat_server::protocol::decode`), the one function every client frame passes.
//!
//! It must never panic; a decoded event must hold only valid values; a refusal must be
//! `invalid_request` or `payload_too_large` (the only codes a malformed frame can earn), or
//! `not_found` for an edit or a deletion whose `id` is no event id (it names no message).

#![no_main]

use chat_server::protocol::{ClientEvent, EventName, decode};
use chat_server_fuzz as check;
use libfuzzer_sys::fuzz_target;

/// API.md's default `MAX_MESSAGE_BYTES`, and a small limit so the fuzzer reaches the
/// too-large branch with short inputs.
const LIMITS: [usize; 2] = [4096, 8];

fuzz_target!(|data: &[u8]| {
    // A text frame is UTF-8: the WebSocket layer refuses anything else before decoding.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for max_message_bytes in LIMITS {
        let decoded = decode(text, max_message_bytes);
        match &decoded.event {
            Ok(event) => {
                assert_eq!(
                    event.name(),
                    decoded.name,
                    "the name and the event disagree"
                );
                match event {
                    ClientEvent::CreateRoom(join) | ClientEvent::AddMember(join) => {
                        check::room_id(&join.room);
                        // Absent only for a signed-in join, whose name is the token's.
                        if let Some(name) = &join.username {
                            check::username(name);
                        }
                        if let Some(secret) = &join.secret {
                            check::secret(secret);
                        }
                    }
                    ClientEvent::CreateChat(chat) => {
                        check::room_id(&chat.room);
                        check::message(&chat.message, max_message_bytes);
                        if let Some(key) = &chat.client_msg_id {
                            check::client_msg_id(key);
                        }
                        if let Some(name) = &chat.username {
                            check::username(name);
                        }
                    }
                    ClientEvent::UpdateChat(edit) => {
                        check::room_id(&edit.room);
                        check::event_id(edit.id);
                        check::message(&edit.message, max_message_bytes);
                    }
                    ClientEvent::DeleteChat(delete) => {
                        check::room_id(&delete.room);
                        check::event_id(delete.id);
                    }
                    ClientEvent::RemoveMember(remove) => {
                        check::room_id(&remove.room);
                        check::username(&remove.username);
                    }
                    ClientEvent::Resume(resume) => {
                        check::room_id(&resume.room);
                        if let Some(id) = resume.last_event_id {
                            check::event_id(id);
                        }
                    }
                    ClientEvent::Typing(typing) => check::room_id(&typing.room),
                }
            }
            Err(err) => {
                let expected: &[&str] = match decoded.name {
                    EventName::CreateChat => &["invalid_request", "payload_too_large"],
                    EventName::UpdateChat => &["invalid_request", "payload_too_large", "not_found"],
                    EventName::DeleteChat => &["invalid_request", "not_found"],
                    _ => &["invalid_request"],
                };
                check::error(err, expected);
            }
        }
        if decoded.name == EventName::Malformed {
            assert!(decoded.event.is_err(), "a malformed frame was decoded");
        }
        // A ref is only ever taken from a JSON object (the decoder skips unknown fields
        // without checking their escapes, so the whole text need not parse as a `Value`).
        if decoded.reference.is_some() {
            assert!(
                text.trim_start_matches([' ', '\t', '\n', '\r'])
                    .starts_with('{'),
                "a ref from a frame that is not an object"
            );
        }
    }
});
