//! Idle memory per connection, field by field (issue #18 item 4): the sizes of what
//! every connection holds, printed by `cargo test --lib sizes -- --nocapture` and
//! bounded so a regression fails here before it shows in `wspush bench idle`.
//!
//! The session's task (its future, boxed by tokio with a header and trailer) is bounded
//! by `session_task_stays_small`, and logged at trace level when it starts
//! (`RUST_LOG=wspush=trace`, "session task" bytes=N) for the build being measured.

use std::mem::size_of;

use tokio::net::TcpStream;

use super::commands::JsonState;
use super::json::Json;
use super::raw::{Raw, RawConn};
use super::session::Session;
use super::tls::Tls;
use crate::frame::Decoder;
use crate::hub::Client;
use crate::limits::Permit;

#[test]
fn per_connection_structs_stay_small() {
    let sizes = [
        ("Client (one Arc allocation, +16 B)", size_of::<Client>()),
        (
            "Session<TcpStream, Raw>",
            size_of::<Session<TcpStream, Raw>>(),
        ),
        (
            "Session<TcpStream, Json>",
            size_of::<Session<TcpStream, Json>>(),
        ),
        ("Session<Tls, Raw> (wss)", size_of::<Session<Tls, Raw>>()),
        (
            "Tls (one Arc allocation, +16 B; rustls buffers apart)",
            size_of::<Tls>(),
        ),
        ("Decoder", size_of::<Decoder>()),
        ("Permit", size_of::<Permit>()),
        ("RawConn", size_of::<RawConn>()),
        ("JsonState", size_of::<JsonState>()),
        (
            "TcpStream (one Arc allocation, +16 B)",
            size_of::<TcpStream>(),
        ),
    ];
    for (name, size) in sizes {
        println!("{name:<40} {size:>4} B");
    }
    assert!(
        size_of::<Client>() <= 208,
        "Client grew: {}",
        size_of::<Client>()
    );
    // 128 B before permessage-deflate, whose inflater pointer in the decoder costs 8 B
    // (and the client's compressor pointer 8 B) even when compression is off; 112 B
    // since the frames held for a backed-up socket are boxed (issue #18 item 4).
    assert!(size_of::<Session<TcpStream, Raw>>() <= 112);
    // issue #18 item 5: a wss session is the same session on another transport (the
    // TLS state lives in the transport's one allocation).
    assert!(size_of::<Session<Tls, Raw>>() <= 112);
    assert!(size_of::<Tls>() <= 1280, "Tls grew: {}", size_of::<Tls>());
}

/// The size of what `f` returns (a future), without calling it.
fn output_size<A, B, R>(_f: impl FnOnce(A, B) -> R) -> usize {
    size_of::<R>()
}

#[test]
fn session_task_stays_small() {
    // issue #18 item 4: tokio keeps each task as one 128-byte-aligned cell of 104 B
    // (header, scheduler, id, stage tag, trailer) plus the future, which the task tracker
    // wraps with an 8 B token: a session future of at most 144 B makes a 256 B cell.
    let futures = [
        (
            "Session<TcpStream, Raw>::run",
            output_size(Session::<TcpStream, Raw>::run),
        ),
        (
            "Session<TcpStream, Json>::run",
            output_size(Session::<TcpStream, Json>::run),
        ),
        (
            "Session<Tls, Raw>::run (wss)",
            output_size(Session::<Tls, Raw>::run),
        ),
    ];
    for (name, size) in futures {
        println!("{name:<40} {size:>4} B");
    }
    // The native /ws front, raw and JSON mode, TCP and TLS: 144 B, a 256 B cell (384 B
    // before).
    assert!(output_size(Session::<TcpStream, Raw>::run) <= 144);
    assert!(output_size(Session::<Tls, Raw>::run) <= 144);
    assert!(output_size(Session::<TcpStream, Json>::run) <= 144);
}
