//! The `ferrovision` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrovision::model::{ArchName, ModelOptions};

#[derive(Parser)]
#[command(
    name = "ferrovision",
    version,
    about = "Pure-Rust CNN image recognition"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the architectures with their parameter counts.
    Archs {
        /// Width multiplier α (MobileNets).
        #[arg(long, default_value_t = 1.0)]
        width: f64,
        /// Number of output classes.
        #[arg(long, default_value_t = 1000)]
        num_classes: usize,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Archs { width, num_classes } => {
            println!("{:<16} {:>14}", "architecture", "parameters");
            for name in ArchName::ALL {
                let arch = ArchName::parse(name)?;
                let w = if matches!(arch, ArchName::MobileNetV1 | ArchName::MobileNetV2) {
                    width
                } else {
                    1.0
                };
                let opts = ModelOptions {
                    width: w,
                    num_classes,
                    ..ModelOptions::default()
                };
                let n = ferrovision::weights::count_parameters(arch, &opts)?;
                println!("{name:<16} {n:>14}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
