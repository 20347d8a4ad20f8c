use anyhow::Result;

pub fn run(_args: crate::cli::CheckArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
