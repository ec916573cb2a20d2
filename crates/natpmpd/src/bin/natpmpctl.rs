//! natpmpctl: ask a running natpmpd what it is doing, over its control socket.
//!
//! Exit codes: 0 success, 1 the daemon answered with an error, 2 usage or connection error.

use clap::{Parser, Subcommand};
use natpmp_pcp_core::gateway::Removal;
use natpmpd::config::{Config, DEFAULT_CONTROL_SOCKET};
use natpmpd::control::{self, print, remove, status, Request, Response};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_DAEMON_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "natpmpctl",
    version,
    about = "Control and inspect a running natpmpd (NAT-PMP gateway daemon)",
    after_help = "Exit status: 0 on success, 1 when natpmpd answers with an error, \
                  2 on a usage error or when natpmpd cannot be reached.\n\n\
                  Examples:\n  \
                  natpmpctl print\n  \
                  natpmpctl status --json\n  \
                  natpmpctl remove 3\n  \
                  natpmpctl remove --client 192.168.88.10\n  \
                  natpmpctl --config /etc/natpmpd.toml print --json"
)]
struct Cli {
    /// The daemon's control socket
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "config",
        default_value = DEFAULT_CONTROL_SOCKET,
    )]
    socket: PathBuf,

    /// Read the socket path (`control-socket`) from this natpmpd configuration file
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the dynamic port mappings, like RouterOS `/ip firewall nat print`
    Print {
        /// Print JSON ({"mappings":[...]}) instead of text, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Make natpmpd re-read its configuration file (as SIGHUP does); prints why if the new
    /// file is refused, in which case the running configuration stays
    Reload,
    /// Show the external address, epoch, uptime, mappings per protocol and family, and the
    /// state of the kernel table (last drift check and repair)
    Status {
        /// Print JSON instead of text, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Remove mappings by hand, their conntrack entries included (logged by natpmpd with
    /// your uid and pid)
    #[command(group(clap::ArgGroup::new("which").required(true).args(["number", "client", "all"])))]
    Remove {
        /// The mapping's number, as `natpmpctl print` shows it
        number: Option<usize>,
        /// Every mapping of this LAN host (IPv4 or IPv6 address)
        #[arg(long, value_name = "ADDR")]
        client: Option<IpAddr>,
        /// Every mapping
        #[arg(long)]
        all: bool,
    },
}

/// Ask the daemon; its `ok = false` answers become `(EXIT_DAEMON_ERROR, "natpmpd: ...")`.
fn ask(socket: &std::path::Path, request: &Request) -> Result<Response, (u8, String)> {
    let response = control::call(socket, request).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    if !response.ok {
        let message = response
            .error
            .unwrap_or_else(|| "natpmpd reported an error without a message".into());
        return Err((EXIT_DAEMON_ERROR, format!("natpmpd: {message}")));
    }
    Ok(response)
}

fn write_out(out: &str) {
    // A closed pipe (`natpmpctl print | head`) is not worth a panic or an error code.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("natpmpctl: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: &Cli) -> Result<(), (u8, String)> {
    let socket = match &cli.config {
        Some(file) => {
            Config::load(file)
                .map_err(|e| (EXIT_USAGE, e.to_string()))?
                .control_socket
        }
        None => cli.socket.clone(),
    };
    match cli.command {
        Command::Print { json } => {
            let response =
                control::call(&socket, &Request::Print).map_err(|e| (EXIT_USAGE, e.to_string()))?;
            if !response.ok {
                let message = response
                    .error
                    .unwrap_or_else(|| "natpmpd reported an error without a message".into());
                return Err((EXIT_DAEMON_ERROR, format!("natpmpd: {message}")));
            }
            let out = if json {
                print::format_json(&response) + "\n"
            } else {
                print::format_text(&response)
            };
            // A closed pipe (`natpmpctl print | head`) is not worth a panic or an error code.
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
            Ok(())
        }
        Command::Reload => {
            let response = control::call(&socket, &Request::Reload)
                .map_err(|e| (EXIT_USAGE, e.to_string()))?;
            if !response.ok {
                let message = response
                    .error
                    .unwrap_or_else(|| "natpmpd reported an error without a message".into());
                return Err((
                    EXIT_DAEMON_ERROR,
                    format!("natpmpd kept its running configuration: {message}"),
                ));
            }
            println!("configuration reloaded");
            Ok(())
        }
        Command::Status { json } => {
            let response = ask(&socket, &Request::Status)?;
            let Some(s) = response.status else {
                return Err((
                    EXIT_DAEMON_ERROR,
                    "natpmpd answered without a status (is it an older natpmpd?)".into(),
                ));
            };
            write_out(&if json {
                status::format_json(&s) + "\n"
            } else {
                status::format_text(&s)
            });
            Ok(())
        }
        Command::Remove {
            number,
            client,
            all,
        } => {
            let removal = match (number, client, all) {
                (Some(n), _, _) => {
                    let listing = ask(&socket, &Request::Print)?;
                    remove::removal_of_number(&listing, n).map_err(|e| (EXIT_DAEMON_ERROR, e))?
                }
                (_, Some(client), _) => Removal::Client { client },
                _ => Removal::All,
            };
            let response = ask(&socket, &Request::Remove { removal, by: None })?;
            let mut out = String::new();
            for v in &response.removed {
                out.push_str(&format!("removed {}\n", remove::describe(v)));
            }
            write_out(&out);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn socket_and_config_conflict() {
        let r = Cli::try_parse_from(["natpmpctl", "--socket", "/a", "--config", "/b", "print"]);
        assert!(r.is_err());
    }

    #[test]
    fn options_after_the_subcommand() {
        let cli = Cli::try_parse_from(["natpmpctl", "print", "--json", "--socket", "/x"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/x"));
        assert!(matches!(cli.command, Command::Print { json: true }));
    }

    #[test]
    fn remove_takes_exactly_one_of_number_client_all() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["natpmpctl", "remove"], args].concat());
        assert!(matches!(
            parse(&["3"]).unwrap().command,
            Command::Remove {
                number: Some(3),
                client: None,
                all: false
            }
        ));
        assert!(matches!(
            parse(&["--client", "192.168.88.10"]).unwrap().command,
            Command::Remove {
                client: Some(_),
                ..
            }
        ));
        assert!(matches!(
            parse(&["--all"]).unwrap().command,
            Command::Remove { all: true, .. }
        ));
        assert!(parse(&[]).is_err(), "nothing named");
        assert!(parse(&["3", "--all"]).is_err(), "two named");
        assert!(parse(&["--client", "not-an-address"]).is_err());
        assert!(parse(&["-1"]).is_err());
    }
}
