//! `ferrolab data`: where each dataset is and whether it parses.

use clap::Args;
use ferrolab_data::lookup;
use std::path::PathBuf;

/// Arguments of `ferrolab data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    /// Folder holding the real datasets (else $FERROLAB_DATA, else ../shared/data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Only locate the files; skip parsing them.
    #[arg(long)]
    pub no_verify: bool,
}

/// Prints one line per dataset; fails (exit 2) only if `--data-dir` names a missing folder.
pub fn run(args: &DataArgs) -> anyhow::Result<()> {
    let root = lookup::resolve_data_root(args.data_dir.as_deref());
    match &root {
        Some((p, src)) => println!("data folder: {} (from {src})", p.display()),
        None => println!(
            "data folder: none found (pass --data-dir, set ${}, or place the data at ../shared/data)",
            lookup::DATA_ENV
        ),
    }
    if let (Some((p, src)), Some(_)) = (&root, &args.data_dir)
        && !p.is_dir()
    {
        return Err(crate::common::UsageError(format!(
            "--data-dir {} ({src}) is not a folder",
            p.display()
        ))
        .into());
    }
    let root_path = root.as_ref().map(|(p, _)| p.as_path());
    let mut found = 0;
    let all = lookup::datasets();
    for info in &all {
        match lookup::locate(root_path, info) {
            Ok(path) if args.no_verify => {
                found += 1;
                println!("  ok       {:<15} {}", info.name, path.display());
            }
            Ok(path) => {
                let dir = root_path.map_or_else(|| path.clone(), std::path::Path::to_path_buf);
                match lookup::verify(&dir, info) {
                    Ok(summary) => {
                        found += 1;
                        println!(
                            "  ok       {:<15} {}  [{summary}]",
                            info.name,
                            path.display()
                        );
                    }
                    Err(e) => println!("  INVALID  {:<15} {e}", info.name),
                }
            }
            Err(e) => println!("  missing  {:<15} {e}", info.name),
        }
    }
    println!("{found} of {} datasets available", all.len());
    Ok(())
}
