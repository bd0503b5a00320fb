//! Fuzz target: the request validation every transport shares. The input is split at `\n`
//! into fields, and each field goes through one parser:
//!
//! 1. `RoomId`
//! 2. `Username`
//! 3. `MessageText` (with 4096 and 8 bytes)
//! 4. `RoomSecret`
//! 5. `ClientMsgId`
//! 6. `EventId`, and `parse(id.to_string()) == id` for an id made of the field's bytes
//! 7. and 8. two `X-Forwarded-For` header values for `client_ip`
//! 9. the number of trusted proxy hops
//! 10. an `Authorization` header for `bearer_from`
//!
//! Parsers must never panic, accept only valid values, and refuse with API.md's codes.
//! `client_ip` must return the peer or an address some header entry names, the peer when no
//! proxy is trusted, and the address the one trusted proxy appended, whatever the client
//! wrote before it.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chat_server::domain::{ClientMsgId, EventId, MessageText, RoomId, RoomSecret, Username};
use chat_server::http::extract::bearer_from;
use chat_server::limits::client_ip;
use chat_server_fuzz as check;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == b'\n');
    let mut next = || fields.next().unwrap_or_default();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    match RoomId::parse(&text(next())) {
        Ok(room) => check::room_id(&room),
        Err(err) => check::error(&err, &["invalid_request"]),
    }
    match Username::parse(&text(next())) {
        Ok(name) => check::username(&name),
        Err(err) => check::error(&err, &["invalid_request"]),
    }
    let message = text(next());
    for max_bytes in [4096, 8] {
        match MessageText::parse(message.clone(), max_bytes) {
            Ok(parsed) => check::message(&parsed, max_bytes),
            Err(err) => check::error(&err, &["invalid_request", "payload_too_large"]),
        }
    }
    match RoomSecret::parse(text(next())) {
        Ok(secret) => check::secret(&secret),
        Err(err) => check::error(&err, &["invalid_request"]),
    }
    match ClientMsgId::parse(&text(next())) {
        Ok(key) => check::client_msg_id(&key),
        Err(err) => check::error(&err, &["invalid_request"]),
    }
    let raw_id = next();
    match text(raw_id).parse::<EventId>() {
        Ok(id) => check::event_id(id),
        Err(err) => check::error(&err, &["invalid_request"]),
    }
    let mut word = [0u8; 16];
    for (slot, byte) in word.iter_mut().zip(raw_id.iter().rev()) {
        *slot = *byte;
    }
    let (ms, seq) = word.split_at(8);
    let from_bytes = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or_default());
    check::event_id(EventId::new(from_bytes(ms), from_bytes(seq)));

    let forwarded = [next(), next()];
    let hops = usize::from(next().first().copied().unwrap_or(1) % 4);
    forwarded_for(&forwarded, hops, &word);

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(next()) {
        let scheme_is_bearer = value
            .to_str()
            .ok()
            .and_then(|raw| raw.split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        headers.insert(http::header::AUTHORIZATION, value);
        if bearer_from(&headers).is_some() {
            assert!(scheme_is_bearer, "a token taken from a non-Bearer header");
        }
    }
});

fn forwarded_for(values: &[&[u8]], hops: usize, word: &[u8; 16]) {
    let peer = SocketAddr::from(([10, 0, 0, 9], 5000));
    let mut headers = HeaderMap::new();
    for value in values {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append("x-forwarded-for", value);
        }
    }
    let named: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    let ip = client_ip(&headers, peer, hops);
    assert!(
        ip == peer.ip() || named.contains(&ip),
        "{ip} is neither the peer nor named by X-Forwarded-For"
    );
    if hops == 0 {
        assert_eq!(ip, peer.ip(), "no trusted proxy, yet not the peer");
    }

    // One trusted proxy appends the address it saw: that is the client, whatever came before.
    let appended = if word[0].is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::new(word[1], word[2], word[3], word[4]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*word))
    };
    let mut proxied = headers.clone();
    let mut values: Vec<HeaderValue> = proxied.get_all("x-forwarded-for").iter().cloned().collect();
    // A proxy appends `, <address>` to the header it received, or adds a header of its own.
    let appended_text = appended.to_string();
    match values.pop() {
        Some(last) if word[5].is_multiple_of(2) => {
            let mut joined = last.as_bytes().to_vec();
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(appended_text.as_bytes());
            values.push(HeaderValue::from_bytes(&joined).expect("a valid value, extended"));
        }
        Some(last) => {
            values.push(last);
            values.push(HeaderValue::from_str(&appended_text).expect("an address is a value"));
        }
        None => values.push(HeaderValue::from_str(&appended_text).expect("an address is a value")),
    }
    proxied.remove("x-forwarded-for");
    for value in values {
        proxied.append("x-forwarded-for", value);
    }
    assert_eq!(client_ip(&proxied, peer, 1), appended, "{proxied:?}");
}
