//! The load generator's socket.io client: Socket.IO v5 over Engine.IO v4's WebSocket
//! transport, by hand over tokio-tungstenite (the frames are short text, and a library client
//! would cost the generator the CPU it needs for a thousand receivers). It owns the handshake,
//! the client event frames with ack ids, reading an ack, and what a receiver must answer.

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::BenchResult;
use crate::clients::{Target, Ws, next_text};

/// Engine.IO's WebSocket transport, without the polling start a browser client makes.
const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The server's Engine.IO ping, and the pong that keeps the socket (unanswered for
/// `pingInterval` + `pingTimeout`, 45 s by default, the server drops it).
pub const PING: &str = "2";
pub const PONG: &str = "3";

/// How a chat room event's frame starts (namespace `/`, so no namespace in the packet).
pub const CHAT_EVENT: &str = r#"42["create:chat:success","#;

/// A WebSocket connected to namespace `/`: the Engine.IO open packet read, `40` sent and the
/// server's `40{"sid":…}` received.
pub async fn connect(target: &Target, n: usize) -> BenchResult<Ws> {
    let mut ws = target.websocket(n, PATH).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with("0{") {
        return Err(format!("expected the Engine.IO open packet, got {open:?}").into());
    }
    ws.send(Message::text("40")).await?;
    loop {
        let text = next_text(&mut ws).await?;
        if text.starts_with("40") {
            return Ok(ws);
        }
        if text.starts_with("44") {
            return Err(format!("namespace connect refused: {text}").into());
        }
        answer_ping(&mut ws, &text).await?;
    }
}

/// `event` with `data` and ack id `ack_id`: `42<id>["event",data]`.
pub fn event_frame(ack_id: u64, event: &str, data: &Value) -> String {
    let packet = Value::from(vec![Value::from(event), data.clone()]);
    format!("42{ack_id}{packet}")
}

/// An ack (`43<id>[data]`): its id and its data (`None` when unreadable); `None` for any
/// other packet.
pub fn ack(text: &str) -> Option<(u64, Option<Value>)> {
    let rest = text.strip_prefix("43")?;
    let (id, rest) = rest.split_once('[')?;
    let id = id.parse().ok()?;
    // `rest` is the array's contents and its closing bracket.
    let data = serde_json::from_str::<Value>(&format!("[{rest}"))
        .ok()
        .map(|reply| reply.get(0).cloned().unwrap_or(Value::Null));
    Some((id, data))
}

/// A bench chat message as a `create:chat` event with ack id `seq`: the server then does what
/// it does for a `/ws` post (ack, then broadcast).
pub fn chat_frame(room: &str, message: &str, seq: u64) -> String {
    format!(r#"42{seq}["create:chat",{{"roomId":"{room}","message":"{message}"}}]"#)
}

async fn answer_ping(ws: &mut Ws, text: &str) -> BenchResult<()> {
    if text == PING {
        ws.send(Message::text(PONG)).await?;
    }
    Ok(())
}
