use anyhow::Result;

pub fn run(_args: crate::cli::DiffArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
