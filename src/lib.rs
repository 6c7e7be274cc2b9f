//! client_server_chat: a turn-by-turn terminal chat over TCP in which every message is
//! acknowledged at once and the sender sees its round-trip time.
//!
//! The library holds everything; the binary only calls [`cli::main`]. The layers, from the wire
//! up: [`protocol`] (frames, no I/O of its own) and [`legacy`] (the original program's lines as
//! frames), [`wire`] (reading either), [`session`] (one connection's turns, no printing),
//! [`pool`] and [`server`] (many sessions on a fixed pool), and the terminal front-ends:
//! [`console`] for the server's operator, [`client`] and [`ping`], which print through [`term`]
//! (and read keys through its line [`editor`]). [`text`] (peer text made harmless, and its width
//! on a terminal) and [`ending`] (how a chat ends) are leaves that any layer may use.
//!
//! ```no_run
//! use std::sync::Arc;
//! use client_server_chat::server::{Server, ServerConfig, Frontend, ServerEvent};
//! use client_server_chat::session::{EchoResponder, Responder};
//!
//! struct Echo;
//! impl Frontend for Echo {
//!     fn responder(&self, _id: u32) -> Option<Box<dyn Responder + Send>> {
//!         Some(Box::new(EchoResponder))
//!     }
//!     fn event(&self, _event: ServerEvent<'_>) {}
//! }
//! let server = Server::bind(&["127.0.0.1:0".parse().unwrap()], ServerConfig::default()).unwrap();
//! println!("echo server on {}", server.local_addr());
//! server.serve(Arc::new(Echo)).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod cli;
pub mod client;
pub mod console;
pub mod editor;
pub mod ending;
pub mod error;
pub mod legacy;
pub mod ping;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod session;
pub mod term;
pub mod text;
pub mod transcript;
pub mod wire;
