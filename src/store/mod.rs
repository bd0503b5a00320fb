//! The store: each room's ordered log and its membership, changed together atomically.
//!
//! This is the contract both implementations ([`memory::MemoryStore`], [`redis::RedisStore`])
//! keep, and the one conformance suite in `tests/` holds them to it. It comes in three parts
//! that differ in who uses them: [`RoomLog`] (the log and membership: requests and the hub),
//! [`Holds`] (presence holds and the sweep: presence and the sweeper) and [`Feed`] (events
//! appended anywhere reaching this instance: the hub), a separate object the app builds
//! beside the store; and [`Admin`], what the server API (`/api/`) does to rooms as a whole.
//!
//! - **Atomicity.** Every mutating operation checks its preconditions and applies its whole
//!   change (membership, lease, log entry, published event) as one step: on Redis one Lua
//!   script, so one round trip; in memory one critical section. Either all of it happens or
//!   none of it does, and concurrent callers see one winner (one creator of a room, one holder
//!   of a name).
//! - **Order.** Each room's events get strictly increasing ids (`<ms>-<seq>`, Redis stream ids
//!   on both stores) and every event records the id of the event before it (`prev`), so a
//!   reader can tell a gap from a quiet room.
//! - **Errors.** Domain outcomes (room exists, name taken, bad token…) are values of the
//!   operation's result; [`StoreError`] means only that the store could not be asked, in which
//!   case nothing was changed that a later read could half-see.
//! - **Leases.** Every member has a lease that authenticated operations refresh; [`Holds::sweep`]
//!   removes members whose lease lapsed, appending `remove:member:success` with reason
//!   `timeout`. Any instance may sweep: expiry depends only on the store's data.
//! - **Expiry.** A room that has had no members for `ROOM_TTL_SECS` disappears with its log.
//!   Stream tickets lapse after the lifetime they were issued with, whether spent or not.
//! - **Ephemeral events.** Presence and typing are published on the room's feed but never
//!   appended: the step that changes a member's online marks decides, in the same step,
//!   whether the member came online anywhere (its first mark) or went offline everywhere
//!   (its last mark went: released, or lapsed because its instance died) and publishes that;
//!   the step that takes a `typing` publishes it unless the member's throttle
//!   ([`TYPING_EVERY`](crate::domain::TYPING_EVERY)) is running. A member's removal clears its
//!   marks silently: `remove:member:success` tells it.

pub mod memory;
pub mod redis;
pub mod traced;

use std::future::Future;
use std::pin::Pin;

use crate::domain::{
    ChatMessage, ClientMsgId, Ephemeral, EventId, MessageText, RoomEvent, RoomId, TokenHash,
    Username,
};

/// The store could not be reached or did not answer in time. Nothing was half-written: each
/// operation is atomic on the store's side, so it either happened whole or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable")]
    Unavailable,
}

pub type StoreResult<T> = Result<T, StoreError>;
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// Limits and lifetimes the store enforces, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    pub history_limit: usize,
    pub member_ttl_ms: u64,
    /// 0 keeps empty rooms forever.
    pub room_ttl_secs: u64,
    pub idempotency_ttl_secs: u64,
    /// How long a holder's mark keeps a member online without being refreshed.
    pub online_ttl_ms: u64,
    /// Joins beyond this many members are refused.
    pub max_members_per_room: usize,
}

/// A member about to be added to a room.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub room: RoomId,
    pub username: Username,
    pub token_hash: TokenHash,
}

/// How a room may be entered, as read before a join so the secret can be checked off the
/// store (argon2 is too slow to run inside Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAccess {
    NotFound,
    Open,
    /// The room's secret, as a PHC-format password hash.
    Secret(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The id of the creator's `add:member:success`, the last of the two events appended.
    Created(EventId),
    RoomExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined(EventId),
    RoomNotFound,
    UsernameTaken,
    /// The room has `max_members_per_room` members already.
    RoomFull,
    /// The room's secret is not the one the caller checked against (it was deleted and
    /// recreated in between): the join is refused rather than let in unchecked.
    AccessChanged,
    /// The name (or one it is compared equal to) is banned from this room.
    Banned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// One answer per message, in the order given: the stored chat event (new, or the one
    /// stored the first time under the same idempotency key), or a refused replay.
    Posted(Vec<Result<RoomEvent, KeyReused>>),
    Unauthorized,
}

/// An idempotency key names a message that has left the log, and the retry's text is not the
/// text first sent with that key: the stored message cannot be answered, and appending the
/// new one would break the key's promise. Nothing is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReused;

/// What an idempotency key keeps of its message: the event id, and a digest of the text (not
/// a second copy of it) so that a retry arriving after the message left the log can still be
/// answered with the very message, when its text is the one first sent.
pub(crate) fn text_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// Either the operation's answer, or: the token is not a current member's token in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorized<T> {
    Member(T),
    Unauthorized,
}

/// The answer to an edit or a deletion of a chat message, by a member's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revised<T> {
    Done(T),
    /// The token is not a current member's token in the room.
    Unauthorized,
    /// The id is not a chat message the room keeps: unknown, another room's, a membership
    /// event, trimmed from history, or deleted already.
    NotFound,
    /// The member may not: an edit by anyone but the author, a deletion by anyone but the
    /// author or the room's owner.
    Forbidden,
}

impl<T> Revised<T> {
    pub fn map<U>(self, done: impl FnOnce(T) -> U) -> Revised<U> {
        match self {
            Revised::Done(value) => Revised::Done(done(value)),
            Revised::Unauthorized => Revised::Unauthorized,
            Revised::NotFound => Revised::NotFound,
            Revised::Forbidden => Revised::Forbidden,
        }
    }
}

/// A page of chat history, oldest first: each message as last edited, deleted ones left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    /// Pass as `before` for the previous page; `None` when there is none.
    pub next_before: Option<EventId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub username: String,
    pub online: bool,
    /// This member created the room and has not left it since (see [`RoomLog::create_room`]).
    pub owner: bool,
}

/// Events read from a room's log after a given id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub events: Vec<RoomEvent>,
    /// False when the log no longer holds everything after the given id: events after it were
    /// trimmed, or the log lost the id itself (whoever holds it had seen events the log no
    /// longer has, and may have missed others lost with them).
    pub complete: bool,
}

impl LogRead {
    /// The read of `events` (in log order) after `after`, from a log whose newest event is
    /// `newest` (`None`: the log is empty or the room is gone). Both stores answer through
    /// this, so they cannot disagree on what a gap is.
    pub fn after(after: EventId, events: Vec<RoomEvent>, newest: Option<EventId>) -> Self {
        // Every event names the one before it, so the first event after `after` names `after`
        // exactly when the log still holds it. A smaller `prev` means `after` was lost (a
        // failover to a replica that lagged, a Redis restart): the log went on from an earlier
        // event, and what followed `after` before the loss is gone too, unseen by its holder.
        let complete = match events.first() {
            Some(first) => first.prev == after,
            None => after == EventId::ZERO || newest.is_some_and(|newest| newest >= after),
        };
        Self { events, complete }
    }
}

/// Chat messages from one member to one room, to append in the order given.
#[derive(Debug, Clone)]
pub struct NewMessages {
    pub room: RoomId,
    pub token_hash: TokenHash,
    /// Never empty.
    pub messages: Vec<NewMessage>,
}

/// One chat message and its idempotency key (with the digest its key keeps, when it has one).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub text: MessageText,
    pub idempotency_key: Option<ClientMsgId>,
}

impl NewMessage {
    /// The idempotency key, or `""` for none.
    pub fn idempotency_key_or_empty(&self) -> &str {
        self.idempotency_key.as_ref().map_or("", |key| key.as_str())
    }
}

/// Counts ephemeral events published on room feeds, by kind (`presence`, `typing`). Each
/// store calls it where the publish is known to have happened.
pub(crate) fn count_published(kind: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!("chat_ephemeral_published_total", "kind" => kind).increment(count);
    }
}

/// Counts events appended to room logs, by event name (`create:chat:success`…). Each store
/// calls it where an append is known to have happened: an idempotent replay appends nothing.
pub(crate) fn count_appended(event: &'static str, count: u64) {
    metrics::counter!("chat_room_events_appended_total", "event" => event).increment(count);
}

/// The whole store as the app uses it: the room log and membership, the presence holds with
/// the sweep, and the server API's operations. Implemented for anything that has all three.
pub trait Store: RoomLog + Holds + Admin {}

impl<T: RoomLog + Holds + Admin + ?Sized> Store for T {}

/// One room as the server API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub room: RoomId,
    pub members: usize,
    /// Members a live connection holds now (on any instance).
    pub online: usize,
    /// `0-0` for a room with no event (never the case for a room made by `create_room`).
    pub last_event_id: EventId,
}

/// A page of rooms, by room id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsPage {
    pub rooms: Vec<RoomSummary>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<RoomId>,
}

/// Who asks for a member's removal ([`RoomLog::remove_member`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remover<'a> {
    /// The server API (`/api/`): may remove (and ban) any name, member or not.
    ServerApi,
    /// A member, by its token hash: it may remove itself (it leaves), and, when it is the
    /// room's owner, another member (a kick or a ban).
    Member(&'a TokenHash),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The remover removed itself; the id of its `remove:member:success` (`left`).
    Left(EventId),
    /// Another member was removed; the id of its `remove:member:success` (`kicked` or
    /// `banned`).
    Removed(EventId),
    /// Nobody of that name was a member, but the name is banned now (the server API's ban).
    BannedOnly,
    /// The server API named a room that does not exist.
    RoomNotFound,
    /// Nobody of that name is a member (nothing was banned).
    NotMember,
    /// The remover's token is not a current member's token in this room.
    Unauthorized,
    /// The remover is a member, but neither the one named nor the room's owner.
    Forbidden,
    /// A member asked to ban its own name: refused, nothing changed.
    OwnBan,
}

/// Up to `limit + 1` rooms in id order as a page: the extra one only says that another page
/// follows. Both stores answer through this.
pub(crate) fn rooms_page(mut rooms: Vec<RoomSummary>, limit: usize) -> RoomsPage {
    let next_after = if rooms.len() > limit {
        rooms.truncate(limit);
        rooms.last().map(|summary| summary.room.clone())
    } else {
        None
    };
    RoomsPage { rooms, next_after }
}

/// What the server API does to rooms: an app's backend, authenticated with the server API
/// key, not a member. Each operation is atomic like the rest (one script per room on Redis).
pub trait Admin: Send + Sync + 'static {
    /// Rooms by id after `after` (all when `None`), up to `limit`, each with its counts.
    /// Rooms that expired or were deleted are never listed.
    fn list_rooms<'a>(
        &'a self,
        after: Option<&'a RoomId>,
        limit: usize,
    ) -> StoreFuture<'a, RoomsPage>;

    /// Appends a chat message under `username` whether or not a member has that name (a
    /// system or bot message). `None`: the room does not exist.
    fn post_as<'a>(
        &'a self,
        room: &'a RoomId,
        username: &'a Username,
        text: MessageText,
    ) -> StoreFuture<'a, Option<RoomEvent>>;

    /// Deletes the room with everything it holds, and tells its subscribers with a
    /// `room:deleted` event that the log does not keep. False: there was no such room.
    fn delete_room<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, bool>;
}

/// The room log and membership: see the module documentation for the guarantees.
pub trait RoomLog: Send + Sync + 'static {
    /// Creates `member.room` with `member` as its first member and its owner: appends
    /// `create:room:success` and `add:member:success`. `secret_hash` is stored as given. The
    /// owner stays the owner until it is removed (leaves, times out, is kicked or banned):
    /// the same step clears the room's owner, so the room then has none, and a later member
    /// of the same name is not the owner.
    fn create_room(
        &self,
        member: NewMember,
        secret_hash: Option<String>,
    ) -> StoreFuture<'_, CreateOutcome>;

    fn room_access<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, RoomAccess>;

    /// Adds a member if the room exists, its secret hash is still `expected_secret_hash`
    /// and the name's key is free; appends `add:member:success`.
    fn join(
        &self,
        member: NewMember,
        expected_secret_hash: Option<String>,
    ) -> StoreFuture<'_, JoinOutcome>;

    /// Removes the member holding `target` (compared by its username key), checking `by` in
    /// the same step: a member removing itself leaves (`left`; `ban` is then refused as
    /// [`RemoveOutcome::OwnBan`]); the room's owner or the server API removing another
    /// appends `kicked`, or `banned` with `ban`. The removed member's token stops working in
    /// that step. A ban keeps the name's identity keys from joining for as long as the room
    /// exists; only the server API bans a name no member holds.
    fn remove_member<'a>(
        &'a self,
        room: &'a RoomId,
        target: &'a Username,
        by: Remover<'a>,
        ban: bool,
    ) -> StoreFuture<'a, RemoveOutcome>;

    /// Appends chat messages for the member whose token this is, in order and as one step
    /// (all or none, nothing of another writer in between), and refreshes its lease. One
    /// step, not one call per message, is what lets a sender's queued messages go in one
    /// round trip without a retried one landing after a later one.
    fn post(&self, messages: NewMessages) -> StoreFuture<'_, PostOutcome>;

    /// Changes the text of the chat message `target` to `text`, for its author (the member
    /// whose display name is the message's), appending `update:chat:success`, and refreshes
    /// the member's lease, as one step. Answers the message as it stands. When the message's
    /// text is `text` already, nothing is appended and the message is answered as it is, so
    /// a retried edit lands once.
    fn edit_message<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
        text: MessageText,
    ) -> StoreFuture<'a, Revised<ChatMessage>>;

    /// Deletes the chat message `target`, for its author or the room's owner, appending
    /// `delete:chat:success`, and refreshes the member's lease, as one step. Answers the
    /// deletion's event id. A deleted message is `NotFound` from then on (a retried delete
    /// too), and history leaves it out; the log keeps its events.
    fn delete_message<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
    ) -> StoreFuture<'a, Revised<EventId>>;

    /// Checks a token and refreshes its member's lease; answers the member's username.
    fn authenticate<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>>;

    /// Stores a stream ticket (by its hash) for the member whose token this is, valid in this
    /// room for `ttl_secs`, and refreshes the member's lease, as one step.
    fn issue_ticket<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        ticket_hash: &'a TokenHash,
        ttl_secs: u64,
    ) -> StoreFuture<'a, Authorized<()>>;

    /// Spends a stream ticket: deletes it, and answers the member it was issued for (refreshing
    /// its lease) when it was issued in `room`, has not expired and that member is still in
    /// the room, all as one step, so a ticket is redeemed at most once on any instance.
    /// Every other case is `Unauthorized`, with nothing to tell them apart.
    fn redeem_ticket<'a>(
        &'a self,
        room: &'a RoomId,
        ticket_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>>;

    /// The member whose token this is is typing: refreshes its lease and, unless a `typing`
    /// of this member was published within [`TYPING_EVERY`](crate::domain::TYPING_EVERY) (by
    /// any instance), publishes one, as one step. `Member(true)`: published; `Member(false)`:
    /// dropped by the throttle.
    fn typing<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<bool>>;

    /// Up to `limit` chat messages before `before` (or the newest), oldest first, each as
    /// last edited; deleted messages are left out (and do not count towards `limit`).
    fn history<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'a, Authorized<HistoryPage>>;

    fn members<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Vec<MemberInfo>>>;

    /// Up to `limit` events after `after`, in log order. Callers authorize first.
    fn read_log<'a>(
        &'a self,
        room: &'a RoomId,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'a, LogRead>;

    /// Readiness: does the store answer?
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// The id of the room's last event (`0-0` when the room has none or does not exist).
    fn last_event_id<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, EventId>;
}

/// Presence holds and expiry: what keeps members online and alive, and what times them out.
///
/// Members are given by username key, grouped by room. Each room's change is one atomic
/// step, which publishes the `presence` events it causes (see the module documentation).
pub trait Holds: Send + Sync + 'static {
    /// Refreshes, for members held by live connections on this instance, their leases and
    /// their online marks (valid for `online_ttl_ms`); clears the marks of other instances
    /// that lapsed (they stopped refreshing: they died) in the same rooms. A member whose
    /// first mark this is comes online (`presence` `online: true`); one left with no mark by
    /// the lapse goes offline. Members no longer in a room are skipped.
    fn refresh_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()>;

    /// This instance no longer holds these members: each goes offline (`presence`
    /// `online: false`) unless another instance holds it. Their leases run on, so they time
    /// out unless held again.
    fn release_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()>;

    /// Removes every member whose lease has lapsed (appending their timeout events) and
    /// deletes rooms whose time is up. Safe to run on any number of instances at once.
    /// Answers how many members timed out.
    fn sweep(&self) -> StoreFuture<'_, usize>;
}

/// The feed: how events appended by any instance reach this instance's hub. The app builds
/// it beside the store (Redis: [`redis::RedisFeed`], pub/sub; memory: [`memory::LocalFeed`],
/// the store hands every event over itself) and starts it with the hub's sink.
pub trait Feed: Send + Sync + 'static {
    /// Resolves once events of `room` appended from now on will reach the sink. Fails while
    /// the feed is disconnected (the subscription is kept and made when it reconnects).
    fn subscribe<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, ()>;

    /// Stops delivering `room`'s events to this instance.
    fn unsubscribe(&self, room: &RoomId);
}

/// Where a store delivers the events it learns of: the hub. `deliver` must not block.
pub trait FeedSink: Send + Sync + 'static {
    fn deliver(&self, item: FeedItem);
}

/// What the feed carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// An appended event. Per room these arrive in log order, but the feed may skip some
    /// (Redis pub/sub is at-most-once): `prev` tells the receiver when it must read the log.
    Event(RoomEvent),
    /// The feed was disconnected and is back: events of every room may have been missed.
    Resync,
    /// The feed's subscription to this room was (re)established: its events may have been
    /// missed (the sharded feed of a cluster, whose shards come and go one by one).
    ResyncRoom(RoomId),
    /// An ephemeral event: in no log, with no id, so nothing orders it or fills it in. One
    /// the feed loses is lost.
    Ephemeral(Ephemeral),
}
