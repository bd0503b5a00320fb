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
//! appended them.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use super::{
    Authorized, CreateOutcome, Feed, FeedItem, FeedSink, HistoryPage, Holds, JoinOutcome,
    KeyReused, LeaveOutcome, LogRead, MemberInfo, NewMember, NewMessages, PostOutcome, RoomAccess,
    RoomLog, StoreFuture, StoreSettings,
};
use crate::domain::{
    EventId, EventKind, LeaveReason, MessageText, RoomEvent, RoomId, TokenHash, Username, now_ms,
};

pub struct MemoryStore {
    settings: StoreSettings,
    rooms: Mutex<Rooms>,
    /// Events are handed to it inside the critical section that appended them, so the hub
    /// sees each room's events in log order.
    feed: Arc<LocalFeed>,
}

/// The memory store's [`Feed`]: the store hands it every event it appends, and it passes
/// them on to the hub's sink. It carries every room, so a room is live as soon as asked, and
/// the hub's sink ignores rooms nobody here watches.
#[derive(Default)]
pub struct LocalFeed {
    sink: OnceLock<Arc<dyn FeedSink>>,
}

impl LocalFeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts delivering to `sink`; only the first call counts (the app has one hub).
    pub fn start(&self, sink: Arc<dyn FeedSink>) {
        let _first = self.sink.set(sink);
    }

    fn deliver(&self, events: Vec<RoomEvent>) {
        if let Some(sink) = self.sink.get() {
            for event in events {
                sink.deliver(FeedItem::Event(event));
            }
        }
    }
}

impl Feed for LocalFeed {
    fn subscribe<'a>(&'a self, _room: &'a RoomId) -> StoreFuture<'a, ()> {
        ready(())
    }

    fn unsubscribe(&self, _room: &RoomId) {}
}

/// Everything behind the store's one lock.
#[derive(Default)]
struct Rooms {
    map: HashMap<RoomId, Room>,
    expiry: ExpiryIndex,
}

/// Rooms ordered by the earliest time each may need the sweep. A hint that is never later
/// than the room's real earliest deadline (only ever moved earlier between sweeps): a room
/// looked at too early is just rescheduled.
#[derive(Default)]
struct ExpiryIndex {
    by_time: BTreeSet<(u64, RoomId)>,
    at: HashMap<RoomId, u64>,
}

impl ExpiryIndex {
    /// The room needs looking at by `at_ms` (kept if an earlier time is already scheduled).
    fn schedule(&mut self, room: &RoomId, at_ms: u64) {
        match self.at.get(room) {
            Some(&current) if current <= at_ms => {}
            current => {
                if let Some(&current) = current {
                    self.by_time.remove(&(current, room.clone()));
                }
                self.by_time.insert((at_ms, room.clone()));
                self.at.insert(room.clone(), at_ms);
            }
        }
    }

    /// Takes the rooms due by `now`, earliest first.
    fn take_due(&mut self, now: u64) -> Vec<RoomId> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first()
            && *at <= now
        {
            let Some((_, room)) = self.by_time.pop_first() else {
                break;
            };
            self.at.remove(&room);
            due.push(room);
        }
        due
    }
}

struct MemberRecord {
    display: String,
    /// The name's identity keys (see `Username::identity_keys`), released from
    /// `Room::names` when the member goes.
    identity_keys: Vec<String>,
    token_hash: TokenHash,
    lease_deadline_ms: u64,
    /// Online while a connection of this process holds the member and refreshes this.
    online_until_ms: u64,
}

struct Room {
    secret_hash: Option<String>,
    /// Keyed by the username's member key.
    members: HashMap<String, MemberRecord>,
    /// Every identity key held by a member: what makes a look-alike of a member's name taken.
    names: HashSet<String>,
    /// Token hash → username key.
    tokens: HashMap<TokenHash, String>,
    log: VecDeque<RoomEvent>,
    last_id: EventId,
    /// Set while the room has no members: when it will be deleted.
    empty_since_ms: Option<u64>,
    /// (token hash, key) → what the key keeps of its message.
    idempotency: HashMap<(TokenHash, String), KeptKey>,
    /// Stream ticket hash → (the member's token hash, when the ticket expires). Spent tickets
    /// are removed at once, expired ones by the sweep; a REST rate limit and the short
    /// lifetime bound how many one client can keep here.
    tickets: HashMap<TokenHash, (TokenHash, u64)>,
}

/// An idempotency key's memory: the message's id and text digest, not the message.
struct KeptKey {
    id: EventId,
    digest: String,
    expires_ms: u64,
}

impl Room {
    fn new(secret_hash: Option<String>) -> Self {
        Self {
            secret_hash,
            members: HashMap::new(),
            names: HashSet::new(),
            tokens: HashMap::new(),
            log: VecDeque::new(),
            last_id: EventId::ZERO,
            empty_since_ms: None,
            idempotency: HashMap::new(),
            tickets: HashMap::new(),
        }
    }

    fn append(
        &mut self,
        room: &RoomId,
        kind: EventKind,
        now: u64,
        limit: usize,
        appended: &mut Vec<RoomEvent>,
    ) -> RoomEvent {
        let prev = self.last_id;
        let id = if now > prev.ms {
            EventId::new(now, 0)
        } else {
            EventId::new(prev.ms, prev.seq + 1)
        };
        let event = RoomEvent {
            id,
            prev,
            room: room.clone(),
            kind,
        };
        self.last_id = id;
        self.log.push_back(event.clone());
        while self.log.len() > limit {
            self.log.pop_front();
        }
        appended.push(event.clone());
        event
    }

    /// The answer to a retry under a kept key: the message from the log, or, once it left the
    /// log, the retry itself if its text is the one first sent.
    fn replay(
        &self,
        room: &RoomId,
        kept: &KeptKey,
        username: &str,
        text: &MessageText,
    ) -> Result<RoomEvent, KeyReused> {
        if let Ok(at) = self.log.binary_search_by_key(&kept.id, |event| event.id) {
            return Ok(self.log[at].clone());
        }
        if super::text_digest(text.as_str()) != kept.digest {
            return Err(KeyReused);
        }
        Ok(RoomEvent {
            id: kept.id,
            prev: EventId::ZERO,
            room: room.clone(),
            kind: EventKind::Chat {
                username: username.to_owned(),
                message: text.as_str().to_owned(),
            },
        })
    }

    /// Whether a member holds one of the name's identity keys.
    fn name_taken(&self, identity_keys: &[String]) -> bool {
        identity_keys.iter().any(|key| self.names.contains(key))
    }

    fn add_member(
        &mut self,
        member: &NewMember,
        identity_keys: Vec<String>,
        lease_deadline_ms: u64,
    ) {
        let key = member.username.key().to_owned();
        self.tokens.insert(member.token_hash.clone(), key.clone());
        self.names.extend(identity_keys.iter().cloned());
        self.members.insert(
            key,
            MemberRecord {
                display: member.username.as_str().to_owned(),
                identity_keys,
                token_hash: member.token_hash.clone(),
                lease_deadline_ms,
                online_until_ms: 0,
            },
        );
        self.empty_since_ms = None;
    }

    fn remove_member(&mut self, key: &str, now: u64) -> Option<MemberRecord> {
        let record = self.members.remove(key)?;
        self.tokens.remove(&record.token_hash);
        for identity_key in &record.identity_keys {
            self.names.remove(identity_key);
        }
        if self.members.is_empty() {
            self.empty_since_ms = Some(now);
        }
        Some(record)
    }

    /// The earliest time something in the room lapses: a lease, an idempotency key, a ticket,
    /// or the room itself once empty (`None`: nothing ever will).
    fn next_due(&self, room_ttl_ms: u64) -> Option<u64> {
        let leases = self.members.values().map(|record| record.lease_deadline_ms);
        let keys = self.idempotency.values().map(|kept| kept.expires_ms);
        let tickets = self.tickets.values().map(|(_, expires)| *expires);
        let empty = self
            .empty_since_ms
            .filter(|_| room_ttl_ms > 0)
            .map(|since| since.saturating_add(room_ttl_ms));
        leases.chain(keys).chain(tickets).chain(empty).min()
    }

    /// The member a token names, with its lease refreshed.
    fn touch(&mut self, token_hash: &TokenHash, lease_deadline_ms: u64) -> Option<&MemberRecord> {
        let key = self.tokens.get(token_hash)?;
        let record = self.members.get_mut(key)?;
        record.lease_deadline_ms = lease_deadline_ms;
        Some(record)
    }
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
        for event in &appended {
            super::count_appended(event.kind.name(), 1);
        }
        self.feed.deliver(appended);
        answer
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
            let mut room = Room::new(secret_hash);
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

    fn leave<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
        target: &'a Username,
    ) -> StoreFuture<'a, LeaveOutcome> {
        let outcome = self.with_rooms(|rooms, now, appended| {
            let limit = self.settings.history_limit;
            let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                return LeaveOutcome::Unauthorized;
            };
            let Some(key) = room.tokens.get(token_hash).cloned() else {
                return LeaveOutcome::Unauthorized;
            };
            if key != target.key() {
                return LeaveOutcome::Forbidden;
            }
            let Some(record) = room.remove_member(&key, now) else {
                return LeaveOutcome::Unauthorized;
            };
            let event = room.append(
                room_id,
                EventKind::MemberRemoved {
                    username: record.display,
                    reason: LeaveReason::Left,
                },
                now,
                limit,
                appended,
            );
            if let Some(due) = room.next_due(self.room_ttl_ms()) {
                rooms.expiry.schedule(room_id, due);
            }
            LeaveOutcome::Left(event.id)
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
            let deadline = self.lease_deadline(now);
            let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                return Authorized::Unauthorized;
            };
            if room.touch(token_hash, deadline).is_none() {
                return Authorized::Unauthorized;
            }
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

    fn history<'a>(
        &'a self,
        room_id: &'a RoomId,
        token_hash: &'a TokenHash,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'a, Authorized<HistoryPage>> {
        let outcome = self.with_rooms(|rooms, now, _| {
            let deadline = self.lease_deadline(now);
            let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                return Authorized::Unauthorized;
            };
            if room.touch(token_hash, deadline).is_none() {
                return Authorized::Unauthorized;
            }
            // One more than asked tells whether an earlier page exists.
            let mut newest_first: Vec<RoomEvent> = room
                .log
                .iter()
                .rev()
                .filter(|event| before.is_none_or(|before| event.id < before))
                .filter(|event| matches!(event.kind, EventKind::Chat { .. }))
                .take(limit + 1)
                .cloned()
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
            let deadline = self.lease_deadline(now);
            let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                return Authorized::Unauthorized;
            };
            if room.touch(token_hash, deadline).is_none() {
                return Authorized::Unauthorized;
            }
            let mut members: Vec<MemberInfo> = room
                .members
                .values()
                .map(|record| MemberInfo {
                    username: record.display.clone(),
                    online: record.online_until_ms > now,
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
                return LogRead {
                    events: Vec::new(),
                    complete: true,
                };
            };
            let events: Vec<RoomEvent> = room
                .log
                .iter()
                .filter(|event| event.id > after)
                .take(limit)
                .cloned()
                .collect();
            let complete = events.first().is_none_or(|first| first.prev <= after);
            LogRead { events, complete }
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
        self.with_rooms(|rooms, now, _| {
            let lease = self.lease_deadline(now);
            let online_until = now + self.settings.online_ttl_ms;
            for (room_id, keys) in holds {
                let Some(room) = self.live_room(&mut rooms.map, room_id, now) else {
                    continue;
                };
                for key in keys {
                    if let Some(record) = room.members.get_mut(key) {
                        record.lease_deadline_ms = record.lease_deadline_ms.max(lease);
                        record.online_until_ms = online_until;
                    }
                }
            }
        });
        ready(())
    }

    fn release_hold<'a>(&'a self, room_id: &'a RoomId, key: &'a str) -> StoreFuture<'a, ()> {
        self.with_rooms(|rooms, now, _| {
            if let Some(record) = self
                .live_room(&mut rooms.map, room_id, now)
                .and_then(|room| room.members.get_mut(key))
            {
                record.online_until_ms = 0;
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

/// Turns up to `limit + 1` chat events, newest first, into a page: the extra one only says
/// that an earlier page exists.
pub(crate) fn page_from_newest_first(
    newest_first: &mut Vec<RoomEvent>,
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

    #[test]
    fn the_expiry_index_hands_out_due_rooms_in_order_and_keeps_the_earliest_time() {
        let mut index = ExpiryIndex::default();
        index.schedule(&room("late"), 300);
        index.schedule(&room("early"), 100);
        index.schedule(&room("later-first"), 200);
        // A later time for a scheduled room changes nothing; an earlier one moves it.
        index.schedule(&room("early"), 250);
        index.schedule(&room("later-first"), 50);
        assert_eq!(index.take_due(99), [room("later-first")]);
        assert_eq!(index.take_due(99), Vec::<RoomId>::new());
        assert_eq!(index.take_due(1000), [room("early"), room("late")]);
        assert!(index.by_time.is_empty() && index.at.is_empty());
    }

    #[tokio::test]
    async fn the_sweep_times_out_lapsed_members_and_reschedules_their_room() {
        let store = MemoryStore::new(
            StoreSettings {
                history_limit: 100,
                // Every lease has lapsed by the time the sweep runs.
                member_ttl_ms: 0,
                room_ttl_secs: 3600,
                idempotency_ttl_secs: 60,
                online_ttl_ms: 1000,
                max_members_per_room: 10,
            },
            Arc::new(LocalFeed::new()),
        );
        let lobby = room("lobby");
        let member = NewMember {
            room: lobby.clone(),
            username: Username::parse("alice").expect("a valid username"),
            token_hash: TokenHash::from_stored("a".repeat(64)),
        };
        store
            .create_room(member, None)
            .await
            .expect("the memory store answers");
        assert_eq!(store.sweep().await, Ok(1));
        // Empty now: the room is due again when its emptiness expires, not before.
        let rooms = store.rooms.lock().expect("no panic while holding it");
        let due = rooms
            .expiry
            .at
            .get(&lobby)
            .copied()
            .expect("the room is scheduled");
        let since = rooms.map[&lobby].empty_since_ms.expect("the room is empty");
        assert_eq!(due, since + 3_600_000);
    }
}
