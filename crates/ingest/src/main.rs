//! `herald-ingest`: see the crate docs; start-up is `herald_service::main`.

use herald_alloc as _;

fn main() -> anyhow::Result<()> {
    herald_service::main::<herald_ingest::Config>()
}
