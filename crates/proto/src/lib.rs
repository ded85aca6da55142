//! Generated types and service stubs of the `herald.v1` gRPC API (see `proto/herald/v1`).

#![allow(clippy::all, missing_docs)]

/// The `herald.v1` package.
pub mod v1 {
    tonic::include_proto!("herald.v1");

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/herald_descriptor.bin"));
}
