//! `portico decode`: prints captured FastCGI records or SCGI requests (being written).

use std::process::ExitCode;

/// Options of `decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The capture file, or `-` for standard input.
    pub input: Option<String>,
}

/// Runs the decoder.
pub fn run(args: DecodeArgs) -> ExitCode {
    eprintln!("portico decode: not available yet ({:?})", args.input);
    ExitCode::from(2)
}
