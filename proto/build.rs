//! Compiles `protos/quiver/v1/*.proto` with protox (pure Rust: no protoc needed) and
//! writes the descriptor set that gRPC reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "protos/quiver/v1/types.proto",
        "protos/quiver/v1/feature_service.proto",
        "protos/quiver/v1/admin_service.proto",
        "protos/quiver/v1/control_service.proto",
    ];
    let fds = protox::compile(protos, ["protos"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds() does not write file_descriptor_set_path, so write it ourselves.
    std::fs::write(out.join("quiver_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Packed string/bytes columns decode without a copy per value.
        .bytes(".quiver.v1.PackedColumn.blob")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=protos");
    Ok(())
}
