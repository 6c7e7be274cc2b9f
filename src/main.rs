//! The `client_server_chat` binary: everything happens in the library's `cli::main`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(client_server_chat::cli::main(
        std::env::args_os().skip(1).collect(),
    ));
}
