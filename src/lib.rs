//! client_server_chat: a turn-by-turn terminal chat over TCP with acknowledged messages.
#![forbid(unsafe_code)]

pub mod protocol;
pub mod session;
