//! The client sides that loadgen and the chat client (`ricochet-chat`) share: [`tls`], which
//! certificates a client trusts (`--tls-ca`, `--tls-pin`, `--insecure`), and [`websocket`], the
//! opening handshake and masked framing of a WebSocket client.

pub mod tls;
pub mod websocket;
