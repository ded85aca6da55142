//! `herald-console`: see the crate docs; start-up is `herald_service::main`.

fn main() -> anyhow::Result<()> {
    herald_service::main::<herald_console::Config>()
}
