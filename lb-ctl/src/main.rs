//! `lb-ctl`: see [`lb_ctl::cli`].

fn main() -> std::process::ExitCode {
    lb_ctl::cli::main()
}
