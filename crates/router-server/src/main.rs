//! The stock `router-server` binary. A binary with providers of its own is
//! the same two lines plus a `.provider(name, factory)` for each (see
//! `examples/custom-server`).

fn main() -> std::process::ExitCode {
    router_server::Server::from_args().run()
}
