//! The server API's operations (`/api/`): what an app's backend, holding the server API key,
//! may do to rooms as a whole. The caller is authenticated by the HTTP layer; nothing here is
//! rate limited per member, since no member acts.

use super::{MAX_HISTORY_PAGE, Rooms};
use crate::domain::{ChatMessage, RoomId, Username};
use crate::error::ApiError;
use crate::store::{RemoveOutcome, Remover, RoomsPage};

impl Rooms {
    /// Rooms by id after `after`, `limit` (1-200) at most.
    #[tracing::instrument(name = "rooms.list_rooms", skip_all)]
    pub async fn list_rooms(
        &self,
        after: Option<RoomId>,
        limit: usize,
    ) -> Result<RoomsPage, ApiError> {
        if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
            return Err(ApiError::invalid("limit must be between 1 and 200"));
        }
        Ok(self.store.list_rooms(after.as_ref(), limit).await?)
    }

    /// A message under any valid name (a system or bot message), member or not.
    #[tracing::instrument(name = "rooms.post_as", skip_all, fields(chat.room = %room))]
    pub async fn post_as(
        &self,
        room: RoomId,
        username: Username,
        message: String,
    ) -> Result<ChatMessage, ApiError> {
        let text = self.message(message)?;
        let event = self
            .store
            .post_as(&room, &username, text)
            .await?
            .ok_or(ApiError::RoomNotFound)?;
        event.as_chat().ok_or_else(super::store_answered_otherwise)
    }

    /// Removes a member (`kicked`), or with `ban` also bans its name (`banned`). A ban of a
    /// name no member holds is recorded all the same.
    #[tracing::instrument(name = "rooms.remove_member", skip_all, fields(chat.room = %room))]
    pub async fn remove_member(
        &self,
        room: &RoomId,
        username: &Username,
        ban: bool,
    ) -> Result<(), ApiError> {
        let by = Remover::ServerApi;
        match self.store.remove_member(room, username, by, ban).await? {
            RemoveOutcome::Removed(_) | RemoveOutcome::BannedOnly => Ok(()),
            refused => Err(super::removal_refused(refused)),
        }
    }

    /// Deletes a room with everything in it; its connections are told `room:deleted`.
    #[tracing::instrument(name = "rooms.delete_room", skip_all, fields(chat.room = %room))]
    pub async fn delete_room(&self, room: &RoomId) -> Result<(), ApiError> {
        if self.store.delete_room(room).await? {
            Ok(())
        } else {
            Err(ApiError::RoomNotFound)
        }
    }
}
