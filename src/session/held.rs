//! The memberships one session holds, and which room frames (logged and ephemeral) still
//! belong to them.

use crate::domain::{EventId, EventKind, RoomId, TokenHash, Username};
use crate::hub::{Frame, Subscription};
use crate::presence::Hold;

/// One membership a session holds.
pub(super) struct Held {
    username: Username,
    /// What posts and leaves under this membership present; `None` for a stream opened with
    /// a ticket, which never posts.
    token_hash: Option<TokenHash>,
    /// Frames of this room before this id predate the membership and are skipped.
    from: EventId,
    /// Where this membership began: removals of this name before this id ended an earlier
    /// membership (resumed replays reach back past a leave and a new join), and a room
    /// created after it is another room under the same id.
    joined_at: EventId,
    /// Set when the member left on this session: forward up to its removal, then drop.
    leaving_at: Option<EventId>,
    /// Whether the membership's first logged frame (at `from` or later) was admitted:
    /// ephemeral events are admitted from then on, so none comes before the member's own join.
    live: bool,
    /// The room's events reach the session while this lives.
    subscription: Subscription,
    /// The member is online while this lives (and a grace after: a new member of the same
    /// name within it is marked online all the same, see `presence`).
    presence: Option<Hold>,
}

impl Held {
    pub(super) fn new(
        username: Username,
        token_hash: Option<TokenHash>,
        from: EventId,
        joined_at: EventId,
        subscription: Subscription,
        presence: Hold,
    ) -> Self {
        Self {
            username,
            token_hash,
            from,
            joined_at,
            leaving_at: None,
            live: from == EventId::ZERO,
            subscription,
            presence: Some(presence),
        }
    }

    pub(super) fn username(&self) -> &Username {
        &self.username
    }

    pub(super) fn token_hash(&self) -> Option<&TokenHash> {
        self.token_hash.as_ref()
    }

    /// The subscription, for a membership that takes over this one's.
    pub(super) fn into_subscription(self) -> Subscription {
        self.subscription
    }
}

/// The memberships of one session: a handful at most (`MAX_ROOMS_PER_CONNECTION`), looked up
/// for every frame written, so a short list beats hashing the room id.
#[derive(Default)]
pub(super) struct Holdings(Vec<(RoomId, Held)>);

impl Holdings {
    fn get(&self, room: &RoomId) -> Option<&Held> {
        self.0
            .iter()
            .find(|(id, _)| id == room)
            .map(|(_, held)| held)
    }

    fn get_mut(&mut self, room: &RoomId) -> Option<&mut Held> {
        self.0
            .iter_mut()
            .find(|(id, _)| id == room)
            .map(|(_, held)| held)
    }

    pub(super) fn contains(&self, room: &RoomId) -> bool {
        self.get(room).is_some()
    }

    /// The membership a post to (or a leave of) `room` goes out under, if this session holds
    /// one that is not leaving.
    pub(super) fn to_post(&self, room: &RoomId) -> Option<&Held> {
        self.get(room).filter(|held| held.leaving_at.is_none())
    }

    pub(super) fn insert(&mut self, room: RoomId, held: Held) {
        match self.0.iter_mut().find(|(id, _)| *id == room) {
            Some((_, existing)) => *existing = held,
            None => {
                // Most connections hold one room: no room for three more per connection.
                self.0.reserve_exact(1);
                self.0.push((room, held));
            }
        }
    }

    pub(super) fn remove(&mut self, room: &RoomId) -> Option<Held> {
        let at = self.0.iter().position(|(id, _)| id == room)?;
        Some(self.0.swap_remove(at).1)
    }

    /// The member of `room` whose token this is left on this session at `left_at`.
    pub(super) fn leaving(&mut self, room: &RoomId, token_hash: &TokenHash, left_at: EventId) {
        let held = self.0.iter_mut().find(|(id, _)| id == room);
        if let Some((_, held)) = held
            && held.token_hash.as_ref() == Some(token_hash)
        {
            held.leaving_at = Some(left_at);
            held.presence = None;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// Whether a frame belongs to a membership held here, ending the membership when the
    /// frame is its last: the member's own removal or the room's deletion (written), or the
    /// creation of a room
    /// under the same id after the membership began (not written). A room is created once;
    /// created again, the room this membership belonged to was lost (e.g. Redis lost its
    /// data) and someone else made a new one, whose events are not this member's.
    ///
    /// An ephemeral frame belongs to a membership that is live (see `Held::live`) and not
    /// leaving, unless it is about the member itself: its own presence and typing tell it
    /// nothing.
    pub(super) fn admit(&mut self, frame: &Frame) -> bool {
        let Some(event) = frame.event() else {
            return self.get(frame.room()).is_some_and(|held| {
                held.live && held.leaving_at.is_none() && !frame.is_about(&held.username)
            });
        };
        let Some(held) = self.get_mut(&event.room) else {
            return false;
        };
        if frame.deletes_room() {
            // Written: the client is told, and nothing of the room follows.
            self.remove(&event.room);
            return true;
        }
        if event.id < held.from {
            return false;
        }
        held.live = true;
        if matches!(event.kind, EventKind::RoomCreated { .. }) && event.id > held.joined_at {
            self.remove(&event.room);
            return false;
        }
        let ends_membership = held.leaving_at.is_some_and(|at| event.id >= at)
            || (event.id >= held.joined_at && frame.removes(&held.username));
        if ends_membership {
            self.remove(&event.room);
        }
        true
    }
}
