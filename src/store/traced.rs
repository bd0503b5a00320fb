//! [`Traced`]: a span around every operation of either store and either feed, named `store.<operation>`
//! (`store.post`, `store.read_log`…), so a request's trace shows what it asked of the store and
//! how long that took, whichever store runs.
//!
//! The span is entered both while the operation is *called* and while its future runs: the
//! memory store does its work in the call itself, Redis in the future. It is a child of whatever
//! the caller is in (a request, a WebSocket client event). The housekeeping calls get DEBUG
//! spans, which traces leave out: the lease sweep and presence refresh run every second or so
//! outside any request, and a hub room starting (`subscribe_feed`, `last_event_id`) or a
//! presence release runs in a task of its own; each would start a one-span trace.
//!
//! Span fields hold the room id (not a secret: it is in every URL) and never a token, a token
//! hash, a stream ticket, a secret or a message.

use std::sync::Arc;

use tracing::{Instrument, Span};

use super::{
    Admin, Authorized, CreateOutcome, Feed, HistoryPage, Holds, JoinOutcome, LogRead, MemberInfo,
    NewMember, NewMessages, PostOutcome, RemoveOutcome, Remover, Revised, RoomAccess, RoomLog,
    RoomsPage, Store, StoreFuture,
};
use crate::domain::{ChatMessage, EventId, MessageText, RoomEvent, RoomId, TokenHash, Username};

/// A store (`Traced<dyn Store>`) or a feed (`Traced<dyn Feed>`) with spans around its calls.
pub struct Traced<T: ?Sized> {
    inner: Arc<T>,
    /// `memory` or `redis`, as the spans' `chat.store`.
    kind: &'static str,
}

pub type TracedStore = Traced<dyn Store>;
pub type TracedFeed = Traced<dyn Feed>;

impl<T: ?Sized> Traced<T> {
    pub fn new(inner: Arc<T>, kind: &'static str) -> Self {
        Self { inner, kind }
    }

    fn span(&self, name: &'static str, room: Option<&RoomId>) -> Span {
        tracing::info_span!(
            "store",
            otel.name = name,
            otel.status_code = tracing::field::Empty,
            chat.store = self.kind,
            chat.room = room.map(RoomId::as_str),
        )
    }

    fn housekeeping_span(&self, name: &'static str) -> Span {
        tracing::debug_span!("store", otel.name = name, chat.store = self.kind)
    }
}

/// Runs `call` and then its future inside `span`; an unavailable store marks the span failed.
fn traced<'a, T: Send + 'a>(
    span: Span,
    call: impl FnOnce() -> StoreFuture<'a, T>,
) -> StoreFuture<'a, T> {
    let future = span.in_scope(call);
    Box::pin(async move {
        let result = future.instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        result
    })
}

impl RoomLog for Traced<dyn Store> {
    fn create_room(
        &self,
        member: NewMember,
        secret_hash: Option<String>,
    ) -> StoreFuture<'_, CreateOutcome> {
        let span = self.span("store.create_room", Some(&member.room));
        traced(span, || self.inner.create_room(member, secret_hash))
    }

    fn room_access<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, RoomAccess> {
        let span = self.span("store.room_access", Some(room));
        traced(span, || self.inner.room_access(room))
    }

    fn join(
        &self,
        member: NewMember,
        expected_secret_hash: Option<String>,
    ) -> StoreFuture<'_, JoinOutcome> {
        let span = self.span("store.join", Some(&member.room));
        traced(span, || self.inner.join(member, expected_secret_hash))
    }

    fn remove_member<'a>(
        &'a self,
        room: &'a RoomId,
        target: &'a Username,
        by: Remover<'a>,
        ban: bool,
    ) -> StoreFuture<'a, RemoveOutcome> {
        let span = self.span("store.remove_member", Some(room));
        traced(span, || self.inner.remove_member(room, target, by, ban))
    }

    fn post(&self, messages: NewMessages) -> StoreFuture<'_, PostOutcome> {
        let span = self.span("store.post", Some(&messages.room));
        traced(span, || self.inner.post(messages))
    }

    fn edit_message<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
        text: MessageText,
    ) -> StoreFuture<'a, Revised<ChatMessage>> {
        let span = self.span("store.edit_message", Some(room));
        traced(span, || {
            self.inner.edit_message(room, token_hash, target, text)
        })
    }

    fn delete_message<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
    ) -> StoreFuture<'a, Revised<EventId>> {
        let span = self.span("store.delete_message", Some(room));
        traced(span, || self.inner.delete_message(room, token_hash, target))
    }

    fn authenticate<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>> {
        let span = self.span("store.authenticate", Some(room));
        traced(span, || self.inner.authenticate(room, token_hash))
    }

    fn issue_ticket<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        ticket_hash: &'a TokenHash,
        ttl_secs: u64,
    ) -> StoreFuture<'a, Authorized<()>> {
        let span = self.span("store.issue_ticket", Some(room));
        traced(span, || {
            self.inner
                .issue_ticket(room, token_hash, ticket_hash, ttl_secs)
        })
    }

    fn redeem_ticket<'a>(
        &'a self,
        room: &'a RoomId,
        ticket_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>> {
        let span = self.span("store.redeem_ticket", Some(room));
        traced(span, || self.inner.redeem_ticket(room, ticket_hash))
    }

    fn typing<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<bool>> {
        let span = self.span("store.typing", Some(room));
        traced(span, || self.inner.typing(room, token_hash))
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'a, Authorized<HistoryPage>> {
        let span = self.span("store.history", Some(room));
        traced(span, || self.inner.history(room, token_hash, before, limit))
    }

    fn members<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Vec<MemberInfo>>> {
        let span = self.span("store.members", Some(room));
        traced(span, || self.inner.members(room, token_hash))
    }

    fn read_log<'a>(
        &'a self,
        room: &'a RoomId,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'a, LogRead> {
        let span = self.span("store.read_log", Some(room));
        traced(span, || self.inner.read_log(room, after, limit))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        traced(self.span("store.ping", None), || self.inner.ping())
    }

    fn last_event_id<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, EventId> {
        let span = self.housekeeping_span("store.last_event_id");
        traced(span, || self.inner.last_event_id(room))
    }
}

impl Holds for Traced<dyn Store> {
    fn refresh_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
        let span = self.housekeeping_span("store.refresh_holds");
        traced(span, || self.inner.refresh_holds(holds))
    }

    fn release_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
        let span = self.housekeeping_span("store.release_holds");
        traced(span, || self.inner.release_holds(holds))
    }

    fn sweep(&self) -> StoreFuture<'_, usize> {
        traced(self.housekeeping_span("store.sweep"), || self.inner.sweep())
    }
}

impl Admin for Traced<dyn Store> {
    fn list_rooms<'a>(
        &'a self,
        after: Option<&'a RoomId>,
        limit: usize,
    ) -> StoreFuture<'a, RoomsPage> {
        let span = self.span("store.list_rooms", None);
        traced(span, || self.inner.list_rooms(after, limit))
    }

    fn post_as<'a>(
        &'a self,
        room: &'a RoomId,
        username: &'a Username,
        text: MessageText,
    ) -> StoreFuture<'a, Option<RoomEvent>> {
        let span = self.span("store.post_as", Some(room));
        traced(span, || self.inner.post_as(room, username, text))
    }

    fn delete_room<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, bool> {
        let span = self.span("store.delete_room", Some(room));
        traced(span, || self.inner.delete_room(room))
    }
}

impl Feed for Traced<dyn Feed> {
    fn subscribe<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, ()> {
        let span = self.housekeeping_span("store.subscribe_feed");
        traced(span, || self.inner.subscribe(room))
    }

    fn unsubscribe(&self, room: &RoomId) {
        self.inner.unsubscribe(room);
    }
}
