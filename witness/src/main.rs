//! `hattama-witness`: `init`, `add-log`, `logs`, `serve`.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hattama_core::log::LogKey;
use hattama_witness::store::Store;

#[derive(Parser)]
#[command(name = "hattama-witness", version = env!("HATTAMA_VERSION"), about = "Hattama witness (C2SP tlog-witness)")]
struct Cli {
    /// The witness's data directory (its key and database)
    #[arg(long, global = true, value_name = "DIR", env = "HATTAMA_WITNESS_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the witness: a new key and an empty database; prints its verifier key
    Init {
        /// The witness's name, a schema-less URL that identifies it (e.g. witness.example.org/w1)
        #[arg(long)]
        name: String,
    },
    /// Witnesses one more log, given its verifier key (<origin>+<key id>+<key>)
    AddLog {
        /// The log's verifier key, as its operator publishes it
        vkey: String,
    },
    /// Lists the witnessed logs and the size each was last cosigned at
    Logs,
    /// Prints the witness's verifier key (for the logs' policies)
    Vkey,
    /// Serves HTTP; prints `listening on http://ADDR` as its first line
    Serve {
        /// Address to listen on (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    // The key and the database are the witness's user's only.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Ok(point) = std::env::var("HATTAMA_TEST_PAUSE_AT") {
        // A no-op unless the core was built with its `test-hooks` feature (tests only).
        hattama_core::hooks::set_pause_at(&point);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HATTAMA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let dir =
        cli.data_dir.context("no data directory: give --data-dir DIR (or HATTAMA_WITNESS_DIR)")?;
    match cli.command {
        Command::Init { name } => {
            let store = Store::init(&dir, &name)?;
            println!("{}", store.cosigner().public().vkey());
        }
        Command::AddLog { vkey } => {
            let key = LogKey::from_vkey(&vkey).with_context(|| {
                format!("{vkey:?} is not a log verifier key (<origin>+<key id>+<base64 key>)")
            })?;
            Store::open(&dir)?.add_log(&key)?;
            println!("witnessing {}", key.origin);
        }
        Command::Logs => {
            for l in Store::open(&dir)?.logs()? {
                match l.latest {
                    Some((size, _, time)) => {
                        println!("{} size {size} cosigned at {time}", l.origin)
                    }
                    None => println!("{} nothing cosigned yet", l.origin),
                }
                if l.refused > 0 {
                    println!(
                        "  {} signed checkpoints refused as not extending what was cosigned: \
                         evidence of a fork, kept in the database (table refusals)",
                        l.refused
                    );
                }
            }
        }
        Command::Vkey => println!("{}", Store::open(&dir)?.cosigner().public().vkey()),
        Command::Serve { listen } => {
            let store = Store::open(&dir)?;
            let listener = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
            let addr = listener.local_addr()?;
            println!("listening on http://{addr}");
            std::io::stdout().flush()?;
            tracing::info!(name = store.cosigner().public().name(), %addr, "witness serving");
            actix_web::rt::System::new().block_on(hattama_witness::http::serve(store, listener))?;
        }
    }
    Ok(())
}
