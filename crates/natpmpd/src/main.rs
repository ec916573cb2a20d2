//! natpmpd: the NAT-PMP and PCP gateway daemon. Runs in the foreground and logs to stderr.

use clap::Parser;
use natpmpd::config::Config;
use natpmpd::journal_log;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// NAT-PMP (RFC 6886) and PCP (RFC 6887) gateway daemon for Linux routers.
///
/// LAN hosts ask it for the router's external address and for port mappings, with NAT-PMP or
/// PCP (MAP, PEER, FILTER, PREFER_FAILURE, DESCRIPTION) on UDP port 5351; it installs real port
/// forwards in its own nftables table (`table inet natpmpd`), and over IPv6 firewall pinholes
/// for the hosts' own addresses, removes them when their lifetime ends, and announces its
/// external address to the LAN. Every connection it lets in carries the `connection-mark` bit
/// (default 0x00100000) for your forward chain to accept. Configured like RouterOS
/// `/ip nat-pmp`; see docs/configuration.md.
///
/// Signals: SIGHUP re-reads the configuration (so does `natpmpctl reload`; a file with an
/// error is refused and the running configuration stays); SIGTERM or SIGINT save the lease
/// file and stop. `natpmpctl print` lists the mappings. Log detail: RUST_LOG=debug.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The configuration file (TOML).
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "/etc/natpmpd/natpmpd.toml"
    )]
    config: PathBuf,

    /// Check the configuration file and exit: 0 if valid, 1 with a message naming the key
    /// and line if not.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

/// Hand large blocks (the lease snapshot, a kernel listing: megabytes at 100 000 mappings, a
/// few times a minute) straight back to the system when they are freed. glibc otherwise
/// raises its mmap threshold after the first such block is freed and serves the next ones
/// from the heap, where they stay resident: at 100 000 mappings that was 600 of the daemon's
/// 1 040 bytes per mapping (docs/benchmarks.md, "fill").
fn return_large_blocks_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a glibc tuning parameter, before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Log to stderr at RUST_LOG's levels (default info): on the journal with each line's
/// priority (`journal_log`), elsewhere with a timestamp, in colour on a terminal.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if journal_log::stderr_is_journal() {
        logs.with_ansi(false)
            .event_format(journal_log::journal_format())
            .init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> ExitCode {
    return_large_blocks_to_the_system();
    let args = Args::parse();
    init_logging();

    if let Some(path) = args.check_config {
        return match Config::load(&path) {
            Ok(_) => {
                println!("{}: configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("natpmpd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("natpmpd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(natpmpd::driver::run(args.config.clone(), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natpmpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
