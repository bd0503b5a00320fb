//! The session core: what a connection holding memberships means, whatever its transport.
//! A [`Session`] owns a connection's memberships and the rules that admit and end them (join,
//! create, resume, leave, a removal seen in the room's events, a room lost and created anew),
//! the subscription and presence hold each one keeps, the batching of a run of chat posts, and
//! the typed replies ([`reply`]). A transport (`http::ws`, `http::sse`, socket.io next) only
//! moves frames: it decodes client events, hands them to its session, writes the replies, and
//! writes the room frames the session [`admits`](Session::admit), each in its own encoding.
//! Nothing here knows about HTTP, axum or a wire format. Centrifuge's `Client`, shared by all
//! its transports, is the model.
//!
//! Ordering is the transport's one duty: it must write a client event's reply before it reads
//! the session's inbox again, which is what puts every `ack` before the broadcasts the event
//! caused. The session does its part: it subscribes *before* the join it belongs to (the join
//! event must reach it) and skips frames older than the join, so the connection sees its own
//! join and everything after it exactly once.

mod close;
mod held;
mod reply;
mod run;

pub use close::Close;
pub use reply::{
    DeletedResponse, GapNotice, JoinedResponse, LeftResponse, Reply, ResumedResponse,
    TypingResponse,
};
pub use run::{POST_RUN, PostRun};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::domain::{ChatMessage, EventId, MemberToken, RoomId, TokenHash, Username};
use crate::error::ApiError;
use crate::hub::{Frame, Hub, Inbox, Mailbox, mailbox};
use crate::identity::{IdToken, Joiner};
use crate::presence::Presence;
use crate::protocol::{ClientEvent, Delete, Edit, Join, Remove, Resume, Typing};
use crate::rooms::{Removal, Rooms};
use crate::telemetry;
use held::{Held, Holdings};

/// What every session of this instance shares; built once by the app.
pub struct Core {
    pub rooms: Rooms,
    pub hub: Hub,
    pub presence: Presence,
    /// `MAX_ROOMS_PER_CONNECTION`: memberships one connection may hold.
    pub max_rooms: usize,
    /// `CLIENT_QUEUE_LEN`: events waiting for a connection before it is too slow.
    pub queue_len: usize,
    /// Cancelled on shutdown: every session's inbox closes with it.
    pub stopping: CancellationToken,
}

/// One connection's memberships. The transport keeps the [`Inbox`] it was opened with and
/// reads the room frames there.
pub struct Session {
    core: Arc<Core>,
    /// Joins are rate limited per client address.
    client: IpAddr,
    /// The sending side of the connection's queue, cloned into each subscription.
    mailbox: Mailbox,
    held: Holdings,
    /// The JWT the connection presented when it opened (socket.io's handshake `auth`), for
    /// joins that carry none of their own.
    id_token: Option<IdToken>,
}

/// A membership attached to a session with the logged events after the id asked for: the
/// reply goes out first, then the replay (each frame through [`Session::admit`]).
pub struct Resumed {
    pub reply: ResumedResponse,
    pub replay: Vec<Arc<Frame>>,
}

/// What a client event is answered with: the reply, then the frames that follow it (a
/// resume's replay, each through [`Session::admit`]).
pub struct Answer {
    pub reply: Reply,
    pub follow: Vec<Arc<Frame>>,
}

impl Session {
    /// A session holding nothing yet, and the inbox its room frames arrive in.
    pub fn open(core: Arc<Core>, client: IpAddr) -> (Self, Inbox) {
        let (mailbox, inbox) = mailbox(core.queue_len, &core.stopping);
        let session = Self {
            core,
            client,
            mailbox,
            held: Holdings::default(),
            id_token: None,
        };
        (session, inbox)
    }

    /// The JWT the connection's handshake carried (see `id_token`).
    pub fn set_id_token(&mut self, id_token: Option<IdToken>) {
        self.id_token = id_token;
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Why `inbox` (this session's) closed: the close to end the connection with.
    pub fn why_closed(&self, inbox: &Inbox) -> Close {
        Close::of_inbox(inbox, &self.core.stopping)
    }

    /// Whether `frame` belongs to a membership this session holds (then the transport writes
    /// it), doing the bookkeeping when it ends one: the member's removal is the last frame of
    /// its membership, and a room created anew after the membership began is no longer its
    /// room (see `held`).
    pub fn admit(&mut self, frame: &Frame) -> bool {
        self.held.admit(frame)
    }

    /// Whether every membership has ended (a stream of one room ends then).
    pub fn holds_nothing(&self) -> bool {
        self.held.is_empty()
    }

    /// Lets go of every membership: subscriptions and presence holds end now, before a
    /// transport waits on a client that may never read its close.
    pub fn end(&mut self) {
        self.held.clear();
    }

    /// Handles one client event. A chat post goes alone here; a transport that can see posts
    /// waiting behind it batches them with [`Session::start_run`] instead.
    pub async fn handle(&mut self, event: ClientEvent) -> Result<Answer, ApiError> {
        let reply = match event {
            ClientEvent::CreateRoom(join) => Reply::Joined(self.join(join, true).await?),
            ClientEvent::AddMember(join) => Reply::Joined(self.join(join, false).await?),
            ClientEvent::RemoveMember(remove) => Reply::Left(self.leave(remove).await?),
            ClientEvent::UpdateChat(edit) => Reply::Edited(self.edit_message(edit).await?),
            ClientEvent::DeleteChat(delete) => Reply::Deleted(self.delete_message(delete).await?),
            ClientEvent::Resume(resume) => {
                let Resumed { reply, replay } = self.resume(resume).await?;
                return Ok(Answer {
                    reply: Reply::Resumed(reply),
                    follow: replay,
                });
            }
            ClientEvent::CreateChat(chat) => {
                let run = self.start_run(chat, false).await;
                let answer = self.post_run(run).await.pop();
                Reply::Posted(answer.expect("a run of one post is answered once")?)
            }
            ClientEvent::Typing(typing) => Reply::Typing(self.typing(typing).await?),
        };
        Ok(Answer {
            reply,
            follow: Vec::new(),
        })
    }

    /// [`Session::handle`] of a decoded client event, or its refusal, inside the event's `span`
    /// (see `telemetry::client_event_span!`), recording the outcome and the handling time in
    /// the transport's `histogram` under `label`.
    pub async fn handle_traced(
        &mut self,
        event: Result<ClientEvent, ApiError>,
        label: &'static str,
        span: &Span,
        histogram: &'static str,
        started: Instant,
    ) -> Result<Answer, ApiError> {
        let outcome = match event {
            Ok(event) => self.handle(event).instrument(span.clone()).await,
            Err(err) => Err(err),
        };
        telemetry::finish_client_event(span, histogram, label, started, outcome.as_ref().err(), 1);
        outcome
    }

    /// `create:room` (`create`) or `add:member`: the member joins, and this session holds it.
    pub async fn join(&mut self, join: Join, create: bool) -> Result<JoinedResponse, ApiError> {
        let Join {
            room,
            username,
            secret,
            id_token,
        } = join;
        let joiner = Joiner {
            username,
            id_token: id_token.or_else(|| self.id_token.clone()),
        };
        // Creating a room this session holds goes to the store on the subscription the
        // membership has: a second one, live before the store answers `room_exists`, would
        // push every event of that moment twice. (The store creates it only if the room was
        // lost meanwhile; the new membership then takes over the subscription.)
        let recreating = create && self.held.contains(&room);
        let subscription = if recreating {
            None
        } else {
            if create {
                self.ensure_room_for_one_more()?;
            } else {
                self.ensure_not_held(&room)?;
            }
            // Live before the join, so the join event and everything after it arrive here.
            let (subscription, _) = self.core.hub.subscribe(&room, None, &self.mailbox).await?;
            Some(subscription)
        };
        let rooms = &self.core.rooms;
        let joined = if create {
            rooms
                .create_room(self.client, room.clone(), joiner, secret)
                .await?
        } else {
            rooms
                .join(self.client, room.clone(), joiner, secret)
                .await?
        };
        let subscription = match subscription {
            Some(subscription) => subscription,
            None => self
                .held
                .remove(&room)
                .expect(
                    "a held room stays held while its create awaits: only this &mut self ends it",
                )
                .into_subscription(),
        };
        // A new room's events are all its creator's to see; in an existing room, from the join.
        let from = if create {
            EventId::ZERO
        } else {
            joined.last_event_id
        };
        let presence = self.core.presence.hold(&room, joined.username.key()).await;
        self.held.insert(
            room,
            Held::new(
                joined.username.clone(),
                Some(joined.token.hash()),
                from,
                joined.last_event_id,
                subscription,
                presence,
            ),
        );
        Ok(joined.into())
    }

    /// `remove:member`: under the membership this session holds in the room, or the token the
    /// event carries. Leaving its own membership, the session forwards the room up to the
    /// removal (the member sees it) and lets go of the member's presence at once. The room's
    /// owner removing another member keeps its own membership; the removed member's sessions,
    /// wherever they are, end its membership when they see the removal.
    pub async fn leave(&mut self, remove: Remove) -> Result<LeftResponse, ApiError> {
        let Remove {
            room,
            username: target,
            token,
            ban,
        } = remove;
        let token_hash = self.acting_as(&room, token)?;
        let removal = self
            .core
            .rooms
            .remove_by_member(&room, &token_hash, &target, ban)
            .await
            .map_err(not_member)?;
        if let Removal::Left(left_at) = removal {
            self.held.leaving(&room, &token_hash, left_at);
        }
        Ok(LeftResponse {
            room_id: room.to_string(),
            username: target.into_string(),
            last_event_id: removal.event_id(),
        })
    }

    /// `update:chat`: under the membership this session holds in the room, or the token the
    /// event carries. Answers the message as it stands.
    pub async fn edit_message(&mut self, edit: Edit) -> Result<ChatMessage, ApiError> {
        let Edit {
            room,
            id,
            message,
            token,
        } = edit;
        let token_hash = self.acting_as(&room, token)?;
        self.core
            .rooms
            .edit_message(&room, &token_hash, id, message)
            .await
            .map_err(not_member)
    }

    /// `delete:chat`: under the membership this session holds in the room, or the token the
    /// event carries.
    pub async fn delete_message(&mut self, delete: Delete) -> Result<DeletedResponse, ApiError> {
        let Delete { room, id, token } = delete;
        let token_hash = self.acting_as(&room, token)?;
        self.core
            .rooms
            .delete_message(&room, &token_hash, id)
            .await
            .map_err(not_member)?;
        Ok(DeletedResponse {
            room_id: room.to_string(),
            id,
        })
    }

    /// `typing`: under the membership this session holds in the room, or the token the event
    /// carries. The store publishes it unless the member's throttle runs; either way the
    /// client's event is taken.
    pub async fn typing(&mut self, typing: Typing) -> Result<TypingResponse, ApiError> {
        let Typing { room, token } = typing;
        let token_hash = self.acting_as(&room, token)?;
        self.core
            .rooms
            .typing(&room, &token_hash)
            .await
            .map_err(not_member)?;
        Ok(TypingResponse {
            room_id: room.to_string(),
        })
    }

    /// Whose token an event for `room` acts under: the membership this session holds there
    /// (not leaving), else the token the event carries; neither is `not_member`.
    fn acting_as(&self, room: &RoomId, token: Option<MemberToken>) -> Result<TokenHash, ApiError> {
        match self.held.to_post(room).and_then(Held::token_hash) {
            Some(token_hash) => Ok(token_hash.clone()),
            None => token.map(|token| token.hash()).ok_or(ApiError::NotMember),
        }
    }

    /// `resume`: the token's membership is held by this session again, with the events
    /// after `last_event_id` replayed.
    pub async fn resume(&mut self, resume: Resume) -> Result<Resumed, ApiError> {
        let Resume {
            room,
            token,
            last_event_id: after,
        } = resume;
        self.ensure_not_held(&room)?;
        let token_hash = token.hash();
        let username = self.core.rooms.authenticate(&room, &token_hash).await?;
        self.attach(room, username, Some(token_hash), after).await
    }

    /// Holds `username`'s membership in `room`, already authorized (by its token, or by a
    /// stream ticket: then `token_hash` is `None` and nothing is posted under it), replaying
    /// the events after `after` (`None`: live from now).
    pub async fn attach(
        &mut self,
        room: RoomId,
        username: Username,
        token_hash: Option<TokenHash>,
        after: Option<EventId>,
    ) -> Result<Resumed, ApiError> {
        self.ensure_not_held(&room)?;
        let (subscription, replay) = self.core.hub.subscribe(&room, after, &self.mailbox).await?;
        let presence = self.core.presence.hold(&room, username.key()).await;
        let reply = ResumedResponse {
            room_id: room.to_string(),
            username: username.as_str().to_owned(),
            replayed: replay.events.len(),
            complete: replay.complete,
        };
        // The replay may reach back past an earlier membership of this name.
        let joined_at = replay.joined_at(&username);
        self.held.insert(
            room,
            Held::new(
                username,
                token_hash,
                EventId::ZERO,
                joined_at,
                subscription,
                presence,
            ),
        );
        Ok(Resumed {
            reply,
            replay: replay.events,
        })
    }

    fn ensure_not_held(&self, room: &RoomId) -> Result<(), ApiError> {
        if self.held.contains(room) {
            return Err(ApiError::invalid(
                "this connection already holds a membership in this room",
            ));
        }
        self.ensure_room_for_one_more()
    }

    fn ensure_room_for_one_more(&self) -> Result<(), ApiError> {
        if self.held.len() >= self.core.max_rooms {
            return Err(ApiError::forbidden(
                "this connection holds the most rooms it may; use another connection",
            ));
        }
        Ok(())
    }
}

/// An action for a room without a valid membership is `not_member` on a connection (REST
/// says `unauthorized`).
fn not_member(err: ApiError) -> ApiError {
    match err {
        ApiError::Unauthorized => ApiError::NotMember,
        other => other,
    }
}
