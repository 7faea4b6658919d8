//! The `pa-auth` binary: parse the command line, run it, map the outcome to an exit code
//! (0 ok, 1 runtime failure, 2 usage or configuration error). All logic is in the library.

use argh::FromArgs;

fn main() {
    pa_auth::logging::install();
    let args: Vec<String> = std::env::args().collect();
    let program = args.first().map_or("pa-auth", String::as_str);
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cli = match pa_auth::cli::Cli::from_args(&[program], &rest) {
        Ok(cli) => cli,
        Err(early) => {
            // --help prints to stdout and succeeds; a usage error prints to stderr, exit 2.
            if early.status.is_ok() {
                println!("{}", early.output);
                std::process::exit(0);
            }
            eprintln!("{}", early.output);
            std::process::exit(2);
        }
    };
    if let Err(e) = pa_auth::cli::run(cli) {
        log::error!("{e}");
        std::process::exit(e.exit_code());
    }
}
