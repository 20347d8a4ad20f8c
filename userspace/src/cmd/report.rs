use anyhow::Result;

pub fn run(_args: crate::cli::ReportArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
