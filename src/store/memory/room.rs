//! One room of the memory store: its members, names, tokens, log, idempotency keys,
//! tickets and the revisions (edits, deletions) of its chat messages, and the changes an
//! operation makes to them (always under the store's lock).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::domain::{ChatMessage, EventId, EventKind, MessageText, RoomEvent, RoomId, TokenHash};
use crate::store::{KeyReused, NewMember, text_digest};

pub(super) struct MemberRecord {
    pub(super) display: String,
    /// The name's identity keys (see `Username::identity_keys`), released from
    /// `Room::names` when the member goes.
    pub(super) identity_keys: Vec<String>,
    pub(super) token_hash: TokenHash,
    pub(super) lease_deadline_ms: u64,
    /// Online while a connection of this process holds the member and refreshes this; 0
    /// once released (or never held), which is what `presence` events follow.
    pub(super) online_until_ms: u64,
    /// The member's `typing` throttle: no other is published before this.
    pub(super) typing_until_ms: u64,
}

pub(super) struct Room {
    pub(super) secret_hash: Option<String>,
    /// Keyed by the username's member key.
    pub(super) members: HashMap<String, MemberRecord>,
    /// Every identity key held by a member: what makes a look-alike of a member's name taken.
    pub(super) names: HashSet<String>,
    /// The identity keys of banned names: a name holding one of them may not join. Kept as
    /// long as the room.
    pub(super) bans: HashSet<String>,
    /// The owner's username key: the creator's, until it is removed (`remove_member` clears
    /// it), and never set again.
    pub(super) owner: Option<String>,
    /// Token hash → username key.
    pub(super) tokens: HashMap<TokenHash, String>,
    pub(super) log: VecDeque<RoomEvent>,
    pub(super) last_id: EventId,
    /// Set while the room has no members: when it will be deleted.
    pub(super) empty_since_ms: Option<u64>,
    /// (token hash, key) → what the key keeps of its message.
    pub(super) idempotency: HashMap<(TokenHash, String), KeptKey>,
    /// Stream ticket hash → (the member's token hash, when the ticket expires). Spent tickets
    /// are removed at once, expired ones by the sweep; a REST rate limit and the short
    /// lifetime bound how many one client can keep here.
    pub(super) tickets: HashMap<TokenHash, (TokenHash, u64)>,
    /// Chat message id → its last edit or its deletion, for messages still in `log` only:
    /// an entry leaves with its message, so there are never more than the log holds.
    pub(super) revisions: HashMap<EventId, Revision>,
}

/// What became of a chat message after it was posted.
pub(super) struct Revision {
    /// The id of the `update:chat:success` or `delete:chat:success` that made it so.
    pub(super) id: EventId,
    /// The text it has now; `None` once deleted.
    pub(super) text: Option<String>,
}

/// An idempotency key's memory: the message's id and text digest, not the message.
pub(super) struct KeptKey {
    pub(super) id: EventId,
    pub(super) digest: String,
    pub(super) expires_ms: u64,
}

impl Room {
    /// A room owned by the member of username key `owner`, who is added next.
    pub(super) fn new(secret_hash: Option<String>, owner: String) -> Self {
        Self {
            secret_hash,
            members: HashMap::new(),
            names: HashSet::new(),
            bans: HashSet::new(),
            owner: Some(owner),
            tokens: HashMap::new(),
            log: VecDeque::new(),
            last_id: EventId::ZERO,
            empty_since_ms: None,
            idempotency: HashMap::new(),
            tickets: HashMap::new(),
            revisions: HashMap::new(),
        }
    }

    pub(super) fn append(
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
            if let Some(trimmed) = self.log.pop_front() {
                self.revisions.remove(&trimmed.id);
            }
        }
        appended.push(event.clone());
        event
    }

    /// The answer to a retry under a kept key: the message from the log, or, once it left the
    /// log, the retry itself if its text is the one first sent.
    pub(super) fn replay(
        &self,
        room: &RoomId,
        kept: &KeptKey,
        username: &str,
        text: &MessageText,
    ) -> Result<RoomEvent, KeyReused> {
        if let Ok(at) = self.log.binary_search_by_key(&kept.id, |event| event.id) {
            return Ok(self.log[at].clone());
        }
        if text_digest(text.as_str()) != kept.digest {
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

    /// A chat event of the log as history shows it: with its last edit, `None` once deleted
    /// (or when the event is not a chat message).
    pub(super) fn shown(&self, event: &RoomEvent) -> Option<ChatMessage> {
        let mut message = event.as_chat()?;
        if let Some(revision) = self.revisions.get(&event.id) {
            message.message = revision.text.clone()?;
            message.edited_ts = Some(crate::domain::timestamp(revision.id));
        }
        Some(message)
    }

    /// The chat message `id` as it stands, if the log keeps it and it was not deleted: what
    /// an edit or a deletion may change.
    pub(super) fn revisable(&self, id: EventId) -> Option<ChatMessage> {
        let at = self.log.binary_search_by_key(&id, |event| event.id).ok()?;
        self.shown(&self.log[at])
    }

    /// Records what became of the chat message `id` (the log keeps it unless the append of
    /// `revision`'s event just trimmed it, when there is nothing left to record).
    pub(super) fn revise(&mut self, id: EventId, revision: Revision) {
        if self.log.front().is_some_and(|oldest| oldest.id <= id) {
            self.revisions.insert(id, revision);
        }
    }

    /// Whether the member whose token this is wrote `message`: its display name is the
    /// message's (a current member's name is unique in the room, so this is one member).
    pub(super) fn is_author(&self, token_hash: &TokenHash, message: &ChatMessage) -> bool {
        self.tokens
            .get(token_hash)
            .and_then(|key| self.members.get(key))
            .is_some_and(|record| record.display == message.username)
    }

    /// Whether a member holds one of the name's identity keys.
    pub(super) fn name_taken(&self, identity_keys: &[String]) -> bool {
        identity_keys.iter().any(|key| self.names.contains(key))
    }

    /// Whether the member of this username key is the room's owner.
    pub(super) fn is_owner(&self, key: &str) -> bool {
        self.owner.as_deref() == Some(key)
    }

    /// Whether a banned name holds one of the name's identity keys.
    pub(super) fn name_banned(&self, identity_keys: &[String]) -> bool {
        identity_keys.iter().any(|key| self.bans.contains(key))
    }

    pub(super) fn add_member(
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
                typing_until_ms: 0,
            },
        );
        self.empty_since_ms = None;
    }

    /// Removes a member by its username key, and with it the room's owner if it was that.
    pub(super) fn remove_member(&mut self, key: &str, now: u64) -> Option<MemberRecord> {
        let record = self.members.remove(key)?;
        if self.is_owner(key) {
            self.owner = None;
        }
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
    pub(super) fn next_due(&self, room_ttl_ms: u64) -> Option<u64> {
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
    pub(super) fn touch(
        &mut self,
        token_hash: &TokenHash,
        lease_deadline_ms: u64,
    ) -> Option<&mut MemberRecord> {
        let key = self.tokens.get(token_hash)?;
        let record = self.members.get_mut(key)?;
        record.lease_deadline_ms = lease_deadline_ms;
        Some(record)
    }
}
