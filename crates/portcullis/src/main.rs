//! The `portcullis` binary: everything is in the library, see `portcullis::cli`.

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
