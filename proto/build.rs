//! Compiles the `.proto` files under `proto/` with protox (pure Rust, no system `protoc`)
//! and generates prost messages plus tonic clients and servers from the descriptor set.

use std::{env, fs, path::PathBuf};

/// The proto files, relative to the include root `proto/`. Their paths are etcd 3.5's
/// import paths (`etcd/api/...`), so `import` lines read exactly as in etcd.
const PROTOS: &[&str] = &[
    "etcd/api/mvccpb/kv.proto",
    "etcd/api/authpb/auth.proto",
    "etcd/api/etcdserverpb/rpc.proto",
    "kvstore/raftpb/raft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    // Source info keeps the comments, which become rustdoc on the generated items.
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;

    // The encoded set, for gRPC reflection (`kvstore_proto::FILE_DESCRIPTOR_SET`).
    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&out_dir)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
