//! `ferrolab data`: where each dataset is and whether it parses; `ferrolab data fetch`:
//! download datasets from their pinned public sources.

use clap::{Args, Subcommand};
use ferrolab_data::fetch::{self, FetchOptions};
use ferrolab_data::lookup;
use std::path::PathBuf;

/// Arguments of `ferrolab data`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: Option<DataCommand>,
    /// Folder searched first for the real datasets (then $FERROLAB_DATA, the per-user data
    /// folder, ../shared/data, a dataset's system location).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Only locate the files; skip parsing them.
    #[arg(long)]
    pub no_verify: bool,
}

/// Sub-commands of `ferrolab data`.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download datasets from their canonical sources (pinned URL and SHA-256), convert them,
    /// and install them into the per-user data folder (or --data-dir).
    Fetch(FetchArgs),
    /// Convert Planetoid files you already have (`ind.<name>.{x,y,tx,ty,allx,ally,graph,
    /// test.index}`, e.g. CiteSeer's or PubMed's) into the graph npz the graph systems read
    /// (`--set data.path=FILE`); the same conversion `data fetch cora-planetoid` applies.
    ConvertPlanetoid(ConvertPlanetoidArgs),
    /// Render underwater images of Jerlov water types (PNGs + COCO JSON with images[].domain);
    /// the same command as `ferrolab adod synth` (its options: --types, --images, --size, --seed, --out).
    #[command(disable_help_flag = true)]
    SynthUnderwater {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "OPTIONS"
        )]
        args: Vec<String>,
    },
}

/// Arguments of `ferrolab data convert-planetoid`.
#[derive(Args, Debug)]
pub struct ConvertPlanetoidArgs {
    /// The files' dataset name: `ind.<NAME>.x` etc. (cora, citeseer, pubmed).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Folder holding the `ind.<NAME>.*` files.
    #[arg(long, value_name = "DIR")]
    pub raw: PathBuf,
    /// The npz to write (a new file; written whole or not at all).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Arguments of `ferrolab data fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Datasets to fetch, as `ferrolab data` lists them (e.g. cora-planetoid ml-100k).
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Fetch every dataset.
    #[arg(long)]
    pub all: bool,
    /// Install here instead of the per-user data folder
    /// ($XDG_DATA_HOME/ferrolab/data, default ~/.local/share/ferrolab/data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Lists the datasets, or runs `fetch`. Usage errors (exit 2): a `--data-dir` that is not a
/// folder when listing, an unknown dataset name.
pub fn run(args: &DataArgs) -> anyhow::Result<()> {
    match &args.command {
        Some(DataCommand::Fetch(f)) => run_fetch(f),
        Some(DataCommand::ConvertPlanetoid(c)) => run_convert_planetoid(c),
        Some(DataCommand::SynthUnderwater { args }) => {
            use ferrolab_vision::adod::predict::{synth_command, synth_run};
            let argv = std::iter::once("synth-underwater".to_string()).chain(args.iter().cloned());
            let m = match synth_command()
                .name("synth-underwater")
                .bin_name("ferrolab data synth-underwater")
                .try_get_matches_from(argv)
            {
                Ok(m) => m,
                Err(e) if !e.use_stderr() => e.exit(),
                Err(e) => {
                    return Err(crate::common::UsageError(format!(
                        "{} (see --help)",
                        crate::common::clap_error_line(&e)
                    ))
                    .into());
                }
            };
            Ok(synth_run(&m)?)
        }
        None => list(args),
    }
}

/// Usage errors (exit 2): a name that is not a plain word, a `--raw` that is not a folder,
/// an `--out` that exists; a missing or malformed `ind.*` file is a data error naming it.
fn run_convert_planetoid(c: &ConvertPlanetoidArgs) -> anyhow::Result<()> {
    let usage = |m: String| -> anyhow::Error { crate::common::UsageError(m).into() };
    if c.name.is_empty()
        || c.name.len() > 40
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        return Err(usage(format!(
            "--name {:?}: a dataset name as in the files `ind.<NAME>.x` (letters, digits, `_`)",
            c.name
        )));
    }
    if !c.raw.is_dir() {
        return Err(usage(format!("--raw {}: not a folder", c.raw.display())));
    }
    if c.out.exists() {
        return Err(usage(format!(
            "--out {}: already exists (nothing is overwritten; choose a new path)",
            c.out.display()
        )));
    }
    ferrolab_data::fetch::convert_planetoid(&c.raw, &c.name, &c.out)?;
    eprintln!(
        "wrote {} (Planetoid `{}`): use it with --set data.path={}",
        c.out.display(),
        c.name,
        c.out.display()
    );
    Ok(())
}

fn list(args: &DataArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.data_dir
        && !p.is_dir()
    {
        return Err(crate::common::UsageError(format!(
            "--data-dir {} is not a folder",
            p.display()
        ))
        .into());
    }
    let roots = lookup::search_roots(args.data_dir.as_deref());
    println!("lookup order (first folder holding a dataset wins):");
    for (p, src) in &roots {
        let state = if p.is_dir() { "" } else { "  (absent)" };
        println!("  {:<22} {}{state}", src.to_string(), p.display());
    }
    let mut found = 0;
    let all = lookup::datasets();
    for info in &all {
        match lookup::locate_in_chain(args.data_dir.as_deref(), info) {
            Ok((path, src)) if args.no_verify => {
                found += 1;
                println!("  ok       {:<15} {}  ({src})", info.name, path.display());
            }
            Ok((path, src)) => {
                // verify() takes the folder above the dataset's rel_path; a system location is
                // the dataset itself, which verify() finds through alt_path.
                let dir = path
                    .to_str()
                    .and_then(|p| p.strip_suffix(info.rel_path))
                    .map_or_else(|| path.clone(), PathBuf::from);
                match lookup::verify(&dir, info) {
                    Ok(summary) => {
                        found += 1;
                        println!(
                            "  ok       {:<15} {}  ({src}) [{summary}]",
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
    if found < all.len() {
        println!("fetch the missing ones with: ferrolab data fetch --all");
    }
    Ok(())
}

fn run_fetch(args: &FetchArgs) -> anyhow::Result<()> {
    let names: Vec<String> = if args.all {
        lookup::datasets()
            .iter()
            .map(|d| d.name.to_string())
            .collect()
    } else {
        let mut out = Vec::new();
        for n in &args.names {
            let info = lookup::dataset(n).ok_or_else(|| {
                let known: Vec<&str> = lookup::datasets().iter().map(|d| d.name).collect();
                crate::common::UsageError(format!(
                    "unknown dataset {n:?}; known: {}",
                    known.join(", ")
                ))
            })?;
            if !out.iter().any(|o| o == info.name) {
                out.push(info.name.to_string());
            }
        }
        out
    };
    let dest = fetch::fetch_dir(args.data_dir.as_deref())
        .map_err(|e| crate::common::UsageError(e.to_string()))?;
    // A folder that does not exist yet is created; anything else in its place is the caller's.
    if dest.exists() && !dest.is_dir() {
        return Err(crate::common::UsageError(format!(
            "--data-dir {} is not a folder",
            dest.display()
        ))
        .into());
    }
    eprintln!("fetching into {}", dest.display());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = fetch::fetch_many(&refs, &dest, &FetchOptions::default());
    let mut failed = 0;
    for (name, r) in &results {
        match r {
            Ok(p) => println!("  ok       {name:<15} {}", p.display()),
            Err(e) => {
                failed += 1;
                println!("  FAILED   {name:<15} {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} datasets could not be fetched",
            results.len()
        );
    }
    Ok(())
}
