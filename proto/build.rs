//! Compiles `proto/*.proto` with `protox` (pure Rust), so no system `protoc`
//! is needed to build the workspace.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/sentineld.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
