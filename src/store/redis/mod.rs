//! The Redis store: every room change is one Lua script (one round trip, atomic), and all of a
//! room's keys share the hash tag `{roomId}` so the script touches one Cluster slot. This file
//! holds [`RedisStore`] and its [`RoomLog`] and [`Holds`] implementations; the rest is split by
//! concern:
//!
//! - `keys`: every key and channel name, in the order the scripts expect them;
//! - `admin`: the server API's operations and the room index it lists rooms from;
//! - `replies`: script replies decoded into typed values;
//! - `lease`: the lease index and the sweep;
//! - `connection`: the command connection, to one Redis or to a cluster;
//! - `feed`: [`RedisFeed`], the pub/sub connection that delivers events to the hub;
//! - `sharded_feed`: the feed on a cluster, with sharded pub/sub;
//! - `durable`: `REDIS_WAIT_REPLICAS`, the writes acknowledged once replicas hold them.
//!
//! Data model (see `scripts/prelude.lua` for the key list each script gets):
//! `room:{id}:meta` (with the room's owner and bans), `:members`, `:tokens`, `:leases`,
//! `:log` (a stream holding the last `HISTORY_LIMIT` events and, trimmed lazily, up to a
//! stream node more that no reader returns), `:online` and `:names` (the identity keys that
//! make look-alikes of members' names taken), `:holders` (which instances hold each online
//! member: how a script tells a first or last online mark, to publish `presence`), plus
//! `room:{id}:idem:<token hash>:<key>` strings for
//! idempotent sends and `room:{id}:ticket:<ticket hash>` strings (the member's token hash,
//! with the ticket's lifetime as their TTL) for stream tickets, and
//! `room:{id}:typing:<token hash>` (a member's `typing` throttle, `TYPING_EVERY` long).
//! Ephemeral events are published on the room's channel as `ephemeral:` followed by a JSON
//! array, by the script that decides on them, and kept nowhere. Event ids come from `XADD *`
//! and timestamps from Redis's clock, so every instance agrees on them.
//!
//! Every command runs under `REDIS_TIMEOUT_MS`; the connection manager reconnects by itself,
//! so the store recovers when Redis comes back without a restart.

mod admin;
mod connection;
mod durable;
mod feed;
mod keys;
mod lease;
mod replies;
mod sharded_feed;

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use tracing::{Instrument, Span};

use self::connection::Connection;
use self::durable::Durable;
pub use self::feed::RedisFeed;
use self::keys::RoomKeys;
use self::replies::{PostAnswer, Reply, array, history_entry, malformed, stream_entry, text};
use super::memory::page_from_newest_first;
use super::{
    Authorized, CreateOutcome, HistoryPage, Holds, JoinOutcome, KeyReused, LogRead, MemberInfo,
    NewMember, NewMessages, PostOutcome, RemoveOutcome, Remover, Revised, RoomAccess, RoomLog,
    StoreError, StoreFuture, StoreResult, StoreSettings,
};
use crate::config::Durability;
use crate::domain::{
    ChatMessage, EventId, EventKind, MessageText, RoomEvent, RoomId, TYPING_EVERY, TokenHash,
    Username,
};

/// A room script: prelude.lua, the libraries it names (each function a script defines costs
/// it a closure per run, so each script gets only those it uses), then its own text.
macro_rules! room_script {
    ($file:literal $(, $library:literal)*) => {
        LazyLock::new(|| {
            RoomScript::new(concat!(
                include_str!("scripts/prelude.lua"),
                $(include_str!(concat!("scripts/", $library)),)*
                "local function script_body()\n",
                include_str!(concat!("scripts/", $file)),
                include_str!("scripts/epilogue.lua")
            ))
        })
    };
}

/// How prelude.lua publishes an event; a cluster's variant of each script says `SPUBLISH`
/// instead (allowed in a script: the channel has the room's hash tag, so the script's slot).
const PUBLISH_CALL: &str = "redis.call('PUBLISH', channel,";
const SPUBLISH_CALL: &str = "redis.call('SPUBLISH', channel,";

/// A room script in its two variants: events published with `PUBLISH` on a single Redis
/// (which may predate the sharded commands of Redis 7) and `SPUBLISH` on a cluster.
struct RoomScript {
    plain: Script,
    sharded: Script,
}

impl RoomScript {
    fn new(text: &str) -> Self {
        Self {
            plain: Script::new(text),
            sharded: Script::new(&text.replace(PUBLISH_CALL, SPUBLISH_CALL)),
        }
    }
}

static CREATE: LazyLock<RoomScript> = room_script!("create.lua", "membership.lua");
static JOIN: LazyLock<RoomScript> = room_script!("join.lua", "membership.lua");
static REMOVE: LazyLock<RoomScript> = room_script!("remove.lua", "membership.lua");
static POST: LazyLock<RoomScript> = room_script!("post.lua");
static AUTHENTICATE: LazyLock<RoomScript> = room_script!("authenticate.lua");
static EDIT_MESSAGE: LazyLock<RoomScript> = room_script!("edit_message.lua", "revisions.lua");
static DELETE_MESSAGE: LazyLock<RoomScript> = room_script!("delete_message.lua", "revisions.lua");
static HISTORY: LazyLock<RoomScript> = room_script!("history.lua", "revisions.lua");
static READ_LOG: LazyLock<RoomScript> = room_script!("read_log.lua");
static MEMBERS: LazyLock<RoomScript> = room_script!("members.lua");
static SWEEP_ROOM: LazyLock<RoomScript> = room_script!("sweep_room.lua", "membership.lua");
static ISSUE_TICKET: LazyLock<RoomScript> = room_script!("issue_ticket.lua");
static REDEEM_TICKET: LazyLock<RoomScript> = room_script!("redeem_ticket.lua");
static HOLD: LazyLock<RoomScript> = room_script!("hold.lua", "ephemeral.lua");
static RELEASE: LazyLock<RoomScript> = room_script!("release.lua", "ephemeral.lua");
static TYPING: LazyLock<RoomScript> = room_script!("typing.lua", "ephemeral.lua");
static POST_AS: LazyLock<RoomScript> = room_script!("post_as.lua");
static DELETE_ROOM: LazyLock<RoomScript> = room_script!("delete_room.lua");
static ROOM_SUMMARY: LazyLock<RoomScript> = room_script!("room_summary.lua");

pub struct RedisStore {
    connection: Connection,
    /// On a cluster: scripts publish with `SPUBLISH`, for the sharded feed.
    sharded: bool,
    /// `Some` under `REDIS_WAIT_REPLICAS`: where acknowledged writes go, and wait.
    durable: Option<Durable>,
    settings: StoreSettings,
    timeout: Duration,
    /// Names this process in the online marks it writes, so instances refresh and release
    /// only their own.
    instance_id: String,
}

impl RedisStore {
    /// Sets up the store without waiting for Redis: the first commands connect, and until
    /// Redis answers they fail with `Unavailable` (and `/readyz` says 503).
    pub fn new(
        target: crate::config::RedisTarget,
        settings: StoreSettings,
        timeout: Duration,
        durability: Durability,
    ) -> redis::RedisResult<Self> {
        let sharded = matches!(target, crate::config::RedisTarget::Cluster(_));
        let durable = Durable::new(&target, durability, timeout)?;
        let connection = Connection::new(&target, timeout, timeout)?;
        Ok(Self {
            sharded,
            connection,
            durable,
            settings,
            timeout,
            instance_id: format!("{:016x}", rand::random::<u64>()),
        })
    }

    /// Runs one Redis exchange under the timeout; any failure is `Unavailable` to callers and
    /// a warning in the log (without arguments, which may hold token hashes or messages).
    async fn run<T>(
        &self,
        what: &'static str,
        exchange: impl Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        self.run_within(what, self.timeout, exchange).await
    }

    /// [`RedisStore::run`] with a deadline of its own (a write that waits for replicas).
    async fn run_within<T>(
        &self,
        what: &'static str,
        timeout: Duration,
        exchange: impl Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        let started = std::time::Instant::now();
        let span = exchange_span(what);
        let result = tokio::time::timeout(timeout, exchange)
            .instrument(span.clone())
            .await;
        if !matches!(result, Ok(Ok(_))) {
            span.record("otel.status_code", "error");
        }
        metrics::histogram!("chat_redis_round_trip_seconds", "op" => what)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                metrics::counter!("chat_store_errors_total", "op" => what).increment(1);
                if certificate_refused(&err) {
                    // A setting to fix, not an outage: say which.
                    tracing::warn!(
                        op = what,
                        error = %err,
                        "redis TLS certificate check failed (see REDIS_TLS_VERIFY and SSL_CERT_FILE)"
                    );
                } else {
                    tracing::warn!(op = what, error = %err, kind = ?err.kind(), "redis command failed");
                }
                Err(StoreError::Unavailable)
            }
            Err(_) => {
                metrics::counter!("chat_store_errors_total", "op" => what).increment(1);
                tracing::warn!(
                    op = what,
                    timeout_ms = timeout.as_millis() as u64,
                    "redis command timed out"
                );
                Err(StoreError::Unavailable)
            }
        }
    }

    /// Runs a room script, with the room's keys and the leading arguments every room script
    /// takes; `mark` first marks the room in its lease index bucket for an early sweep (a
    /// separate command: the bucket is in another slot). After a Redis restart the script
    /// cache is empty: the script is loaded and the exchange sent once more, which is safe
    /// because nothing of the first one ran. Under `REDIS_WAIT_REPLICAS`, a write
    /// acknowledged to a client ([`acknowledged`]) is `Unavailable` unless that many replicas
    /// hold it.
    async fn room_script(
        &self,
        what: &'static str,
        script: &RoomScript,
        room: &RoomId,
        extra_keys: &[&str],
        args: &[&str],
        mark: bool,
    ) -> StoreResult<Reply> {
        let acked = acknowledged(script);
        let script = if self.sharded {
            &script.sharded
        } else {
            &script.plain
        };
        if mark {
            // Before the script: if the mark fails, nothing was written.
            self.mark_for_sweep(room).await?;
        }
        let invocation = self.invocation(script, room, extra_keys, args);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let Some(durable) = self.durable.as_ref().filter(|_| acked) else {
            let (value,): (Value,) = self.query_scripts(what, &pipe, &[&invocation]).await?;
            return Reply::parse(value);
        };
        // `WAIT` in the same pipeline, on a write connection: see `durable`.
        durable.append_wait(&mut pipe);
        let (value, replicas): (Value, u64) = self
            .query_scripts_on(
                durable.connection(),
                self.timeout + durable.wait(),
                what,
                &pipe,
                &[&invocation],
            )
            .await?;
        let reply = Reply::parse(value)?;
        durable.check(what, replicas)?;
        Ok(reply)
    }

    /// A room script's invocation: the room's keys, `extra_keys`, then the arguments every room
    /// script takes (channel, history limit) and `args`.
    fn invocation<'s>(
        &self,
        script: &'s Script,
        room: &RoomId,
        extra_keys: &[&str],
        args: &[&str],
    ) -> redis::ScriptInvocation<'s> {
        let keys = RoomKeys::new(room);
        let mut invocation = script.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        // `extra_keys` are the script's own, from prelude.lua's `first_own_key` on.
        debug_assert_eq!(keys.all().len() + 1, keys::FIRST_OWN_KEY);
        for extra in extra_keys {
            invocation.key(*extra);
        }
        invocation.arg(keys.channel());
        invocation.arg(self.settings.history_limit);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
    }

    /// Sends a pipeline of script calls. After a Redis restart the script cache is empty:
    /// the scripts are loaded and the pipeline sent once more, which is safe because a
    /// NOSCRIPT reply means the script did not run.
    async fn query_scripts<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
        scripts: &[&redis::ScriptInvocation<'_>],
    ) -> StoreResult<T> {
        self.query_scripts_on(self.connection.clone(), self.timeout, what, pipe, scripts)
            .await
    }

    /// [`RedisStore::query_scripts`] on a given connection, under a given deadline.
    async fn query_scripts_on<T: redis::FromRedisValue>(
        &self,
        mut connection: Connection,
        timeout: Duration,
        what: &'static str,
        pipe: &redis::Pipeline,
        scripts: &[&redis::ScriptInvocation<'_>],
    ) -> StoreResult<T> {
        let exchange = async {
            match pipe.query_async::<T>(&mut connection).await {
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    for script in scripts {
                        script.load_async(&mut connection).await?;
                    }
                    pipe.query_async::<T>(&mut connection).await
                }
                other => other,
            }
        };
        self.run_within(what, timeout, exchange).await
    }

    fn lease_ttl(&self) -> String {
        self.settings.member_ttl_ms.to_string()
    }

    /// Runs a holds script (hold.lua, release.lua) once per room, with this instance's id,
    /// `args`, then the room's username keys; counts the `presence` events they told. One
    /// script per room, all sent at once: the rooms may be on different shards, and a pipeline
    /// on a cluster goes to one.
    async fn hold_scripts(
        &self,
        what: &'static str,
        script: &RoomScript,
        holds: &[(RoomId, Vec<String>)],
        args: &[&str],
    ) -> StoreResult<()> {
        let scripts = holds.iter().map(|(room, keys)| {
            let mut all: Vec<&str> = vec![&self.instance_id];
            all.extend_from_slice(args);
            all.extend(keys.iter().map(String::as_str));
            async move {
                let reply = self
                    .room_script(what, script, room, &[], &all, false)
                    .await?;
                match reply.status.as_str() {
                    "ok" => reply.int(0),
                    _ => Err(malformed("holds status")),
                }
            }
        });
        let told = futures_util::future::try_join_all(scripts).await?;
        super::count_published("presence", told.into_iter().map(|n| n as u64).sum());
        Ok(())
    }

    async fn add_member(
        &self,
        what: &'static str,
        script: &RoomScript,
        member: &NewMember,
        secret_hash: Option<&str>,
    ) -> StoreResult<Reply> {
        let max_members = self.settings.max_members_per_room.to_string();
        let lease_ttl = self.lease_ttl();
        let identity_keys = member.username.identity_keys();
        let mut args = vec![
            member.username.key(),
            member.username.as_str(),
            member.token_hash.as_str(),
            &lease_ttl,
            secret_hash.unwrap_or(""),
            &max_members,
        ];
        args.extend(identity_keys.iter().map(String::as_str));
        self.room_script(what, script, &member.room, &[], &args, true)
            .await
    }
}

/// Whether `script`'s answer tells a client its write was made (create, join, post, a member's
/// removal, a message's edit and deletion, and the server API's post and delete):
/// under `REDIS_WAIT_REPLICAS` only those wait for replicas. Housekeeping (holds, sweeps) and
/// lease refreshes on reads are not acknowledged to anyone, and do not wait.
fn acknowledged(script: &RoomScript) -> bool {
    [
        &*CREATE,
        &*JOIN,
        &*POST,
        &*REMOVE,
        &*EDIT_MESSAGE,
        &*DELETE_MESSAGE,
    ]
    .into_iter()
    .chain(admin::acknowledged_scripts())
    .any(|acked| std::ptr::eq(acked, script))
}

/// Whether the TLS handshake refused the server's certificate (rustls' `InvalidCertificate`,
/// which reaches us inside tokio-rustls' `io::Error` inside redis' `Arc`).
fn certificate_refused(err: &redis::RedisError) -> bool {
    type Inner = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<Inner>())
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|err| matches!(err, rustls::Error::InvalidCertificate(_)))
}

/// A client span for one Redis exchange, inside the store operation's span. None outside a
/// traced operation (the housekeeping sweeps, whose spans traces leave out): there it would
/// start a trace of its own every second.
fn exchange_span(what: &'static str) -> Span {
    if crate::telemetry::traces::current_span_context().is_none() {
        return Span::none();
    }
    tracing::info_span!(
        "redis",
        otel.name = format!("redis {what}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "redis",
        db.operation.name = what,
    )
}

impl RoomLog for RedisStore {
    fn create_room(
        &self,
        member: NewMember,
        secret_hash: Option<String>,
    ) -> StoreFuture<'_, CreateOutcome> {
        Box::pin(async move {
            let reply = self
                .add_member("create_room", &CREATE, &member, secret_hash.as_deref())
                .await?;
            match reply.status.as_str() {
                "ok" => {
                    let joined = reply.event_id(0)?;
                    super::count_appended("create:room:success", 1);
                    super::count_appended("add:member:success", 1);
                    Ok(CreateOutcome::Created(joined))
                }
                "room_exists" => Ok(CreateOutcome::RoomExists),
                _ => Err(malformed("create status")),
            }
        })
    }

    fn room_access<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, RoomAccess> {
        Box::pin(async move {
            let keys = RoomKeys::new(room);
            let mut connection = self.connection.clone();
            let (created, secret): (Option<String>, Option<String>) = self
                .run(
                    "room_access",
                    redis::cmd("HMGET")
                        .arg(keys.meta())
                        .arg("created")
                        .arg("secret")
                        .query_async(&mut connection),
                )
                .await?;
            Ok(match (created, secret) {
                (None, _) => RoomAccess::NotFound,
                (Some(_), Some(hash)) => RoomAccess::Secret(hash),
                (Some(_), None) => RoomAccess::Open,
            })
        })
    }

    fn join(
        &self,
        member: NewMember,
        expected_secret_hash: Option<String>,
    ) -> StoreFuture<'_, JoinOutcome> {
        Box::pin(async move {
            let reply = self
                .add_member("join", &JOIN, &member, expected_secret_hash.as_deref())
                .await?;
            match reply.status.as_str() {
                "ok" => {
                    let joined = reply.event_id(0)?;
                    super::count_appended("add:member:success", 1);
                    Ok(JoinOutcome::Joined(joined))
                }
                "room_not_found" => Ok(JoinOutcome::RoomNotFound),
                "username_taken" => Ok(JoinOutcome::UsernameTaken),
                "room_full" => Ok(JoinOutcome::RoomFull),
                "access_changed" => Ok(JoinOutcome::AccessChanged),
                "banned" => Ok(JoinOutcome::Banned),
                _ => Err(malformed("join status")),
            }
        })
    }

    fn remove_member<'a>(
        &'a self,
        room: &'a RoomId,
        target: &'a Username,
        by: Remover<'a>,
        ban: bool,
    ) -> StoreFuture<'a, RemoveOutcome> {
        Box::pin(async move {
            let room_ttl = self.settings.room_ttl_secs.to_string();
            let by_token = match by {
                Remover::ServerApi => "",
                Remover::Member(token_hash) => token_hash.as_str(),
            };
            let identity_keys = if ban {
                target.identity_keys()
            } else {
                Vec::new()
            };
            let mut args = vec![
                target.key(),
                &room_ttl,
                if ban { "ban" } else { "" },
                by_token,
            ];
            args.extend(identity_keys.iter().map(String::as_str));
            let reply = self
                .room_script("remove_member", &REMOVE, room, &[], &args, false)
                .await?;
            let outcome = match reply.status.as_str() {
                "left" => RemoveOutcome::Left(reply.event_id(0)?),
                "removed" => RemoveOutcome::Removed(reply.event_id(0)?),
                "banned_only" => RemoveOutcome::BannedOnly,
                "room_not_found" => RemoveOutcome::RoomNotFound,
                "not_member" => RemoveOutcome::NotMember,
                "unauthorized" => RemoveOutcome::Unauthorized,
                "forbidden" => RemoveOutcome::Forbidden,
                "own_ban" => RemoveOutcome::OwnBan,
                _ => return Err(malformed("remove_member status")),
            };
            if let RemoveOutcome::Left(_) | RemoveOutcome::Removed(_) = outcome {
                super::count_appended("remove:member:success", 1);
            }
            Ok(outcome)
        })
    }

    fn post(&self, batch: NewMessages) -> StoreFuture<'_, PostOutcome> {
        Box::pin(async move {
            let slots: Vec<String> = batch
                .messages
                .iter()
                .map(|message| {
                    keys::idempotency_key(
                        &batch.room,
                        &batch.token_hash,
                        message.idempotency_key_or_empty(),
                    )
                })
                .collect();
            let slots: Vec<&str> = slots.iter().map(String::as_str).collect();
            let idempotency_ttl = self.settings.idempotency_ttl_secs.max(1).to_string();
            let lease_ttl = self.lease_ttl();
            let digests: Vec<String> = batch
                .messages
                .iter()
                .map(|message| match message.idempotency_key {
                    Some(_) => super::text_digest(message.text.as_str()),
                    None => String::new(),
                })
                .collect();
            let mut args = vec![batch.token_hash.as_str(), &lease_ttl, &idempotency_ttl];
            for (message, digest) in batch.messages.iter().zip(&digests) {
                args.push(message.text.as_str());
                args.push(message.idempotency_key_or_empty());
                args.push(digest);
            }
            let reply = self
                .room_script("post", &POST, &batch.room, &slots, &args, false)
                .await?;
            match reply.status.as_str() {
                "ok" => {}
                "unauthorized" => return Ok(PostOutcome::Unauthorized),
                _ => return Err(malformed("post status")),
            }
            let (username, answers) = replies::post_answers(reply, batch.messages.len())?;
            let mut posted = Vec::with_capacity(answers.len());
            let mut appended = 0;
            for (message, answer) in batch.messages.into_iter().zip(answers) {
                let (id, text) = match answer {
                    PostAnswer::New(id) => {
                        appended += 1;
                        (id, message.text.into_string())
                    }
                    PostAnswer::Replayed(id, stored) => (id, stored),
                    PostAnswer::KeyReused => {
                        posted.push(Err(KeyReused));
                        continue;
                    }
                };
                posted.push(Ok(RoomEvent {
                    id,
                    // The reply of a post is the message itself; its predecessor matters
                    // only to readers of the log and the feed, which get it from there.
                    prev: EventId::ZERO,
                    room: batch.room.clone(),
                    kind: EventKind::Chat {
                        username: username.clone(),
                        message: text,
                    },
                }));
            }
            super::count_appended("create:chat:success", appended);
            Ok(PostOutcome::Posted(posted))
        })
    }

    fn edit_message<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
        text: MessageText,
    ) -> StoreFuture<'a, Revised<ChatMessage>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let target_text = target.to_string();
            let args = [token_hash.as_str(), &lease_ttl, &target_text, text.as_str()];
            let reply = self
                .room_script("edit_message", &EDIT_MESSAGE, room, &[], &args, false)
                .await?;
            let outcome = reply.revised("edit_message status", |reply| {
                let edited = match reply.string(2)?.as_str() {
                    "" => None,
                    id => Some(id.parse().map_err(|_| malformed("edit id"))?),
                };
                let message =
                    ChatMessage::new(room, target, reply.string(0)?, reply.string(1)?, edited);
                Ok((message, reply.int(3)? == 1))
            })?;
            Ok(outcome.map(|(message, appended)| {
                if appended {
                    super::count_appended("update:chat:success", 1);
                }
                message
            }))
        })
    }

    fn delete_message<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        target: EventId,
    ) -> StoreFuture<'a, Revised<EventId>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let target_text = target.to_string();
            let args = [token_hash.as_str(), &lease_ttl, &target_text];
            let reply = self
                .room_script("delete_message", &DELETE_MESSAGE, room, &[], &args, false)
                .await?;
            let outcome = reply.revised("delete_message status", |reply| reply.event_id(0))?;
            if matches!(outcome, Revised::Done(_)) {
                super::count_appended("delete:chat:success", 1);
            }
            Ok(outcome)
        })
    }

    fn authenticate<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let args = [token_hash.as_str(), &lease_ttl];
            let reply = self
                .room_script("authenticate", &AUTHENTICATE, room, &[], &args, false)
                .await?;
            reply.member("authenticate status")
        })
    }

    fn issue_ticket<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        ticket_hash: &'a TokenHash,
        ttl_secs: u64,
    ) -> StoreFuture<'a, Authorized<()>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let ttl = ttl_secs.max(1).to_string();
            let key = keys::ticket_key(room, ticket_hash);
            let args = [token_hash.as_str(), &lease_ttl, &ttl];
            let reply = self
                .room_script("issue_ticket", &ISSUE_TICKET, room, &[&key], &args, false)
                .await?;
            reply.authorized("issue_ticket status", |_| Ok(()))
        })
    }

    fn redeem_ticket<'a>(
        &'a self,
        room: &'a RoomId,
        ticket_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Username>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let key = keys::ticket_key(room, ticket_hash);
            let reply = self
                .room_script(
                    "redeem_ticket",
                    &REDEEM_TICKET,
                    room,
                    &[&key],
                    &[&lease_ttl],
                    false,
                )
                .await?;
            reply.member("redeem_ticket status")
        })
    }

    fn typing<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<bool>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let throttle = TYPING_EVERY.as_millis().to_string();
            let throttle_key = keys::typing_key(room, token_hash);
            let args = [token_hash.as_str(), &lease_ttl, &throttle];
            let reply = self
                .room_script("typing", &TYPING, room, &[&throttle_key], &args, false)
                .await?;
            let answer = reply.authorized("typing status", |reply| Ok(reply.int(0)? == 1))?;
            if answer == Authorized::Member(true) {
                super::count_published("typing", 1);
            }
            Ok(answer)
        })
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
        before: Option<EventId>,
        limit: usize,
    ) -> StoreFuture<'a, Authorized<HistoryPage>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let before = before.map(|id| id.to_string()).unwrap_or_default();
            let want = (limit + 1).to_string();
            let args = [token_hash.as_str(), &lease_ttl, &before, &want];
            let reply = self
                .room_script("history", &HISTORY, room, &[], &args, false)
                .await?;
            reply.authorized("history status", |mut reply| {
                let mut newest_first = array(reply.take(0)?)?
                    .into_iter()
                    .map(|entry| history_entry(room, entry))
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok(page_from_newest_first(&mut newest_first, limit))
            })
        })
    }

    fn members<'a>(
        &'a self,
        room: &'a RoomId,
        token_hash: &'a TokenHash,
    ) -> StoreFuture<'a, Authorized<Vec<MemberInfo>>> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let args = [token_hash.as_str(), &lease_ttl];
            let reply = self
                .room_script("members", &MEMBERS, room, &[], &args, false)
                .await?;
            reply.authorized("members status", |mut reply| {
                let online: std::collections::HashSet<String> = array(reply.take(1)?)?
                    .into_iter()
                    .map(text)
                    .collect::<StoreResult<_>>()?;
                // '' when the room has no owner, which no username key is.
                let owner = reply.string(2)?;
                let flat = array(reply.take(0)?)?;
                let mut members = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(key), Some(record)) = (flat.next(), flat.next()) {
                    let key = text(key)?;
                    let record = text(record)?;
                    let username = replies::member_record_display(&record)?;
                    members.push(MemberInfo {
                        username: username.to_owned(),
                        online: online.contains(&key),
                        owner: key == owner,
                    });
                }
                members.sort_by(|a, b| a.username.cmp(&b.username));
                Ok(members)
            })
        })
    }

    fn read_log<'a>(
        &'a self,
        room: &'a RoomId,
        after: EventId,
        limit: usize,
    ) -> StoreFuture<'a, LogRead> {
        Box::pin(async move {
            let after_text = after.to_string();
            let count = limit.to_string();
            // A script, not a plain XRANGE: only the last `history_limit` events are the log
            // (see prelude.lua's `append`), which takes reading the stream's length first.
            let mut reply = self
                .room_script(
                    "read_log",
                    &READ_LOG,
                    room,
                    &[],
                    &[&after_text, &count],
                    false,
                )
                .await?;
            if reply.status != "ok" {
                return Err(malformed("read_log status"));
            }
            let events = array(reply.take(0)?)?
                .into_iter()
                .map(|entry| stream_entry(room, entry))
                .collect::<StoreResult<Vec<_>>>()?;
            let newest = match array(reply.take(1)?)?.into_iter().next() {
                Some(entry) => Some(stream_entry(room, entry)?.id),
                None => None,
            };
            Ok(LogRead::after(after, events, newest))
        })
    }

    fn last_event_id<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, EventId> {
        Box::pin(async move {
            let keys = RoomKeys::new(room);
            let mut connection = self.connection.clone();
            let last: Option<String> = self
                .run(
                    "last_event_id",
                    redis::cmd("HGET")
                        .arg(keys.meta())
                        .arg("last")
                        .query_async(&mut connection),
                )
                .await?;
            match last {
                None => Ok(EventId::ZERO),
                Some(id) => id.parse().map_err(|_| malformed("last event id")),
            }
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _: String = self.run("ping", connection.ping()).await?;
            Ok(())
        })
    }
}

impl Holds for RedisStore {
    fn refresh_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let lease_ttl = self.lease_ttl();
            let online_ttl = self.settings.online_ttl_ms.to_string();
            self.hold_scripts("refresh_holds", &HOLD, holds, &[&lease_ttl, &online_ttl])
                .await
        })
    }

    fn release_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
        Box::pin(self.hold_scripts("release_holds", &RELEASE, holds, &[]))
    }

    fn sweep(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.sweep_due())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_publishes_sharded_on_a_cluster() {
        let prelude = include_str!("scripts/prelude.lua");
        assert_eq!(prelude.matches(PUBLISH_CALL).count(), 1);
        assert_eq!(
            prelude.matches("PUBLISH").count(),
            1,
            "one publish, the one replaced"
        );
        let script = RoomScript::new(prelude);
        assert_ne!(script.plain.get_hash(), script.sharded.get_hash());
    }
}
