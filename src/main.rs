//! The `bastionctl` binary: everything lives in the library; see [`bastionctl::cli`].

fn main() -> std::process::ExitCode {
    bastionctl::cli::main()
}
