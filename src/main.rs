use clap::Parser;

fn main() -> std::process::ExitCode {
    moneta::cli::run(moneta::cli::Cli::parse())
}
