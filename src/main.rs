#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    stapsteen::cli::main()
}
