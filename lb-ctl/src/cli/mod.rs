//! The `lb-ctl` command line: its arguments and help ([`args`]), each
//! command as a call of the API's client (or, for `attach`, `detach` and
//! `check-config`, of the layers below), and the printing of the answers
//! ([`print`]).

pub mod args;
pub mod print;

use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Parser;

use crate::{
    api::client::Client,
    daemon::{self, options::AttachOptions},
    kernel::lister::{ConnView, SessionView},
    model::{
        config::Config,
        endpoint::VipId,
        services::{Forwarding, VipSpec},
    },
};
use args::{BackendCommand, Cli, Command, ConfigCommand, Output, VipCommand};

/// Run the command line.
#[must_use]
pub fn main() -> ExitCode {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Under systemd, on the journal: each line starts with its syslog
        // priority (`<4>` for a warning), which the journal reads, and
        // carries no timestamp of its own.
        logger.format(|f, record| {
            use std::io::Write as _;
            writeln!(
                f,
                "<{}>{}: {}",
                syslog_priority(record.level()),
                record.target(),
                record.args()
            )
        });
    } else {
        logger.format_timestamp_millis();
    }
    logger.init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-ctl: error: {}", crate::error_text::text(e.as_ref()));
            match e.downcast_ref::<Trouble>() {
                Some(_) => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// An error of a command whose exit status 1 means something else (`config
/// diff`: the file differs): it exits with 2, as diff(1) does.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Trouble(String);

fn trouble(e: impl std::fmt::Display) -> anyhow::Error {
    Trouble(format!("{e:#}")).into()
}

/// The syslog priority of a log level (`sd-daemon(3)`'s prefixes).
#[must_use]
pub const fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

fn run(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Vip(c) => vip(&client, c),
        Command::Backend(c) => backend(&client, c),
        Command::Conns { output } => conns(&client, output),
        Command::Sessions { output } => sessions(&client, output),
        Command::Status { output } => {
            let status = client.status()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Output::Text => print::print_status(&status),
            }
            Ok(())
        }
        Command::Stats => {
            print!("{}", client.metrics()?);
            Ok(())
        }
        Command::Reload => {
            println!("{}", client.reload()?);
            Ok(())
        }
        Command::Config(c) => config(&client, c),
        offline => local(cli.socket, &client, offline),
    }
}

/// The commands that do not talk to a running controller (or, for
/// `detach`, only to make sure none runs).
fn local(socket: std::path::PathBuf, client: &Client, command: Command) -> Result<()> {
    match command {
        Command::Attach {
            ifaces,
            config,
            xdp_mode,
            bpffs,
            keep_state,
            metrics_address,
            program,
            node,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(daemon::run(AttachOptions {
                ifaces,
                config,
                xdp_mode,
                socket,
                bpffs,
                keep_state,
                metrics_address,
                program,
                node,
            }))
        }
        Command::Detach { ifaces, bpffs } => {
            if client.status().is_ok() {
                bail!(
                    "a controller is running (it answers on {}); stop it with SIGTERM, which \
                     detaches unless it was started with --keep-state",
                    socket.display()
                );
            }
            for line in daemon::detach::detach(&ifaces, &bpffs, &socket)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::CheckConfig { file } => {
            let (config, services) = Config::load(&file)?;
            for w in config
                .tls_warnings(std::time::SystemTime::now())
                .unwrap_or_default()
            {
                eprintln!("warning: {}: {w}", file.display());
            }
            println!(
                "{}: valid; {} VIP(s), {} backend(s); max {} connections, {} sessions",
                file.display(),
                services.vips().count(),
                services.vips().map(|v| v.backends.len()).sum::<usize>(),
                config.limits.max_connections,
                config.limits.max_sessions
            );
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "lb-ctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("writing the manual pages into {}", dir.display()))?;
            println!("wrote the manual pages into {}", dir.display());
            Ok(())
        }
        _ => unreachable!("online commands are run by `run`"),
    }
}

fn vip(client: &Client, command: VipCommand) -> Result<()> {
    match command {
        VipCommand::Add {
            vip,
            protocol,
            scheduler,
            persistence_timeout,
            persistence_netmask,
            persistence_netmask6,
            max_lifetime,
            name,
            mode,
            cookie,
        } => {
            let spec = VipSpec {
                name,
                id: VipId {
                    endpoint: vip,
                    protocol,
                },
                scheduler,
                persistence_timeout,
                persistence_netmask,
                persistence_netmask6,
                max_lifetime,
                health_check: None,
                mode,
                cookie: cookie
                    .as_deref()
                    .map(crate::model::cookie::CookieSpec::named),
                forwarding: Forwarding::Nat,
                tls: None,
            };
            println!("{}", client.vip_add(&spec)?);
        }
        VipCommand::Remove { vip, protocol } => {
            println!(
                "{}",
                client.vip_remove(VipId {
                    endpoint: vip,
                    protocol
                })?
            );
        }
        VipCommand::List { output } => {
            let vips = client.vips()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&vips)?),
                Output::Text => print::print_vips(&vips),
            }
        }
    }
    Ok(())
}

fn backend(client: &Client, command: BackendCommand) -> Result<()> {
    let id = |endpoint, protocol| VipId { endpoint, protocol };
    let message = match command {
        BackendCommand::Add {
            vip,
            backend,
            weight,
            protocol,
        } => client.backend_add(id(vip, protocol), backend, weight)?,
        BackendCommand::Remove {
            vip,
            backend,
            protocol,
        } => client.backend_remove(id(vip, protocol), backend)?,
        BackendCommand::Weight {
            vip,
            backend,
            weight,
            protocol,
        } => client.backend_weight(id(vip, protocol), backend, weight)?,
        BackendCommand::Drain {
            vip,
            backend,
            protocol,
            repin,
        } => client.backend_drain(id(vip, protocol), backend, repin)?,
        BackendCommand::Enable {
            vip,
            backend,
            protocol,
        } => client.backend_enable(id(vip, protocol), backend)?,
        BackendCommand::List {
            vip,
            protocol,
            output,
        } => {
            let rows = client.backends(vip, protocol)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Text => print::print_backends(&rows),
            }
            return Ok(());
        }
    };
    println!("{message}");
    Ok(())
}

fn conns(client: &Client, output: Output) -> Result<()> {
    let reply = client.connections()?;
    if output == Output::Json {
        print!("{}", reply.text()?);
    } else {
        print::print_conns(&reply.lines::<ConnView>()?);
    }
    Ok(())
}

fn sessions(client: &Client, output: Output) -> Result<()> {
    let reply = client.sessions()?;
    if output == Output::Json {
        print!("{}", reply.text()?);
    } else {
        print::print_sessions(&reply.lines::<SessionView>()?);
    }
    Ok(())
}

fn config(client: &Client, command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Dump => {
            let running = client.config()?;
            println!(
                "# The running configuration of lb (`lb-ctl config dump`): the config file's\n\
                 # settings with the VIPs and backends in effect. Drain and health verdicts\n\
                 # are state, not configuration."
            );
            print!("{}", serde_yaml::to_string(&running)?);
        }
        ConfigCommand::Diff { file } => {
            let running = client.config().map_err(trouble)?;
            let (next, _) = Config::load(&file).map_err(trouble)?;
            let lines = crate::model::diff::diff(&running, &next);
            if lines.is_empty() {
                println!("{}: no change", file.display());
                return Ok(());
            }
            for line in lines {
                println!("{line}");
            }
            // As diff(1): 1 when the file differs, so that scripts can ask
            // whether a reload would change anything.
            std::process::exit(1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::{args::Cli, syslog_priority};

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(log::Level::Error), 3);
        assert_eq!(syslog_priority(log::Level::Warn), 4);
        assert_eq!(syslog_priority(log::Level::Info), 6);
        assert_eq!(syslog_priority(log::Level::Debug), 7);
    }

    /// Every command and every argument says what it is for.
    #[test]
    fn every_command_and_argument_has_help() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && path != "lb-ctl" {
                missing.push(format!("{path}: the command"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "lb-ctl", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
        let help = Cli::command()
            .find_subcommand_mut("vip")
            .and_then(|v| v.find_subcommand_mut("add"))
            .map(|a| a.render_long_help().to_string())
            .unwrap_or_default();
        assert!(!help.contains("[`"), "no rustdoc links in help: {help}");
        assert!(help.contains("maglev"), "{help}");
    }
}
