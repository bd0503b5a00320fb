//! The room operations every transport calls: create, join, leave (or, by the room's owner,
//! kick and ban), post, edit and delete a message (its author; deleting, also the owner),
//! typing, history, members.
//!
//! This is where the business rules meet the store: tokens are minted and hashed here, room
//! secrets are hashed and checked here (through [`SecretHasher`], bounded in memory and
//! concurrency; wrong secrets are limited per client and per room), and store outcomes become
//! API.md's errors. Nothing here knows about HTTP, WebSocket or SSE.

mod admin;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{
    ChatMessage, ClientMsgId, EventId, MemberToken, MessageText, RoomId, RoomSecret, StreamTicket,
    TokenHash, Username,
};
use crate::error::ApiError;
use crate::identity::{Identity, Joiner};
use crate::limits::Limits;
use crate::room_secrets::SecretHasher;
use crate::store::{
    Authorized, CreateOutcome, HistoryPage, JoinOutcome, KeyReused, MemberInfo, NewMember,
    NewMessage, NewMessages, PostOutcome, RemoveOutcome, Remover, Revised, RoomAccess, Store,
    StoreError,
};

/// What a member gets back when it joins (or creates) a room.
#[derive(Debug, Clone)]
pub struct Joined {
    pub room: RoomId,
    pub username: Username,
    pub token: MemberToken,
    /// The id of the last event the join appended.
    pub last_event_id: EventId,
}

/// A removal a member asked for ([`Rooms::remove_by_member`]), with the id of its
/// `remove:member:success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The member removed itself (`left`).
    Left(EventId),
    /// The room's owner removed another member (`kicked` or `banned`).
    Removed(EventId),
}

impl Removal {
    pub fn event_id(self) -> EventId {
        match self {
            Removal::Left(id) | Removal::Removed(id) => id,
        }
    }
}

/// The most history one request may ask for (and the most rooms one server API page lists).
pub const MAX_HISTORY_PAGE: usize = 200;

#[derive(Clone)]
pub struct Rooms {
    store: Arc<dyn Store>,
    max_message_bytes: usize,
    limits: Arc<Limits>,
    secrets: SecretHasher,
    /// Whose names members join under: the client's, or its JWT's.
    identity: Identity,
}

impl Rooms {
    pub fn new(
        store: Arc<dyn Store>,
        max_message_bytes: usize,
        limits: Arc<Limits>,
        secrets: SecretHasher,
        identity: Identity,
    ) -> Self {
        Self {
            store,
            max_message_bytes,
            limits,
            secrets,
            identity,
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    #[tracing::instrument(name = "rooms.create_room", skip_all, fields(chat.room = %room))]
    pub async fn create_room(
        &self,
        client: IpAddr,
        room: RoomId,
        joiner: Joiner,
        secret: Option<RoomSecret>,
    ) -> Result<Joined, ApiError> {
        self.limits.check_join(client)?;
        // Before anything about the room: who may not join learns nothing of it.
        let username = self.identity.username_for(&room, joiner).await?;
        let secret_hash = match secret {
            Some(secret) => Some(self.secrets.hash(secret).await?),
            None => None,
        };
        let (token, member) = mint(&room, &username);
        match self.store.create_room(member, secret_hash).await? {
            CreateOutcome::Created(last_event_id) => Ok(Joined {
                room,
                username,
                token,
                last_event_id,
            }),
            CreateOutcome::RoomExists => Err(ApiError::RoomExists),
        }
    }

    #[tracing::instrument(name = "rooms.join", skip_all, fields(chat.room = %room))]
    pub async fn join(
        &self,
        client: IpAddr,
        room: RoomId,
        joiner: Joiner,
        secret: Option<RoomSecret>,
    ) -> Result<Joined, ApiError> {
        self.limits.check_join(client)?;
        let username = self.identity.username_for(&room, joiner).await?;
        let expected_secret_hash = match self.store.room_access(&room).await? {
            RoomAccess::NotFound => return Err(ApiError::RoomNotFound),
            RoomAccess::Open => None,
            RoomAccess::Secret(hash) => {
                let Some(secret) = secret else {
                    return Err(ApiError::forbidden("this room needs its secret to join"));
                };
                self.limits.check_secret_attempt(client, &room)?;
                if !self.secrets.verify(secret, hash.clone()).await? {
                    self.limits.record_wrong_secret(client, &room);
                    return Err(ApiError::forbidden("wrong room secret"));
                }
                Some(hash)
            }
        };
        let (token, member) = mint(&room, &username);
        match self.store.join(member, expected_secret_hash).await? {
            JoinOutcome::Joined(last_event_id) => Ok(Joined {
                room,
                username,
                token,
                last_event_id,
            }),
            JoinOutcome::RoomNotFound => Err(ApiError::RoomNotFound),
            JoinOutcome::UsernameTaken => Err(ApiError::UsernameTaken),
            JoinOutcome::RoomFull => Err(ApiError::forbidden(
                "this room has the most members it may have",
            )),
            JoinOutcome::AccessChanged => Err(ApiError::forbidden(
                "the room changed while joining, try again",
            )),
            JoinOutcome::Banned => Err(ApiError::forbidden("this name is banned from this room")),
        }
    }

    /// `target` removed by the member whose token this is: itself (it leaves), or, when that
    /// member is the room's owner, another member (kicked, or banned with `ban`).
    #[tracing::instrument(name = "rooms.remove_by_member", skip_all, fields(chat.room = %room))]
    pub async fn remove_by_member(
        &self,
        room: &RoomId,
        token_hash: &TokenHash,
        target: &Username,
        ban: bool,
    ) -> Result<Removal, ApiError> {
        let by = Remover::Member(token_hash);
        match self.store.remove_member(room, target, by, ban).await? {
            RemoveOutcome::Left(id) => Ok(Removal::Left(id)),
            RemoveOutcome::Removed(id) => Ok(Removal::Removed(id)),
            refused => Err(removal_refused(refused)),
        }
    }

    /// Parses a message against `MAX_MESSAGE_BYTES`.
    pub fn message(&self, raw: String) -> Result<MessageText, ApiError> {
        MessageText::parse(raw, self.max_message_bytes)
    }

    pub async fn post(
        &self,
        room: RoomId,
        token_hash: TokenHash,
        message: MessageText,
        idempotency_key: Option<ClientMsgId>,
    ) -> Result<ChatMessage, ApiError> {
        let message = NewMessage {
            text: message,
            idempotency_key,
        };
        self.post_in_order(room, token_hash, vec![message])
            .await
            .pop()
            .expect("post_in_order answers once per message given")
    }

    /// Posts a member's messages in the order given, as one store step, so none can land
    /// after a later one even when a step is retried. The answer has one entry per message,
    /// in order: a message over the member's rate limit is refused on its own, and when the
    /// step fails, every other message fails with it (none was stored).
    #[tracing::instrument(
        name = "rooms.post",
        skip_all,
        fields(chat.room = %room, chat.messages = messages.len())
    )]
    pub async fn post_in_order(
        &self,
        room: RoomId,
        token_hash: TokenHash,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<ChatMessage, ApiError>> {
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut admitted = Vec::with_capacity(messages.len());
        for message in messages {
            let verdict = self.limits.check_message(&room, &token_hash);
            if verdict.is_ok() {
                admitted.push(message);
            }
            verdicts.push(verdict);
        }
        let stored = if admitted.is_empty() {
            Ok(Vec::new())
        } else {
            let batch = NewMessages {
                room,
                token_hash,
                messages: admitted,
            };
            match self.store.post(batch).await {
                Ok(PostOutcome::Posted(events)) => Ok(events),
                Ok(PostOutcome::Unauthorized) => Err(ApiError::Unauthorized),
                Err(err) => Err(ApiError::from(err)),
            }
        };
        let mut stored = match stored {
            Ok(events) => events.into_iter(),
            Err(failed) => {
                return verdicts
                    .into_iter()
                    .map(|verdict| verdict.and(Err(failed.clone())))
                    .collect();
            }
        };
        verdicts
            .into_iter()
            .map(|verdict| {
                verdict?;
                match stored.next() {
                    Some(Ok(event)) => event.as_chat().ok_or_else(store_answered_otherwise),
                    Some(Err(KeyReused)) => Err(ApiError::invalid(
                        "this idempotency key was used for another message, which is no longer kept",
                    )),
                    None => Err(store_answered_otherwise()),
                }
            })
            .collect()
    }

    /// The member whose token this is is typing: within its rate limit (posts' quota, a
    /// bucket of its own), the store publishes a `typing` unless one of this member's went out
    /// within `TYPING_EVERY`. Dropped or published, the call succeeds.
    #[tracing::instrument(name = "rooms.typing", skip_all, fields(chat.room = %room))]
    pub async fn typing(&self, room: &RoomId, token_hash: &TokenHash) -> Result<(), ApiError> {
        self.limits.check_typing(room, token_hash)?;
        let published = authorized(self.store.typing(room, token_hash).await?)?;
        if !published {
            metrics::counter!("chat_typing_throttled_total").increment(1);
        }
        Ok(())
    }

    /// Edits a chat message for its author (a post's rate limit applies): the message as it
    /// stands. Editing to the text it has already changes nothing and answers the same, so a
    /// retried edit lands once.
    #[tracing::instrument(name = "rooms.edit_message", skip_all, fields(chat.room = %room))]
    pub async fn edit_message(
        &self,
        room: &RoomId,
        token_hash: &TokenHash,
        id: EventId,
        message: MessageText,
    ) -> Result<ChatMessage, ApiError> {
        self.limits.check_message(room, token_hash)?;
        let outcome = self
            .store
            .edit_message(room, token_hash, id, message)
            .await?;
        revised(outcome, "only its author may edit a message")
    }

    /// Deletes a chat message for its author or the room's owner (a post's rate limit
    /// applies). A retry finds it gone: `not_found`.
    #[tracing::instrument(name = "rooms.delete_message", skip_all, fields(chat.room = %room))]
    pub async fn delete_message(
        &self,
        room: &RoomId,
        token_hash: &TokenHash,
        id: EventId,
    ) -> Result<(), ApiError> {
        self.limits.check_message(room, token_hash)?;
        let outcome = self.store.delete_message(room, token_hash, id).await?;
        revised(
            outcome,
            "only its author or the room's owner may delete a message",
        )
        .map(|_| ())
    }

    #[tracing::instrument(name = "rooms.history", skip_all, fields(chat.room = %room))]
    pub async fn history(
        &self,
        room: &RoomId,
        token_hash: &TokenHash,
        before: Option<EventId>,
        limit: usize,
    ) -> Result<HistoryPage, ApiError> {
        if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
            return Err(ApiError::invalid("limit must be between 1 and 200"));
        }
        authorized(self.store.history(room, token_hash, before, limit).await?)
    }

    #[tracing::instrument(name = "rooms.members", skip_all, fields(chat.room = %room))]
    pub async fn members(
        &self,
        room: &RoomId,
        token_hash: &TokenHash,
    ) -> Result<Vec<MemberInfo>, ApiError> {
        authorized(self.store.members(room, token_hash).await?)
    }

    /// Checks a member's token (refreshing its lease) and names its member.
    pub async fn authenticate(
        &self,
        room: &RoomId,
        token_hash: &TokenHash,
    ) -> Result<Username, ApiError> {
        authorized(self.store.authenticate(room, token_hash).await?)
    }

    /// Issues a single-use stream ticket, valid for `ttl`, for the member whose token this is
    /// (refreshing its lease): an SSE URL carries it instead of the token.
    #[tracing::instrument(name = "rooms.issue_ticket", skip_all, fields(chat.room = %room))]
    pub async fn issue_ticket(
        &self,
        room: &RoomId,
        token_hash: &TokenHash,
        ttl: Duration,
    ) -> Result<StreamTicket, ApiError> {
        let ticket = StreamTicket::generate();
        let answer = self
            .store
            .issue_ticket(room, token_hash, &ticket.hash(), ttl.as_secs())
            .await?;
        authorized(answer).map(|()| ticket)
    }

    /// Spends a stream ticket of this room (refreshing its member's lease) and names its
    /// member. Spent, expired, unknown, another room's or a departed member's: all the same
    /// 401, so a probe learns nothing.
    #[tracing::instrument(name = "rooms.redeem_ticket", skip_all, fields(chat.room = %room))]
    pub async fn redeem_ticket(
        &self,
        room: &RoomId,
        ticket: &StreamTicket,
    ) -> Result<Username, ApiError> {
        authorized(self.store.redeem_ticket(room, &ticket.hash()).await?)
    }
}

/// The store could not be asked: the client may retry (nothing was half-written).
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable => ApiError::Unavailable,
        }
    }
}

/// The error of a removal that did not happen (both removers' refusals; a removal that did
/// is the caller's to answer).
fn removal_refused(outcome: RemoveOutcome) -> ApiError {
    match outcome {
        RemoveOutcome::RoomNotFound => ApiError::RoomNotFound,
        RemoveOutcome::NotMember => ApiError::NotMember,
        RemoveOutcome::Unauthorized => ApiError::Unauthorized,
        RemoveOutcome::Forbidden => {
            ApiError::forbidden("only the room's owner may remove another member")
        }
        RemoveOutcome::OwnBan => {
            ApiError::forbidden("a member may not ban its own name; leave without ban instead")
        }
        RemoveOutcome::Left(_) | RemoveOutcome::Removed(_) | RemoveOutcome::BannedOnly => {
            tracing::error!("the store answered a removal with an outcome its remover cannot have");
            ApiError::Unavailable
        }
    }
}

fn store_answered_otherwise() -> ApiError {
    tracing::error!("the store answered a post with fewer or other events");
    ApiError::Unavailable
}

/// A new member's token (for the client) and what the store keeps of it (the hash).
fn mint(room: &RoomId, username: &Username) -> (MemberToken, NewMember) {
    let token = MemberToken::generate();
    let member = NewMember {
        room: room.clone(),
        username: username.clone(),
        token_hash: token.hash(),
    };
    (token, member)
}

fn revised<T>(outcome: Revised<T>, forbidden: &str) -> Result<T, ApiError> {
    match outcome {
        Revised::Done(value) => Ok(value),
        Revised::Unauthorized => Err(ApiError::Unauthorized),
        Revised::NotFound => Err(ApiError::NotFound),
        Revised::Forbidden => Err(ApiError::forbidden(forbidden)),
    }
}

fn authorized<T>(answer: Authorized<T>) -> Result<T, ApiError> {
    match answer {
        Authorized::Member(value) => Ok(value),
        Authorized::Unauthorized => Err(ApiError::Unauthorized),
    }
}
