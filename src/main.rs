//! The `wspush` binary: parses the command line, sets up logging, dispatches
//! `serve | client | publish | bench`, and turns errors into exit codes (64: bad configuration).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use wspush::config::Config;
use wspush::server::{self, ConsoleMode};

/// mimalloc, not the system allocator (issue #18 item 4: idle memory per connection,
/// and memory given back after traffic).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options as wspush sets them, unless the environment sets them
/// (`MIMALLOC_<NAME>`, which mimalloc reads when the process starts, always wins).
/// Their numbers in mimalloc v3's `mi_option_e` (mimalloc.h); the bindings name none.
const ALLOCATOR_OPTIONS: [(libmimalloc_sys::mi_option_t, std::ffi::c_long); 1] = [
    // arena_eager_commit = 0: commit arena memory as it is used, not the whole arena at
    // once (on Linux, with transparent huge pages, an eagerly committed arena is backed
    // by 2 MiB pages: 7 MiB more at start, about 0.2 KiB more per idle connection).
    // The purge delay stays mimalloc's (1 s; `allocator_upkeep` makes it happen when
    // idle): 10 ms or 0 return memory no sooner once idle, for 2 to 4 times the calls.
    (4, 0),
];

/// `tune_allocator` as the process starts, before `main`: the Rust runtime allocates
/// before `main`, and mimalloc's first arena, created then, keeps the commit mode it was
/// created with (set in `main`, an eagerly committed first arena costs 7 MiB at start).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = {
    extern "C" fn tune() {
        tune_allocator();
    }
    tune
};

/// Lets mimalloc give back, every second, the pages freed more than its purge delay
/// ago (issue #18 item 4). It does so only on its own allocation paths, which an idle
/// server does not take: without this, what a burst freed just before the server went
/// idle (the handshakes of many connections, their outboxes after traffic) stays resident.
async fn allocator_upkeep() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        collect_allocator();
    }
}

/// mimalloc's collection of this thread's free pages, which also purges what is due.
#[allow(unsafe_code)]
fn collect_allocator() {
    // SAFETY: no arguments, no invariants: mimalloc's own periodic maintenance.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Sets `ALLOCATOR_OPTIONS` as mimalloc's defaults (issue #18 item 4).
#[allow(unsafe_code)]
fn tune_allocator() {
    for (option, value) in ALLOCATOR_OPTIONS {
        // SAFETY: sets one integer in mimalloc's option table, which mimalloc reads
        // with no other invariant; options the environment set are left alone.
        unsafe { libmimalloc_sys::mi_option_set_default(option, value) };
    }
}

/// `wspush --version`: the crate version and the git commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WSPUSH_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(name = "wspush", version = VERSION, about = "A real-time WebSocket push server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the push server.
    Serve(Box<Config>),
    /// Connect to a WebSocket URL: print what arrives, send stdin lines.
    Client {
        /// e.g. ws://127.0.0.1:8083/ws?channels=news
        url: String,
    },
    /// Publish one message through the HTTP API.
    Publish {
        /// Channel to publish to.
        channel: String,
        /// The data (text; JSON with --json).
        data: String,
        /// The server's base URL.
        #[arg(long, env = "WSPUSH_SERVER", default_value = "http://127.0.0.1:8083")]
        server: String,
        /// API key, if the server has one.
        #[arg(long, env = "WSPUSH_API_KEY")]
        api_key: Option<String>,
        /// Send DATA as JSON instead of a string.
        #[arg(long)]
        json: bool,
    },
    /// The load generator: idle, fanout and echo scenarios (see BENCHMARKS.md).
    Bench(Box<wspush::bench::Args>),
    /// Print the configuration reference (Markdown: every `serve` option's flag,
    /// environment variable, TOML key and default), as in docs/configuration.md.
    ConfigReference,
}

fn main() -> ExitCode {
    // Done already where a constructor did it (see `TUNE_ALLOCATOR`); harmless again.
    tune_allocator();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(config) => {
                let sub = matches.subcommand_matches("serve").expect("serve matched");
                match config.resolve(sub) {
                    Ok(config) => {
                        tokio::spawn(allocator_upkeep());
                        serve(config).await
                    }
                    Err(e) => Err(Failure::Config(e.into())),
                }
            }
            Command::Client { url } => wspush::client::run(&url).await.map_err(Failure::Run),
            Command::Publish {
                channel,
                data,
                server,
                api_key,
                json,
            } => wspush::publish::run(&server, api_key.as_deref(), &channel, &data, json)
                .await
                .map_err(Failure::Run),
            Command::Bench(args) => wspush::bench::run(*args).await.map_err(Failure::Run),
            Command::ConfigReference => {
                print!("{}", wspush::config::reference::markdown());
                Ok(())
            }
        }
    });
    // The console thread may be blocked on stdin: do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(64)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Config(anyhow::Error),
    Run(anyhow::Error),
}

async fn serve(config: Config) -> Result<(), Failure> {
    // Everything the options describe is checked and built before anything binds.
    let runtime = wspush::setup::build(config).map_err(|e| Failure::Config(e.into()))?;
    let config = runtime.config.clone();
    if config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let listener = listen(config.listen)
        .map_err(|e| Failure::Run(anyhow::anyhow!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| Failure::Run(e.into()))?;
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listening on {scheme}://{addr}");
    for line in wspush::banner::lines(&config, addr) {
        eprintln!("{line}");
    }
    server::run(
        listener,
        runtime,
        ConsoleMode::Stdio,
        wspush::shutdown::signal(),
    )
    .await
    .map_err(|e| Failure::Run(e.into()))
}

/// Binds with a deep accept backlog: connection storms (reconnecting browsers after a
/// deploy) must not have their SYNs dropped and retried a second later.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
