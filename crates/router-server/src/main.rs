//! The stock `router-server` binary. A binary with providers of its own is
//! the same two lines plus a `.provider(name, factory)` for each (see
//! `examples/custom-server`).

/// mimalloc instead of glibc's malloc. A request allocates and frees many
/// small buffers (JSON trees, headers, ledger rows): under callgrind the
/// router runs 8.5 % fewer instructions per proxied request with it
/// (135.9k instead of 148.5k). Built with `no_thp`: mimalloc otherwise asks
/// for transparent huge pages, which took the router's RSS under load from
/// 26 to 39 MiB; without them it is within 2 MiB of glibc's. The price is
/// memory per open stream: about 4 MiB more per 1,000 slow streams (about
/// 41 instead of 37 MiB, `cargo xtask bench` scenario 5). The library
/// leaves the choice to the binary, so a service that embeds the router
/// keeps its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    router_server::Server::from_args().run()
}
