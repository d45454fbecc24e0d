fn main() -> std::process::ExitCode {
    release_upgrader::cli::publish_main()
}
