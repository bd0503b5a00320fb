//! A run of chat posts: `create:chat` events already waiting behind one another on a
//! connection, stored as one step (one round trip, in the order sent) and answered together.
//! A sender that outpaces the store's round trip gets one round trip per run instead of a
//! growing queue; one step per run keeps its messages in order even when the step is retried.
//!
//! The transport decides what is *waiting* (what it can read without waiting); the session
//! decides what may *join* the run: posts to the same room under the membership it holds,
//! claiming no other name. A post carrying its own token is checked on its own.

use std::time::Instant;

use tracing::{Instrument, Span};

use crate::domain::{ChatMessage, RoomId, TokenHash};
use crate::error::ApiError;
use crate::protocol::Chat;
use crate::store::NewMessage;
use crate::telemetry;

use super::held::Held;
use super::{Session, not_member};

/// How many chat posts one store step takes at most.
pub const POST_RUN: usize = 32;

/// Posts to one room, under one poster, to be stored as one step.
pub struct PostRun {
    room: RoomId,
    /// Who posts (its token hash), or why the first post is refused.
    poster: Result<TokenHash, ApiError>,
    messages: Vec<NewMessage>,
    /// Whether more posts may join: the first went out under a held membership.
    open: bool,
}

impl PostRun {
    /// How many posts the run holds (one answer each).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether the run takes another post at all (before looking at it).
    pub fn wants_more(&self) -> bool {
        self.open && self.messages.len() < POST_RUN
    }

    /// Adds a post that [`Session::run_takes`].
    pub fn push(&mut self, next: Chat) {
        self.messages.push(to_post(next).1);
    }
}

impl Session {
    /// Starts a run with `chat`; `may_extend` false keeps it a run of one (the transport's
    /// fairness: a frame that ended a run takes no run of its own).
    pub async fn start_run(&mut self, chat: Chat, may_extend: bool) -> PostRun {
        // Only posts under a held membership form a run: a token in the event is checked
        // per event.
        let open = may_extend && self.may_post_as_held(&chat);
        let poster = self.poster(&chat).await;
        let (room, message) = to_post(chat);
        PostRun {
            room,
            poster,
            messages: vec![message],
            open,
        }
    }

    /// Whether `next` may join `run` (then [`PostRun::push`] it).
    pub fn run_takes(&self, run: &PostRun, next: &Chat) -> bool {
        run.wants_more() && next.room == run.room && self.may_post_as_held(next)
    }

    /// Stores the run: one answer per post, in order (the stored message, or why not).
    pub async fn post_run(&self, run: PostRun) -> Vec<Result<ChatMessage, ApiError>> {
        let PostRun {
            room,
            poster,
            messages,
            ..
        } = run;
        match poster {
            Ok(token_hash) => self
                .core
                .rooms
                .post_in_order(room, token_hash, messages)
                .await
                .into_iter()
                .map(|answer| answer.map_err(not_member))
                .collect(),
            Err(err) => vec![Err(err)],
        }
    }

    /// [`Session::post_run`] inside a client event's `span` (see
    /// `telemetry::client_event_span!`), recording the run's size, its first refusal and its
    /// handling time (`histogram`, the transport's) once per post.
    pub async fn post_run_traced(
        &self,
        run: PostRun,
        span: &Span,
        histogram: &'static str,
        started: Instant,
    ) -> Vec<Result<ChatMessage, ApiError>> {
        span.record("chat.messages", run.len());
        let answers = self.post_run(run).instrument(span.clone()).await;
        let first_refusal = answers.iter().find_map(|answer| answer.as_ref().err());
        telemetry::finish_client_event(
            span,
            histogram,
            "create:chat",
            started,
            first_refusal,
            answers.len(),
        );
        answers
    }

    /// Who posts `chat` (its token hash): the membership this session holds in the room, or
    /// the member whose token the event carries.
    async fn poster(&self, chat: &Chat) -> Result<TokenHash, ApiError> {
        if let Some(held) = self.held.to_post(&chat.room)
            && let Some(token_hash) = held.token_hash()
        {
            if !posts_as(held, chat) {
                return Err(ApiError::forbidden(
                    "username is not the name this connection holds in the room",
                ));
            }
            return Ok(token_hash.clone());
        }
        let token_hash = chat
            .token
            .as_ref()
            .map(|token| token.hash())
            .ok_or(ApiError::NotMember)?;
        if let Some(claimed) = &chat.username {
            let member = self
                .core
                .rooms
                .authenticate(&chat.room, &token_hash)
                .await
                .map_err(not_member)?;
            if member.key() != claimed.key() {
                return Err(ApiError::forbidden("username is not the token's member"));
            }
        }
        Ok(token_hash)
    }

    /// Whether a post may go out under the membership this session holds in its room: it
    /// holds one, and the post claims no other name.
    fn may_post_as_held(&self, chat: &Chat) -> bool {
        self.held
            .to_post(&chat.room)
            .is_some_and(|held| held.token_hash().is_some() && posts_as(held, chat))
    }
}

/// A `create:chat`'s room, and the message to store there.
fn to_post(chat: Chat) -> (RoomId, NewMessage) {
    let message = NewMessage {
        text: chat.message,
        idempotency_key: chat.client_msg_id,
    };
    (chat.room, message)
}

/// Whether a post may go out under `held`: it claims no other name.
fn posts_as(held: &Held, chat: &Chat) -> bool {
    chat.username
        .as_ref()
        .is_none_or(|claimed| claimed.key() == held.username().key())
}
