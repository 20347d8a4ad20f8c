use anyhow::Result;

pub fn run(_args: crate::cli::WhyArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
