//! Generated types and service stubs of the `herald.v1` gRPC API (see `proto/herald/v1`), and
//! the server plumbing its services share ([`server`]).

pub mod server;

/// The `herald.v1` package.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("herald.v1");

    impl DeliveryStatus {
        /// The status of a delivery as the ledger stores it (`pending`, `success`, `retrying`,
        /// `failed`); anything else is `Unspecified`.
        pub fn from_stored(status: &str) -> Self {
            match status {
                "pending" => Self::Pending,
                "success" => Self::Success,
                "retrying" => Self::Retrying,
                "failed" => Self::Failed,
                _ => Self::Unspecified,
            }
        }
    }

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/herald_descriptor.bin"));
}
