//! The in-memory store: one process, nothing survives a restart. Used when `REDIS_URL` is
//! unset, for trying the server and for tests.
//!
//! All rooms sit behind one `std::sync::Mutex`: every operation is a short, non-async critical
//! section (no `.await` inside), which is what makes each one atomic exactly as the Redis
//! scripts are. Ids follow Redis's stream rule (`ms-seq`, never going back even if the clock
//! does) so both stores hand out ids of the same shape and order.
//!
//! The sweep looks only at rooms that have something due: an ordered expiry index (room →
//! the earliest time it may need work: a lease, an idempotency key, a ticket, an empty room's
//! expiry) is kept beside the rooms, so a sweep costs the due rooms, not all of them.
//!
//! Appended events reach the hub through [`LocalFeed`], inside the critical section that
//! appended them; so do the ephemeral events (presence, typing) a critical section decides
//! on. One process holds every connection here: a member's first hold is its first anywhere,
//! and its release its last.
//!
//! Here: [`MemoryStore`] and its [`RoomLog`] and [`Holds`] implementations; `room`: one
//! room's data and changes; `expiry`: the expiry index; `feed`: [`LocalFeed`].

mod expiry;
mod feed;
mod room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use self::expiry::ExpiryIndex;
pub use self::feed::LocalFeed;
use self::room::{KeptKey, Revision, Room};
use super::{
    Admin, Authorized, CreateOutcome, HistoryPage, Holds, JoinOutcome, LogRead, MemberInfo,
    NewMember, NewMessages, PostOutcome, RemoveOutcome, Remover, Revised, RoomAccess, RoomLog,
    RoomSummary, RoomsPage, StoreFuture, StoreSettings,
};
use crate::domain::{
    ChatMessage, Ephemeral, EphemeralKind, EventId, EventKind, LeaveReason, MessageText, RoomEvent,
    RoomId, TYPING_EVERY, TokenHash, Username, now_ms,
};

pub struct MemoryStore {
    settings: StoreSettings,
    rooms: Mutex<Rooms>,
    /// Events are handed to it inside the critical section that appended them, so the hub
    /// sees each room's events in log order.
    feed: Arc<LocalFeed>,
}

/// Everything behind the store's one lock.
#[derive(Default)]
struct Rooms {
    map: HashMap<RoomId, Room>,
    expiry: ExpiryIndex,
}

impl MemoryStore {
    /// A store that hands the events it appends to `feed`.
    pub fn new(settings: StoreSettings, feed: Arc<LocalFeed>) -> Self {
        Self {
            settings,
            rooms: Mutex::new(Rooms::default()),
            feed,
        }
    }

    /// Runs one atomic operation; the events it appends go to the feed before the lock is
    /// released, so the hub receives each room's events in log order.
    fn with_rooms<T>(&self, f: impl FnOnce(&mut Rooms, u64, &mut Vec<RoomEvent>) -> T) -> T {
        // A poisoned lock means a panic inside one of the short sections below, all of which
        // leave the maps consistent before anything that could panic; carry on with the data.
        let mut rooms = self
            .rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut appended = Vec::new();
        let answer = f(&mut rooms, now_ms(), &mut appended);
        for event in appended.iter().filter(|event| event.kind.is_logged()) {
            super::count_appended(event.kind.name(), 1);
        }
        self.feed.deliver(appended);
        answer
    }

    /// [`MemoryStore::with_rooms`] for an operation that publishes ephemeral events (and
    /// appends none): they reach the feed inside the critical section too.
    fn with_rooms_telling<T>(
        &self,
        f: impl FnOnce(&mut Rooms, u64, &mut Vec<Ephemeral>) -> T,
    ) -> T {
        self.with_rooms(|rooms, now, _| {
            let mut told = Vec::new();
            let answer = f(rooms, now, &mut told);
            for ephemeral in &told {
                super::count_published(ephemeral.kind.name(), 1);
            }
            self.feed.deliver_ephemeral(told);
            answer
        })
    }

    fn lease_deadline(&self, now: u64) -> u64 {
        now + self.settings.member_ttl_ms
    }

    fn room_ttl_ms(&self) -> u64 {
        self.settings.room_ttl_secs.saturating_mul(1000)
    }

    /// Whether an empty room has outlived `ROOM_TTL_SECS` (and so counts as gone).
    fn is_expired(&self, room: &Room, now: u64) -> bool {
        let ttl_ms = self.room_ttl_ms();
        match room.empty_since_ms {
            Some(since) if ttl_ms > 0 => now >= since.saturating_add(ttl_ms),
            _ => false,
        }
    }

    /// The room, unless it does not exist or its time is up (then it is deleted now).
    fn live_room<'m>(
        &self,
        rooms: &'m mut HashMap<RoomId, Room>,
        id: &RoomId,
        now: u64,
    ) -> Option<&'m mut Room> {
        if rooms.get(id).is_some_and(|room| self.is_expired(room, now)) {
            rooms.remove(id);
        }
        rooms.get_mut(id)
    }

    /// The room, if `token_hash` is a current member's token there (whose lease it refreshes).
    fn member_room<'m>(
        &self,
        rooms: &'m mut HashMap<RoomId, Room>,
        id: &RoomId,
        token_hash: &TokenHash,
        now: u64,
    ) -> Option<&'m mut Room> {
        let room = self.live_room(rooms, id, now)?;
        room.touch(token_hash, self.lease_deadline(now))?;
        Some(room)
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl RoomLog for MemoryStore {
    fn create_room(
        &self,
        member: NewMember,
        secret_hash: Option<String>,
    ) -> StoreFuture<'_, CreateOutcome> {
        let identity_keys = member.username.identity_keys();
        let outcome = self.with_rooms(|rooms, now, appended| {
            if self.live_room(&mut rooms.map, &member.room, now).is_some() {
                return CreateOutcome::RoomExists;
            }
            let mut room = Room::new(secret_hash, member.username.key().to_owned());
            room.add_member(&member, identity_keys, self.lease_deadline(now));
            let username = member.username.as_str().to_owned();
            let limit = self.settings.history_limit;
            room.append(
                &member.room,
                EventKind::RoomCreated {
                    username: username.clone(),
                },
                now,
                limit,
                appended,
            );
            let joined = room.append(
                &member.room,
                EventKind::MemberAdded { username },
                now,
                limit,
                appended,
            );
            rooms.map.insert(member.room.clone(), room);
            rooms
                .expiry
                .schedule(&member.room, self.lease_deadline(now));
            CreateOutcome::Created(joined.id)
        });
        ready(outcome)
    }

    fn room_access<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, RoomAccess> {
        let access =
            self.with_rooms(
                |rooms, now, _| match self.live_room(&mut rooms.map, room, now) {
                    None => RoomAccess::NotFound,
                    Some(Room {
                        secret_hash: Some(hash),
                        ..
                    }) => RoomAccess::Secret(hash.clone()),
                    Some(_) => RoomAccess::Open,
                },
            );
        ready(access)
    }

    fn join(
        &self,
        member: NewMember,
        expected_secret_hash: Option<String>,
    ) -> StoreFuture<'_, JoinOutcome> {
        // Skeletons are computed before taking the lock that every room shares.
        let identity_keys = member.username.identity_keys();
        let outcome = self.with_rooms(|rooms, now, appended| {
            let deadline = self.lease_deadline(now);
            let limit = self.settings.history_limit;
            let Some(room) = self.live_room(&mut rooms.map, &member.room, now) else {
                return JoinOutcome::RoomNotFound;
            };
            if room.secret_hash != expected_secret_hash {
                return JoinOutcome::AccessChanged;
            }
            if room.name_banned(&identity_keys) {
                return JoinOutcome::Banned;
            }
            if room.name_taken(&identity_keys) {
                return JoinOutcome::UsernameTaken;
            }
            if room.members.len() >= self.settings.max_members_per_room {
                return JoinOutcome::RoomFull;
            }
            room.add_member(&member, identity_keys, deadline);
            let username = member.username.as_str().to_owned();
            let event = room.append(
                &member.room,
                EventKind::MemberAdded { username },
                now,
                limit,
                appended,
            );
            rooms.expiry.schedule(&member.room, deadline);
            JoinOutcome::Joined(event.id)
        });
        ready(outcome)
    }

    fn remove_member<'a>(
        &'a self,
        room_id: &'a RoomId,
        target: &'a Username,
        by: Remover<'a>,
        ban: bool,
    ) -> StoreFuture<'a, RemoveOutcome> {
        // Skeletons are computed before taking the lock that every room shares.
        let identity_keys = ban.then(|| target.identity_keys());
        let outcome = self.with_rooms(|rooms, now, appended| {
            let limit = self.settings.history_limit;
            let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                return match by {
                    Remover::ServerApi => RemoveOutcome::RoomNotFound,
                    Remover::Member(_) => RemoveOutcome::Unauthorized,
                };
            };
            let reason = match by {
                Remover::ServerApi => LeaveReason::removal(ban),
                Remover::Member(token_hash) => {
                    let Some(remover) = room.tokens.get(token_hash) else {
                        return RemoveOutcome::Unauthorized;
                    };
                    if remover == target.key() {
                        if ban {
                            return RemoveOutcome::OwnBan;
                        }
                        LeaveReason::Left
                    } else if room.is_owner(remover) {
                        LeaveReason::removal(ban)
                    } else {
                        return RemoveOutcome::Forbidden;
                    }
                }
            };
            // Only the server API bans a name no member holds.
            let server_ban = ban && by == Remover::ServerApi;
            if !server_ban && !room.members.contains_key(target.key()) {
                return RemoveOutcome::NotMember;
            }
            if let Some(keys) = identity_keys {
                room.bans.extend(keys);
            }
            let Some(record) = room.remove_member(target.key(), now) else {
                return RemoveOutcome::BannedOnly;
            };
            let kind = EventKind::MemberRemoved {
                username: record.display,
                reason,
            };
            let event = room.append(room_id, kind, now, limit, appended);
            if let Some(due) = room.next_due(self.room_ttl_ms()) {
                rooms.expiry.schedule(room_id, due);
            }
            if reason == LeaveReason::Left {
                RemoveOutcome::Left(event.id)
            } else {
                RemoveOutcome::Removed(event.id)
            }
        });
        ready(outcome)
    }

    fn post(&self, batch: NewMessages) -> StoreFuture<'_, PostOutcome> {
        let outcome = self.with_rooms(|rooms, now, appended| {
            let deadline = self.lease_deadline(now);
            let limit = self.settings.history_limit;
            let idempotency_ttl_ms = self.settings.idempotency_ttl_secs.saturating_mul(1000);
            let Some(room) = self.live_room(&mut rooms.map, &batch.room, now) else {
                return PostOutcome::Unauthorized;
            };
            let Some(record) = room.touch(&batch.token_hash, deadline) else {
                return PostOutcome::Unauthorized;
            };
            let username = record.display.clone();
            let mut posted = Vec::with_capacity(batch.messages.len());
            let mut keys_expire = None;
            for message in batch.messages {
                let idempotency = message
                    .idempotency_key
                    .as_ref()
                    .map(|key| (batch.token_hash.clone(), key.as_str().to_owned()));
                if let Some(slot) = &idempotency
                    && let Some(kept) = room.idempotency.get(slot)
                    && kept.expires_ms > now
                {
                    posted.push(room.replay(&batch.room, kept, &username, &message.text));
                    continue;
                }
                let digest = idempotency
                    .is_some()
                    .then(|| super::text_digest(message.text.as_str()));
                let event = room.append(
                    &batch.room,
                    EventKind::Chat {
                        username: username.clone(),
                        message: message.text.into_string(),
                    },
                    now,
                    limit,
                    appended,
                );
                if let (Some(slot), Some(digest)) = (idempotency, digest) {
                    let kept = KeptKey {
                        id: event.id,
                        digest,
                        expires_ms: now.saturating_add(idempotency_ttl_ms),
                    };
                    room.idempotency.insert(slot, kept);
                    keys_expire = Some(now.saturating_add(idempotency_ttl_ms));
                }
                posted.push(Ok(event));
            }
            if let Some(at) = keys_expire {
                rooms.expiry.schedule(&batch.room, at);
            }
            PostOutcome::Posted(posted)
        });
        ready(outcome)
    }

    fn edit_message<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
        text: MessageText,
    ) -> StoreFuture<'a, Revised<ChatMessage>> {
        let outcome = self.with_rooms(|rooms, now, appended| {
            let Some(room) = self.member_room(&mut rooms.map, room_id, token_hash, now) else {
                return Revised::Unauthorized;
            };
            let Some(mut message) = room.revisable(target) else {
                return Revised::NotFound;
            };
            if !room.is_author(token_hash, &message) {
                return Revised::Forbidden;
            }
            if message.message == text.as_str() {
                return Revised::Done(message);
            }
            let kind = EventKind::ChatEdited {
                target,
                username: message.username.clone(),
                message: text.as_str().to_owned(),
            };
            let limit = self.settings.history_limit;
            let edit = room.append(room_id, kind, now, limit, appended);
            message.message = text.into_string();
            message.edited_ts = Some(crate::domain::timestamp(edit.id));
            let revision = Revision {
                id: edit.id,
                text: Some(message.message.clone()),
            };
            room.revise(target, revision);
            Revised::Done(message)
        });
        ready(outcome)
    }

    fn delete_message<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
    ) -> StoreFuture<'a, Revised<EventId>> {
        let outcome = self.with_rooms(|rooms, now, appended| {
            let Some(room) = self.member_room(&mut rooms.map, room_id, token_hash, now) else {
                return Revised::Unauthorized;
            };
            let Some(message) = room.revisable(target) else {
                return Revised::NotFound;
            };
            let owns = room
                .tokens
                .get(token_hash)
                .is_some_and(|key| room.is_owner(key));
            if !room.is_author(token_hash, &message) && !owns {
                return Revised::Forbidden;
            }
            let kind = EventKind::ChatDeleted {
                target,
                username: message.username,
            };
            let limit = self.settings.history_limit;
            let deletion = room.append(room_id, kind, now, limit, appended);
            let revision = Revision {
                id: deletion.id,
                text: None,
            };
            room.revise(target, revision);
            Revised::Done(deletion.id)
        });
        ready(outcome)
    }

    fn authenticate<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>> {
        let outcome = self.with_rooms(|rooms, now, _| {
            let deadline = self.lease_deadline(now);
            match self
                .live_room(&mut rooms.map, room_id, now)
                .and_then(|room| room.touch(token_hash, deadline))
            {
                Some(record) => Authorized::Member(Username::from_stored(record.display.clone())),
                None => Authorized::Unauthorized,
            }
        });
        ready(outcome)
    }

    fn issue_ticket<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
        ticket_hash: &'a TokenHash,
        ttl_secs: u64,
    ) -> StoreFuture<'a, Authorized<()>> {
        let outcome = self.with_rooms(|rooms, now, _| {
            let Some(room) = self.member_room(&mut rooms.map, room_id, token_hash, now) else {
                return Authorized::Unauthorized;
            };
            let expires = now.saturating_add(ttl_secs.saturating_mul(1000));
            room.tickets
                .insert(ticket_hash.clone(), (token_hash.clone(), expires));
            rooms.expiry.schedule(room_id, expires);
            Authorized::Member(())
        });
        ready(outcome)
    }

    fn redeem_ticket<'a>(
        &'a self,
        room_id: &'a RoomId,
        ticket_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>> {
        let outcome = self.with_rooms(|rooms, now, _| {
            let deadline = self.lease_deadline(now);
            let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                return Authorized::Unauthorized;
            };
            match room.tickets.remove(ticket_hash) {
                Some((token_hash, expires)) if expires > now => {
                    match room.touch(&token_hash, deadline) {
                        Some(record) => {
                            Authorized::Member(Username::from_stored(record.display.clone()))
                        }
                        None => Authorized::Unauthorized,
                    }
                }
                _ => Authorized::Unauthorized,
            }
        });
        ready(outcome)
    }

    fn typing<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<bool>> {
        let outcome = self.with_rooms_telling(|rooms, now, told| {
            let deadline = self.lease_deadline(now);
            let Some(record) = self
                .live_room(&mut rooms.map, room_id, now)
                .and_then(|room| room.touch(token_hash, deadline))
            else {
                return Authorized::Unauthorized;
            };
            if record.typing_until_ms > now {
                return Authorized::Member(false);
            }
            record.typing_until_ms = now.saturating_add(TYPING_EVERY.as_millis() as u64);
            told.push(Ephemeral {
                room: room_id.clone(),
                kind: EphemeralKind::Typing {
                    username: record.display.clone(),
                },
            });
            Authorized::Member(true)
        });
        ready(outcome)
    }

    fn history<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'a, Authorized<HistoryPage>> {
        let outcome = self.with_rooms(|rooms, now, _| {
            let Some(room) = self.member_room(&mut rooms.map, room_id, token_hash, now) else {
                return Authorized::Unauthorized;
            };
            // One more than asked tells whether an earlier page exists.
            let mut newest_first: Vec<ChatMessage> = room
                .log
                .iter()
                .rev()
                .filter(|event| before.is_none_or(|before| event.id < before))
                .filter_map(|event| room.shown(event))
                .take(limit + 1)
                .collect();
            Authorized::Member(page_from_newest_first(&mut newest_first, limit))
        });
        ready(outcome)
    }

    fn members<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Vec<MemberInfo>>> {
        let outcome = self.with_rooms(|rooms, now, _| {
            let Some(room) = self.member_room(&mut rooms.map, room_id, token_hash, now) else {
                return Authorized::Unauthorized;
            };
            let mut members: Vec<MemberInfo> = room
                .members
                .iter()
                .map(|(key, record)| MemberInfo {
                    username: record.display.clone(),
                    online: record.online_until_ms > now,
                    owner: room.is_owner(key),
                })
                .collect();
            members.sort_by(|a, b| a.username.cmp(&b.username));
            Authorized::Member(members)
        });
        ready(outcome)
    }

    fn read_log<'a>(
        &'a self,
        room_id: &'a RoomId,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'a, LogRead> {
        let read = self.with_rooms(|rooms, now, _| {
            let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                return LogRead::after(after, Vec::new(), None);
            };
            let events: Vec<RoomEvent> = room
                .log
                .iter()
                .filter(|event| event.id > after)
                .take(limit)
                .cloned()
                .collect();
            LogRead::after(after, events, room.log.back().map(|newest| newest.id))
        });
        ready(read)
    }

    fn last_event_id<'a>(&'a self, room_id: &'a RoomId) -> StoreFuture<'a, EventId> {
        let last = self.with_rooms(|rooms, now, _| {
            self.live_room(&mut rooms.map, room_id, now)
                .map_or(EventId::ZERO, |room| room.last_id)
        });
        ready(last)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        ready(())
    }
}

impl Holds for MemoryStore {
    fn refresh_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
        self.with_rooms_telling(|rooms, now, told| {
            let lease = self.lease_deadline(now);
            let online_until = now + self.settings.online_ttl_ms;
            for (room_id, keys) in holds {
                let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                    continue;
                };
                for key in keys {
                    if let Some(record) = room.members.get_mut(key) {
                        record.lease_deadline_ms = record.lease_deadline_ms.max(lease);
                        if record.online_until_ms == 0 {
                            told.push(presence(room_id, record.display.clone(), true));
                        }
                        record.online_until_ms = online_until;
                    }
                }
            }
        });
        ready(())
    }

    fn release_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
        self.with_rooms_telling(|rooms, now, told| {
            for (room_id, keys) in holds {
                let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                    continue;
                };
                for key in keys {
                    if let Some(record) = room.members.get_mut(key)
                        && record.online_until_ms != 0
                    {
                        record.online_until_ms = 0;
                        told.push(presence(room_id, record.display.clone(), false));
                    }
                }
            }
        });
        ready(())
    }

    fn sweep(&self) -> StoreFuture<'_, usize> {
        let timed_out = self.with_rooms(|rooms, now, appended| {
            let limit = self.settings.history_limit;
            let mut timed_out = 0;
            for room_id in rooms.expiry.take_due(now) {
                // An empty room whose time is up goes here.
                let Some(room) = self.live_room(&mut rooms.map, &room_id, now) else {
                    continue;
                };
                let lapsed: Vec<String> = room
                    .members
                    .iter()
                    .filter(|(_, record)| record.lease_deadline_ms <= now)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in lapsed {
                    if let Some(record) = room.remove_member(&key, now) {
                        room.append(
                            &room_id,
                            EventKind::MemberRemoved {
                                username: record.display,
                                reason: LeaveReason::Timeout,
                            },
                            now,
                            limit,
                            appended,
                        );
                        timed_out += 1;
                    }
                }
                room.idempotency.retain(|_, kept| kept.expires_ms > now);
                room.tickets.retain(|_, (_, expires)| *expires > now);
                if let Some(due) = room.next_due(self.room_ttl_ms()) {
                    rooms.expiry.schedule(&room_id, due);
                }
            }
            timed_out
        });
        ready(timed_out)
    }
}

impl Admin for MemoryStore {
    fn list_rooms<'a>(
        &'a self,
        after: Option<&'a RoomId>,
        limit: usize,
    ) -> StoreFuture<'a, RoomsPage> {
        let page = self.with_rooms(|rooms, now, _| {
            // A scan of every room: the memory store is one instance's, for trying the server
            // and for tests, where this is small.
            let mut ids: Vec<&RoomId> = rooms
                .map
                .iter()
                .filter(|(id, room)| {
                    after.is_none_or(|after| *id > after) && !self.is_expired(room, now)
                })
                .map(|(id, _)| id)
                .collect();
            ids.sort_unstable();
            let summaries: Vec<RoomSummary> = ids
                .into_iter()
                .take(limit + 1)
                .map(|id| {
                    let room = &rooms.map[id];
                    RoomSummary {
                        room: id.clone(),
                        members: room.members.len(),
                        online: room
                            .members
                            .values()
                            .filter(|record| record.online_until_ms > now)
                            .count(),
                        last_event_id: room.last_id,
                    }
                })
                .collect();
            super::rooms_page(summaries, limit)
        });
        ready(page)
    }

    fn post_as<'a>(
        &'a self,
        room_id: &'a RoomId,
        username: &'a Username,
        text: MessageText,
    ) -> StoreFuture<'a, Option<RoomEvent>> {
        let posted = self.with_rooms(|rooms, now, appended| {
            let limit = self.settings.history_limit;
            let room = self.live_room(&mut rooms.map, room_id, now)?;
            let kind = EventKind::Chat {
                username: username.as_str().to_owned(),
                message: text.into_string(),
            };
            Some(room.append(room_id, kind, now, limit, appended))
        });
        ready(posted)
    }

    fn delete_room<'a>(&'a self, room_id: &'a RoomId) -> StoreFuture<'a, bool> {
        let deleted = self.with_rooms(|rooms, now, appended| {
            if self.live_room(&mut rooms.map, room_id, now).is_none() {
                return false;
            }
            let Some(room) = rooms.map.remove(room_id) else {
                return false;
            };
            // Not appended to any log: it tells this room's subscribers, through the feed,
            // that the room is gone (see `EventKind::RoomDeleted`).
            appended.push(RoomEvent {
                id: room.last_id.next(),
                prev: room.last_id,
                room: room_id.clone(),
                kind: EventKind::RoomDeleted,
            });
            true
        });
        ready(deleted)
    }
}

/// A `presence` event of `username` in `room`.
fn presence(room: &RoomId, username: String, online: bool) -> Ephemeral {
    Ephemeral {
        room: room.clone(),
        kind: EphemeralKind::Presence { username, online },
    }
}

/// Turns up to `limit + 1` chat messages, newest first, into a page: the extra one only says
/// that an earlier page exists.
pub(crate) fn page_from_newest_first(
    newest_first: &mut Vec<ChatMessage>,
    limit: usize,
) -> HistoryPage {
    let has_more = newest_first.len() > limit;
    newest_first.truncate(limit);
    newest_first.reverse();
    let next_before = if has_more {
        newest_first.first().map(|event| event.id)
    } else {
        None
    };
    HistoryPage {
        messages: std::mem::take(newest_first),
        next_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).expect("a valid room id")
    }

    /// A store keeping `history_limit` events per room, with leases of `member_ttl_ms`.
    fn store(history_limit: usize, member_ttl_ms: u64) -> MemoryStore {
        MemoryStore::new(
            StoreSettings {
                history_limit,
                member_ttl_ms,
                room_ttl_secs: 3600,
                idempotency_ttl_secs: 60,
                online_ttl_ms: 1000,
                max_members_per_room: 10,
            },
            Arc::new(LocalFeed::new()),
        )
    }

    /// Creates `room` with alice as its creator; answers her token hash.
    async fn created(store: &MemoryStore, room: &RoomId) -> TokenHash {
        let token_hash = TokenHash::from_stored("a".repeat(64));
        let member = NewMember {
            room: room.clone(),
            username: Username::parse("alice").expect("a valid username"),
            token_hash: token_hash.clone(),
        };
        store
            .create_room(member, None)
            .await
            .expect("the memory store answers");
        token_hash
    }

    #[tokio::test]
    async fn the_sweep_times_out_lapsed_members_and_reschedules_their_room() {
        // Every lease has lapsed by the time the sweep runs.
        let store = store(100, 0);
        let lobby = room("lobby");
        created(&store, &lobby).await;
        assert_eq!(store.sweep().await, Ok(1));
        // Empty now: the room is due again when its emptiness expires, not before.
        let rooms = store.rooms.lock().expect("no panic while holding it");
        let due = rooms
            .expiry
            .scheduled(&lobby)
            .expect("the room is scheduled");
        let since = rooms.map[&lobby].empty_since_ms.expect("the room is empty");
        assert_eq!(due, since + 3_600_000);
    }

    #[tokio::test]
    async fn revisions_leave_with_their_messages() {
        let store = store(3, 60_000);
        let lobby = room("lobby");
        let token_hash = created(&store, &lobby).await;
        let text = |raw: String| MessageText::parse(raw, 100).expect("a valid message");
        for n in 0..10 {
            let batch = NewMessages {
                room: lobby.clone(),
                token_hash: token_hash.clone(),
                messages: vec![crate::store::NewMessage {
                    text: text(format!("m{n}")),
                    idempotency_key: None,
                }],
            };
            let Ok(PostOutcome::Posted(posted)) = store.post(batch).await else {
                panic!("the member posts");
            };
            let id = posted[0].as_ref().expect("a new message").id;
            let edited = store
                .edit_message(&lobby, &token_hash, id, text(format!("e{n}")))
                .await
                .expect("the memory store answers");
            assert!(matches!(edited, Revised::Done(_)), "{edited:?}");
            let rooms = store.rooms.lock().expect("no panic while holding it");
            let room = &rooms.map[&lobby];
            assert!(
                room.revisions
                    .keys()
                    .all(|id| room.log.iter().any(|event| event.id == *id)),
                "a revision outlived its message"
            );
        }
    }
}
