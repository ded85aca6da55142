//! The `heraldctl` binary: parse the command line, run it, turn a failure into one line on
//! standard error and an exit code.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = heraldctl::Cli::parse();
    if let Err(e) = heraldctl::run(cli).await {
        std::process::exit(heraldctl::errors::report(&e));
    }
}
