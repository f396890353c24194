//! `ferrolab adod predict --checkpoint DIR [--draw DIR] IMAGE.png...`: one JSON array per
//! image of `{"bbox": [x, y, w, h], "category": NAME, "score": S}` in the image's pixels; and
//! `ferrolab adod synth --types I,3 --images N --out DIR`: the rendered domains as PNGs and a
//! COCO JSON (`images[].domain` = water type).

use super::checkpoint;
use super::experiment::to_chw;
use super::render::draw_boxes;
use ferrolab_core::nn::float_tensor;
use ferrolab_core::{SysResult, SystemError};
use ferrolab_data::underwater::{SceneConfig, WaterType, write_coco};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The clap command of `predict`.
pub fn command() -> clap::Command {
    clap::Command::new("predict")
        .about(
            "Detect objects: print one JSON array of {bbox [x,y,w,h], category, score} per image",
        )
        .arg(ferrolab_core::system::checkpoint_arg(
            "A checkpoint folder written by `ferrolab adod` (`<out>/checkpoint`)",
        ))
        .arg(
            clap::Arg::new("draw")
                .long("draw")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also write each image with its detections drawn to DIR"),
        )
        .arg(
            clap::Arg::new("conf")
                .long("conf")
                .value_name("SCORE")
                .default_value("0.25")
                .value_parser(clap::value_parser!(f32))
                .help("Smallest score printed"),
        )
        .arg(
            clap::Arg::new("inputs")
                .value_name("IMAGE")
                .num_args(1..)
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("PNG images (resized to the model's input by nearest neighbour)"),
        )
        .arg(ferrolab_core::system::threads_arg())
}

/// Runs `predict`. Every input is read before anything is printed.
pub fn run(m: &clap::ArgMatches) -> SysResult<()> {
    let Some(dir) = m.get_one::<PathBuf>("checkpoint") else {
        return Err(SystemError::usage("adod predict needs --checkpoint DIR"));
    };
    ferrolab_core::backend::try_init_threads(m.get_one::<usize>("threads").copied())?;
    let conf = m.get_one::<f32>("conf").copied().unwrap_or(0.25);
    if !(0.0..1.0).contains(&conf) {
        return Err(SystemError::usage(format!(
            "--conf {conf}: must be in [0, 1)"
        )));
    }
    let inputs: Vec<PathBuf> = m
        .get_many::<PathBuf>("inputs")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let draw = m.get_one::<PathBuf>("draw");
    if let Some(d) = draw {
        check_draw_names(d, &inputs)?;
    }
    let (net, meta) = checkpoint::load(dir)?;
    let s = meta.net.yolo.input_size;
    let mut images = Vec::new();
    for p in &inputs {
        let img = ferrolab_data::image::read_png(p)?;
        if img.width == 0 || img.height == 0 {
            return Err(SystemError::usage(format!("{}: empty image", p.display())));
        }
        images.push(img);
    }
    let device = ferrolab_core::backend::device();
    if let Some(d) = draw {
        std::fs::create_dir_all(d)
            .map_err(|e| SystemError::usage(format!("--draw {}: {e}", d.display())))?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (p, img) in inputs.iter().zip(&images) {
        let rgb = super::coco_input::to_rgb_square(img, s);
        // On a pool worker, as the evaluation runs (`backend::in_pool`).
        let dets: Vec<_> = ferrolab_core::backend::in_pool(|| {
            let x = float_tensor(to_chw(&rgb, s), [1, 3, s, s], &device);
            let o = net.forward(x, 0.0, false);
            net.yolo()
                .detect((o.p32, o.p16), conf, 0.45)
                .into_iter()
                .next()
                .unwrap_or_default()
        });
        let (fx, fy) = (img.width as f32 / s as f32, img.height as f32 / s as f32);
        let arr: Vec<serde_json::Value> = dets
            .iter()
            .take(100)
            .map(|d| {
                serde_json::json!({
                    "bbox": [d.x1 * fx, d.y1 * fy, (d.x2 - d.x1) * fx, (d.y2 - d.y1) * fy],
                    "category": meta.categories.get(d.class).map_or("?", String::as_str),
                    "score": d.score,
                })
            })
            .collect();
        if let Err(e) = writeln!(out, "{}", serde_json::Value::Array(arr)) {
            return ferrolab_core::system::stdout_closed(e);
        }
        if let Some(d) = draw {
            let drawn = draw_boxes(&rgb, s, &[], &dets);
            let name = p
                .file_name()
                .map_or_else(|| "image.png".into(), |n| n.to_os_string());
            let img = ferrolab_data::image::Image::new(s, s, 3, drawn)?;
            ferrolab_data::image::write_png(Path::new(d).join(name), &img)
                .map_err(|e| SystemError::runtime(e.to_string()))?;
        }
    }
    if let Err(e) = out.flush() {
        return ferrolab_core::system::stdout_closed(e);
    }
    Ok(())
}

/// A drawing is saved under its input's file name: refused (before any work) when that would
/// replace the input itself (`--draw` is the input's folder) or when two inputs share a name.
fn check_draw_names(draw: &Path, inputs: &[PathBuf]) -> SysResult<()> {
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    let mut seen = std::collections::BTreeMap::new();
    for p in inputs {
        let name = p.file_name().map(std::ffi::OsStr::to_os_string);
        let target = draw.join(name.clone().unwrap_or_else(|| "image.png".into()));
        if same_file(&target, p) {
            return Err(SystemError::usage(format!(
                "--draw {}: would overwrite the input {} (its drawing takes the same name); draw into another folder",
                draw.display(),
                p.display()
            )));
        }
        if let Some(other) = seen.insert(name, p) {
            return Err(SystemError::usage(format!(
                "--draw {}: inputs {} and {} share a file name, so one drawing would replace the other",
                draw.display(),
                other.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

/// The clap command of `synth`.
pub fn synth_command() -> clap::Command {
    clap::Command::new("synth")
        .about("Render underwater images of given Jerlov water types: DIR/images/*.png + DIR/annotations.json (COCO, images[].domain)")
        .arg(
            clap::Arg::new("types")
                .long("types")
                .value_name("LIST")
                .default_value("I,IA,IB,II,III,1,3,5,7,9")
                .help("Comma-separated water types (I, IA, IB, II, III, 1, 3, 5, 7, 9)"),
        )
        .arg(
            clap::Arg::new("images")
                .long("images")
                .value_name("N")
                .default_value("10")
                .value_parser(clap::value_parser!(usize))
                .help("Images per type (the same scenes in every type)"),
        )
        .arg(
            clap::Arg::new("size")
                .long("size")
                .value_name("PX")
                .default_value("128")
                .value_parser(clap::value_parser!(usize))
                .help("Square image side"),
        )
        .arg(
            clap::Arg::new("seed")
                .long("seed")
                .value_name("N")
                .default_value("0")
                .value_parser(clap::value_parser!(u64)),
        )
        .arg(
            clap::Arg::new("out")
                .long("out")
                .value_name("DIR")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf)),
        )
}

/// Runs `synth`.
pub fn synth_run(m: &clap::ArgMatches) -> SysResult<()> {
    let types = m.get_one::<String>("types").map_or("", String::as_str);
    let types =
        WaterType::parse_list(types).map_err(|e| SystemError::usage(format!("--types: {e}")))?;
    if types.is_empty() {
        return Err(SystemError::usage("--types: no water type given"));
    }
    let n = m.get_one::<usize>("images").copied().unwrap_or(10);
    if !(1..=100_000).contains(&n) {
        return Err(SystemError::usage(format!(
            "--images {n}: must be in 1..=100000"
        )));
    }
    let size = m.get_one::<usize>("size").copied().unwrap_or(128);
    let scene = SceneConfig {
        width: size,
        height: size,
        ..SceneConfig::default()
    };
    scene
        .check()
        .map_err(|e| SystemError::usage(format!("--size {size}: {e}")))?;
    let seed = m.get_one::<u64>("seed").copied().unwrap_or(0);
    let Some(out) = m.get_one::<PathBuf>("out") else {
        return Err(SystemError::usage("adod synth needs --out DIR"));
    };
    // Whole or not at all: a half-rendered set would read as a smaller finished one.
    let written = ferrolab_core::run::fill_fresh_folder(out, |dir| {
        write_coco(dir, &types, n, &scene, seed).map_err(SystemError::from)
    })?;
    eprintln!("adod synth: {written} images in {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawing_may_not_replace_an_input_or_another_drawing() {
        let d = std::env::temp_dir().join(format!("fl-adod-draw-{}", std::process::id()));
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for p in [a.join("x.png"), b.join("x.png"), a.join("y.png")] {
            std::fs::write(p, b"png").unwrap();
        }
        let e = check_draw_names(&a, &[a.join("x.png")]).unwrap_err();
        assert!(e.to_string().contains("would overwrite the input"), "{e}");
        // The same folder named another way is still the input's folder.
        let e = check_draw_names(&a.join("..").join("a"), &[a.join("y.png")]).unwrap_err();
        assert!(e.to_string().contains("would overwrite the input"), "{e}");
        let e = check_draw_names(&d.join("out"), &[a.join("x.png"), b.join("x.png")]).unwrap_err();
        assert!(e.to_string().contains("share a file name"), "{e}");
        check_draw_names(&d.join("out"), &[a.join("x.png"), a.join("y.png")]).unwrap();
        check_draw_names(&b, &[a.join("y.png")]).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
