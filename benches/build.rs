//! Compiles the floor's echo service (`protos/echo.proto`) with protox (no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["protos/echo.proto"], ["protos"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=protos");
    Ok(())
}
