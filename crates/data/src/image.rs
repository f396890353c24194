//! PNG images and label masks, decoded with the `png` crate (pure Rust, already in the lock).
//!
//! Two readers, because pictures and masks want opposite decodings:
//! - [`read_png`] gives 8-bit pixels the way viewers show them: palettes expanded to RGB,
//!   1/2/4-bit gray scaled to 0..=255, 16-bit samples cut to their high byte.
//! - [`read_png_mask`] gives the stored sample values untouched: a palette index *is* the class
//!   (PASCAL VOC stores its masks so), a 1-bit mask stays 0/1, 16-bit labels stay exact.
//!
//! Every failure is a [`DataError`] naming the file and what is wrong; nothing panics on a bad
//! file.

use std::io::{BufReader, Cursor};
use std::path::Path;

use png::{BitDepth, ColorType, Decoder, Transformations};

use crate::error::{DataError, Result};

/// The most bytes a decoded image may take (512 MiB): far above any dataset image we read, and a
/// bound that stops a tiny crafted header from asking for gigabytes.
pub const MAX_DECODED_BYTES: usize = 512 << 20;

/// An 8-bit image, row-major, channels interleaved (`data[(y * width + x) * channels + c]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Image {
    /// A gray image of `width` x `height` from row-major bytes.
    pub fn gray(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        Self::new(width, height, 1, data)
    }

    /// Checks that `data` holds exactly `width * height * channels` bytes.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Self> {
        if !(1..=4).contains(&channels) {
            return Err(DataError::invalid(
                "image",
                format!("{channels} channels; expected 1 to 4"),
            ));
        }
        let want = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(channels));
        if want != Some(data.len()) {
            return Err(DataError::invalid(
                "image",
                format!(
                    "{width}x{height}x{channels} does not hold {} bytes",
                    data.len()
                ),
            ));
        }
        Ok(Image {
            width,
            height,
            channels,
            data,
        })
    }

    /// One byte per pixel: gray stays as it is, colour becomes luma with PIL's `convert("L")`
    /// weights (ITU-R 601, fixed point, rounded) so that gray values match the Python loaders
    /// the reference implementations use; alpha is dropped.
    pub fn to_gray(&self) -> Vec<u8> {
        match self.channels {
            1 => self.data.clone(),
            2 => self.data.chunks_exact(2).map(|p| p[0]).collect(),
            _ => self
                .data
                .chunks_exact(self.channels)
                .map(|p| {
                    let l = u32::from(p[0]) * 19595
                        + u32::from(p[1]) * 38470
                        + u32::from(p[2]) * 7471
                        + 0x8000;
                    (l >> 16) as u8
                })
                .collect(),
        }
    }
}

/// A label mask: one stored sample value per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u16>,
}

/// Reads a PNG as 8-bit pixels (see the module notes for how other depths are converted).
pub fn read_png(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    decode_png(&bytes, path)
}

/// Decodes PNG bytes as [`read_png`] does; `path` only names the source in errors.
pub fn decode_png(bytes: &[u8], path: &Path) -> Result<Image> {
    let mut decoder = Decoder::new(BufReader::new(Cursor::new(bytes)));
    decoder.set_transformations(Transformations::normalize_to_color8());
    decoder.set_limits(png::Limits {
        bytes: MAX_DECODED_BYTES,
    });
    let mut reader = decoder.read_info().map_err(|e| png_error(path, &e))?;
    let (color, depth) = reader.output_color_type();
    let channels = match (color, depth) {
        (ColorType::Grayscale, BitDepth::Eight) => 1,
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => 2,
        (ColorType::Rgb, BitDepth::Eight) => 3,
        (ColorType::Rgba, BitDepth::Eight) => 4,
        other => {
            return Err(DataError::malformed(
                path,
                "png header",
                format!("unsupported output colour type {other:?}"),
            ));
        }
    };
    let (width, height, data) = read_frame(&mut reader, path)?;
    Image::new(width, height, channels, data).map_err(|e| {
        DataError::malformed(
            path,
            "png image data",
            format!("decoded size mismatch: {e}"),
        )
    })
}

/// Reads a PNG label mask: gray or palette samples as stored (1 to 16 bits), alpha ignored.
/// An RGB(A) mask is accepted only where every pixel is gray (`r == g == b`); a coloured pixel
/// is an error naming it, since no single class value can be read from it.
pub fn read_png_mask(path: impl AsRef<Path>) -> Result<Mask> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    decode_png_mask(&bytes, path)
}

/// Decodes PNG bytes as [`read_png_mask`] does; `path` only names the source in errors.
pub fn decode_png_mask(bytes: &[u8], path: &Path) -> Result<Mask> {
    let mut decoder = Decoder::new(BufReader::new(Cursor::new(bytes)));
    decoder.set_transformations(Transformations::IDENTITY);
    decoder.set_limits(png::Limits {
        bytes: MAX_DECODED_BYTES,
    });
    let mut reader = decoder.read_info().map_err(|e| png_error(path, &e))?;
    let (color, depth) = reader.output_color_type();
    let (width, height, raw) = read_frame(&mut reader, path)?;
    let samples_per_pixel = match color {
        ColorType::Grayscale | ColorType::Indexed => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
    };
    let bits = match depth {
        BitDepth::One => 1,
        BitDepth::Two => 2,
        BitDepth::Four => 4,
        BitDepth::Eight => 8,
        BitDepth::Sixteen => 16,
    };
    // Rows are padded to whole bytes, so samples are unpacked row by row.
    let row_bytes = (width * samples_per_pixel * bits).div_ceil(8);
    if raw.len() < row_bytes * height {
        return Err(DataError::malformed(
            path,
            "png image data",
            format!(
                "{} bytes decoded, {} expected",
                raw.len(),
                row_bytes * height
            ),
        ));
    }
    let mut data = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = &raw[y * row_bytes..(y + 1) * row_bytes];
        for x in 0..width {
            let sample = |c: usize| -> u16 {
                let i = x * samples_per_pixel + c;
                match bits {
                    16 => u16::from_be_bytes([row[2 * i], row[2 * i + 1]]),
                    8 => u16::from(row[i]),
                    b => {
                        let per_byte = 8 / b;
                        let shift = 8 - b * (i % per_byte + 1);
                        u16::from((row[i / per_byte] >> shift) & ((1u8 << b) - 1))
                    }
                }
            };
            let v = sample(0);
            if samples_per_pixel >= 3 && (sample(1) != v || sample(2) != v) {
                return Err(DataError::malformed(
                    path,
                    format!("pixel (x={x}, y={y})"),
                    format!(
                        "colour ({}, {}, {}) in a mask; masks must be gray or palette PNGs",
                        v,
                        sample(1),
                        sample(2)
                    ),
                ));
            }
            data.push(v);
        }
    }
    Ok(Mask {
        width,
        height,
        data,
    })
}

/// Writes an 8-bit PNG (1 to 4 channels), whole or not at all (an earlier file at `path` is
/// replaced only once the new one is complete).
pub fn write_png(path: impl AsRef<Path>, image: &Image) -> Result<()> {
    let path = path.as_ref();
    crate::io::write_atomic(path, &png_bytes(image)?)
}

/// An 8-bit PNG (1 to 4 channels) in memory.
pub fn png_bytes(image: &Image) -> Result<Vec<u8>> {
    let color = match image.channels {
        1 => ColorType::Grayscale,
        2 => ColorType::GrayscaleAlpha,
        3 => ColorType::Rgb,
        4 => ColorType::Rgba,
        c => {
            return Err(DataError::invalid(
                "image",
                format!("{c} channels; expected 1 to 4"),
            ));
        }
    };
    let (w, h) = match (u32::try_from(image.width), u32::try_from(image.height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(DataError::invalid("image", "too large for PNG")),
    };
    let mut out = Vec::with_capacity(image.data.len() / 2 + 1024);
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(BitDepth::Eight);
    let err = |e: png::EncodingError| DataError::invalid("image", e.to_string());
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(&image.data).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    crate::npz::ensure_regular(path)?;
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

fn read_frame<R: std::io::BufRead + std::io::Seek>(
    reader: &mut png::Reader<R>,
    path: &Path,
) -> Result<(usize, usize, Vec<u8>)> {
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| DataError::malformed(path, "png header", "image size overflows memory"))?;
    if size > MAX_DECODED_BYTES {
        return Err(DataError::malformed(
            path,
            "png header",
            format!("{size} decoded bytes, above the {MAX_DECODED_BYTES} limit"),
        ));
    }
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| png_error(path, &e))?;
    buf.truncate(info.buffer_size());
    Ok((info.width as usize, info.height as usize, buf))
}

fn png_error(path: &Path, e: &png::DecodingError) -> DataError {
    DataError::malformed(path, "png", format!("does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn encode(w: u32, h: u32, color: ColorType, depth: BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(color);
            enc.set_depth(depth);
            if color == ColorType::Indexed {
                enc.set_palette(vec![0u8, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
            }
            let mut wr = enc.write_header().unwrap();
            wr.write_image_data(data).unwrap();
        }
        out
    }

    #[test]
    fn round_trips_gray_and_rgb() {
        let d = TempDir::new("png");
        let img = Image::new(3, 2, 3, (0..18).map(|i| i * 10).collect()).unwrap();
        let p = d.path().join("a.png");
        write_png(&p, &img).unwrap();
        assert_eq!(read_png(&p).unwrap(), img);
        let g = Image::gray(2, 2, vec![0, 1, 2, 255]).unwrap();
        write_png(&p, &g).unwrap();
        assert_eq!(read_png(&p).unwrap(), g);
        assert_eq!(read_png_mask(&p).unwrap().data, vec![0, 1, 2, 255]);
        // Replaced through a temporary file: nothing else is left in the folder, and an image
        // that cannot be encoded leaves the earlier file as it was.
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let bad = Image {
            width: 1,
            height: 1,
            channels: 5,
            data: vec![0; 5],
        };
        assert!(write_png(&p, &bad).is_err());
        assert_eq!(read_png(&p).unwrap(), g);
    }

    #[test]
    fn luma_matches_pil() {
        // PIL: Image.new("RGB", (1, 1), (200, 100, 50)).convert("L") -> 124.
        let img = Image::new(1, 1, 3, vec![200, 100, 50]).unwrap();
        assert_eq!(img.to_gray(), vec![124]);
    }

    #[test]
    fn mask_keeps_palette_indices_and_low_bit_depths() {
        let p = Path::new("m.png");
        // 5 pixels, 2 bits each, indices 0 1 2 3 1, padded to 2 bytes.
        let bytes = encode(
            5,
            1,
            ColorType::Indexed,
            BitDepth::Two,
            &[0b0001_1011, 0b0100_0000],
        );
        assert_eq!(
            decode_png_mask(&bytes, p).unwrap().data,
            vec![0, 1, 2, 3, 1]
        );
        // The image reader expands the palette to colour.
        let img = decode_png(&bytes, p).unwrap();
        assert_eq!(img.channels, 3);
        assert_eq!(&img.data[3..6], &[255, 0, 0]);
        let bytes = encode(
            3,
            2,
            ColorType::Grayscale,
            BitDepth::One,
            &[0b1010_0000, 0b0100_0000],
        );
        assert_eq!(
            decode_png_mask(&bytes, p).unwrap().data,
            vec![1, 0, 1, 0, 1, 0]
        );
        let bytes = encode(2, 1, ColorType::Grayscale, BitDepth::Sixteen, &[1, 2, 0, 7]);
        assert_eq!(decode_png_mask(&bytes, p).unwrap().data, vec![258, 7]);
    }

    #[test]
    fn coloured_mask_and_garbage_are_errors_naming_the_file() {
        let p = Path::new("/x/m.png");
        let bytes = encode(2, 1, ColorType::Rgb, BitDepth::Eight, &[3, 3, 3, 1, 2, 3]);
        let e = decode_png_mask(&bytes, p).unwrap_err().to_string();
        assert!(e.contains("/x/m.png") && e.contains("x=1, y=0"), "{e}");
        let e = decode_png(b"not a png at all", p).unwrap_err().to_string();
        assert!(
            e.contains("/x/m.png") && e.contains("does not decode"),
            "{e}"
        );
        let mut truncated = encode(4, 4, ColorType::Grayscale, BitDepth::Eight, &[9; 16]);
        truncated.truncate(truncated.len() - 20);
        assert!(decode_png(&truncated, p).is_err());
        assert!(Image::new(2, 2, 1, vec![0; 3]).is_err());
    }
}
