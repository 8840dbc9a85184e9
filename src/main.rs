fn main() {
    std::process::exit(cloudimg_cli_placeholder());
}
fn cloudimg_cli_placeholder() -> i32 {
    0
}
