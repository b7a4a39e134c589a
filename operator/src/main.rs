//! The `dockop` binary: parses the command line and hands over to [`dockop::cli`].

fn main() -> std::process::ExitCode {
    dockop::memory::configure();
    dockop::cli::main()
}
