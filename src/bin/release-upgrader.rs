fn main() -> std::process::ExitCode {
    release_upgrader::cli::client_main()
}
