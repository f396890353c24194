//! Seeded image augmentations for classification, segmentation and detection.
//!
//! Every random transform takes the caller's generator, so a run's augmentations follow from
//! its seed alone; the deterministic core of each (`*_at`, [`hflip`], [`rot90`], [`crop`]) is
//! public so tests and users can apply an exact transform.
//!
//! - Classification: pad-and-crop (zero padding of `pad` pixels on each side, then a random
//!   crop back to the original size, as the CIFAR ResNet recipe) and a random horizontal flip.
//! - Segmentation: the image and its label mask go through the same geometry: flips, rotations
//!   by multiples of 90° and small angles (bilinear for the image, nearest neighbour for the
//!   mask, so no label is ever blended), random crops.
//! - Detection: flip, scale and crop move the boxes with the image. After a crop each box is
//!   clipped to the crop, and it is kept only when at least `min_visible` of its area (and at
//!   least one pixel in each direction) is still inside: the rule of albumentations'
//!   `min_visibility`. A box whose object has mostly left the frame is dropped rather than
//!   kept as a sliver that no longer shows the object.
//!
//! Bad input (a mask whose size differs from its image, a box outside the image or of
//! negative size) is an [`AugmentError`] naming the sample index, the box index and the
//! problem, found by the `check` methods before anything is transformed.

use rand::{Rng, RngExt};

/// Why a sample cannot be augmented.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    /// The pixel buffer does not hold `channels × height × width` values.
    #[error("image {index}: {len} values do not make a {channels}x{height}x{width} image")]
    ImageSize {
        /// Sample index.
        index: usize,
        /// Values in the buffer.
        len: usize,
        /// Declared channels.
        channels: usize,
        /// Declared height.
        height: usize,
        /// Declared width.
        width: usize,
    },
    /// A segmentation mask whose size is not its image's.
    #[error("sample {index}: mask is {mask_h}x{mask_w} (HxW) but its image is {image_h}x{image_w}")]
    MaskSize {
        /// Sample index.
        index: usize,
        /// Mask height.
        mask_h: usize,
        /// Mask width.
        mask_w: usize,
        /// Image height.
        image_h: usize,
        /// Image width.
        image_w: usize,
    },
    /// A detection box that is not a box inside its image.
    #[error("sample {index}, box {box_index}: {problem}")]
    BadBox {
        /// Sample index.
        index: usize,
        /// Box index within the sample.
        box_index: usize,
        /// What is wrong, with the numbers.
        problem: String,
    },
    /// A transform setting that does not fit the image (a crop larger than the image).
    #[error("sample {index}: {problem}")]
    Unfit {
        /// Sample index.
        index: usize,
        /// What does not fit.
        problem: String,
    },
}

/// A planar (`CHW`) image of `f32` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels × height × width` values, channel-major.
    pub data: Vec<f32>,
}

impl Image {
    /// An image from its values; `index` names the sample in the error.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
        index: usize,
    ) -> Result<Self, AugmentError> {
        let want = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width));
        if want != Some(data.len()) {
            return Err(AugmentError::ImageSize {
                index,
                len: data.len(),
                channels,
                height,
                width,
            });
        }
        Ok(Image {
            channels,
            height,
            width,
            data,
        })
    }

    /// An all-zero image.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        Image {
            channels,
            height,
            width,
            data: vec![0.0; channels * height * width],
        }
    }

    /// The value at channel `c`, row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    fn check(&self, index: usize) -> Result<(), AugmentError> {
        let want = self
            .channels
            .checked_mul(self.height)
            .and_then(|v| v.checked_mul(self.width));
        if want == Some(self.data.len()) {
            Ok(())
        } else {
            Err(AugmentError::ImageSize {
                index,
                len: self.data.len(),
                channels: self.channels,
                height: self.height,
                width: self.width,
            })
        }
    }
}

/// A segmentation label mask (one class id per pixel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height × width` labels, row-major.
    pub data: Vec<u8>,
}

impl Mask {
    /// The label at row `y`, column `x`.
    pub fn at(&self, y: usize, x: usize) -> u8 {
        self.data[y * self.width + x]
    }
}

/// A box in pixel coordinates: `[x0, x1) × [y0, y1)`, so a box covering the whole `W × H`
/// image is `(0, 0, W, H)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge (exclusive).
    pub x1: f32,
    /// Bottom edge (exclusive).
    pub y1: f32,
    /// Object class.
    pub class: usize,
}

impl BBox {
    /// Width (negative for a malformed box).
    pub fn width(&self) -> f32 {
        self.x1 - self.x0
    }
    /// Height (negative for a malformed box).
    pub fn height(&self) -> f32 {
        self.y1 - self.y0
    }
    /// Area (0 for a box of negative size).
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry shared by images and masks: every transform below is an index map from output
// pixels to source pixels, applied to each plane, so an image and its mask can never disagree.

/// Builds `planes` planes of `oh × ow` values, each output pixel taken from the source pixel
/// `src_of(y, x)` or `fill` where that is `None`.
fn remap<T: Copy>(
    src: &[T],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    fill: T,
    src_of: impl Fn(usize, usize) -> Option<(usize, usize)>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        let plane = &src[p * h * w..(p + 1) * h * w];
        for y in 0..oh {
            for x in 0..ow {
                out.push(match src_of(y, x) {
                    Some((sy, sx)) => plane[sy * w + sx],
                    None => fill,
                });
            }
        }
    }
    out
}

fn map_image(
    img: &Image,
    out: (usize, usize),
    src_of: impl Fn(usize, usize) -> Option<(usize, usize)>,
) -> Image {
    Image {
        channels: img.channels,
        height: out.0,
        width: out.1,
        data: remap(
            &img.data,
            img.channels,
            (img.height, img.width),
            out,
            0.0,
            src_of,
        ),
    }
}

fn map_mask(
    m: &Mask,
    out: (usize, usize),
    fill: u8,
    src_of: impl Fn(usize, usize) -> Option<(usize, usize)>,
) -> Mask {
    Mask {
        height: out.0,
        width: out.1,
        data: remap(&m.data, 1, (m.height, m.width), out, fill, src_of),
    }
}

/// Mirror left-right.
pub fn hflip(img: &Image) -> Image {
    let w = img.width;
    map_image(img, (img.height, w), |y, x| Some((y, w - 1 - x)))
}

/// Mirror top-bottom.
pub fn vflip(img: &Image) -> Image {
    let h = img.height;
    map_image(img, (h, img.width), |y, x| Some((h - 1 - y, x)))
}

/// Source pixel of output `(y, x)` after `k` quarter turns clockwise of an `h × w` plane, and
/// the output size.
fn rot90_map(
    k: usize,
    h: usize,
    w: usize,
) -> ((usize, usize), impl Fn(usize, usize) -> (usize, usize)) {
    let k = k % 4;
    let out = if k % 2 == 1 { (w, h) } else { (h, w) };
    (out, move |y: usize, x: usize| match k {
        // Clockwise: the left column becomes the top row.
        1 => (h - 1 - x, y),
        2 => (h - 1 - y, w - 1 - x),
        3 => (x, w - 1 - y),
        _ => (y, x),
    })
}

/// `k` quarter turns clockwise (a non-square image swaps its height and width).
pub fn rot90(img: &Image, k: usize) -> Image {
    let (out, f) = rot90_map(k, img.height, img.width);
    map_image(img, out, |y, x| Some(f(y, x)))
}

/// The `h × w` window whose top-left pixel is `(y, x)`; pixels past the image are 0.
pub fn crop(img: &Image, y: usize, x: usize, h: usize, w: usize) -> Image {
    let (ih, iw) = (img.height, img.width);
    map_image(img, (h, w), |r, c| {
        let (sy, sx) = (y + r, x + c);
        (sy < ih && sx < iw).then_some((sy, sx))
    })
}

// ---------------------------------------------------------------------------------------------
// Classification.

/// Pad by `pad` zero pixels on every side, then take the original-size window whose top-left
/// corner is `(dy, dx)` in the padded image (`dy, dx ∈ 0..=2·pad`; `(pad, pad)` is the
/// identity).
pub fn pad_crop_at(img: &Image, pad: usize, dy: usize, dx: usize) -> Image {
    let (h, w) = (img.height, img.width);
    map_image(img, (h, w), |y, x| {
        let (py, px) = (y + dy, x + dx);
        (py >= pad && px >= pad && py - pad < h && px - pad < w).then(|| (py - pad, px - pad))
    })
}

/// [`pad_crop_at`] at a uniformly drawn offset.
pub fn pad_crop<R: Rng + ?Sized>(img: &Image, pad: usize, rng: &mut R) -> Image {
    let dy = rng.random_range(0..=2 * pad);
    let dx = rng.random_range(0..=2 * pad);
    pad_crop_at(img, pad, dy, dx)
}

/// The classification recipe: pad-crop, then a horizontal flip with probability 1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyAugment {
    /// Zero padding before the random crop (0 = no crop); 4 for 32×32 images, 2 for 28×28.
    pub pad: usize,
    /// Random horizontal flips.
    pub flip: bool,
}

impl ClassifyAugment {
    /// One augmented copy of `img`. Draws exactly three numbers from `rng` whatever the
    /// settings, so turning one transform off does not shift the others' draws.
    pub fn apply<R: Rng + ?Sized>(&self, img: &Image, rng: &mut R) -> Image {
        let dy = rng.random_range(0..=2 * self.pad);
        let dx = rng.random_range(0..=2 * self.pad);
        let flip = rng.random_bool(0.5);
        let out = if self.pad > 0 {
            pad_crop_at(img, self.pad, dy, dx)
        } else {
            img.clone()
        };
        if self.flip && flip { hflip(&out) } else { out }
    }
}

// ---------------------------------------------------------------------------------------------
// Segmentation.

/// An image with its label mask.
#[derive(Debug, Clone, PartialEq)]
pub struct SegSample {
    /// The image.
    pub image: Image,
    /// One label per pixel; must be the image's size.
    pub mask: Mask,
}

impl SegSample {
    /// Refuses a malformed image or a mask whose size differs from its image; `index` names
    /// the sample.
    pub fn check(&self, index: usize) -> Result<(), AugmentError> {
        self.image.check(index)?;
        let (m, i) = (&self.mask, &self.image);
        if m.height != i.height || m.width != i.width || m.data.len() != m.height * m.width {
            return Err(AugmentError::MaskSize {
                index,
                mask_h: m.height,
                mask_w: if m.height > 0 && m.data.len() != m.height * m.width {
                    m.data.len() / m.height
                } else {
                    m.width
                },
                image_h: i.height,
                image_w: i.width,
            });
        }
        Ok(())
    }

    /// Mirror left-right.
    pub fn hflip(&self) -> SegSample {
        let w = self.image.width;
        let f = |y: usize, x: usize| Some((y, w - 1 - x));
        self.map((self.image.height, w), 0, f)
    }

    /// Mirror top-bottom.
    pub fn vflip(&self) -> SegSample {
        let h = self.image.height;
        let f = |y: usize, x: usize| Some((h - 1 - y, x));
        self.map((h, self.image.width), 0, f)
    }

    /// `k` quarter turns clockwise.
    pub fn rot90(&self, k: usize) -> SegSample {
        let (out, f) = rot90_map(k, self.image.height, self.image.width);
        self.map(out, 0, |y, x| Some(f(y, x)))
    }

    /// The `h × w` window at `(y, x)`; the caller keeps it inside the image.
    pub fn crop(&self, y: usize, x: usize, h: usize, w: usize) -> SegSample {
        let (ih, iw) = (self.image.height, self.image.width);
        self.map((h, w), 0, |r, c| {
            let (sy, sx) = (y + r, x + c);
            (sy < ih && sx < iw).then_some((sy, sx))
        })
    }

    /// Rotation by `degrees` (clockwise on screen) about the image centre, size kept: the image
    /// is sampled bilinearly, the mask by nearest neighbour from the same inverse map, so a
    /// label is never blended; pixels whose source lies outside get 0 in the image and
    /// `mask_fill` in the mask.
    pub fn rotate(&self, degrees: f32, mask_fill: u8) -> SegSample {
        let (h, w) = (self.image.height, self.image.width);
        let (s, c) = degrees.to_radians().sin_cos();
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        // Inverse map: the output pixel (y, x) comes from the source point rotated back.
        let source = |y: usize, x: usize| {
            let (dy, dx) = (y as f32 - cy, x as f32 - cx);
            (cy + c * dy - s * dx, cx + s * dy + c * dx)
        };
        let mut image = Image::zeros(self.image.channels, h, w);
        let mut mask = Mask {
            height: h,
            width: w,
            data: vec![mask_fill; h * w],
        };
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = source(y, x);
                let (ny, nx) = (sy.round(), sx.round());
                if ny >= 0.0 && nx >= 0.0 && (ny as usize) < h && (nx as usize) < w {
                    mask.data[y * w + x] = self.mask.at(ny as usize, nx as usize);
                }
                for ch in 0..self.image.channels {
                    image.data[(ch * h + y) * w + x] = bilinear(&self.image, ch, sy, sx);
                }
            }
        }
        SegSample { image, mask }
    }

    fn map(
        &self,
        out: (usize, usize),
        fill: u8,
        f: impl Fn(usize, usize) -> Option<(usize, usize)> + Copy,
    ) -> SegSample {
        SegSample {
            image: map_image(&self.image, out, f),
            mask: map_mask(&self.mask, out, fill, f),
        }
    }
}

/// Bilinear sample of channel `c` at `(y, x)`; neighbours outside the image count as 0.
fn bilinear(img: &Image, c: usize, y: f32, x: f32) -> f32 {
    let (h, w) = (img.height as isize, img.width as isize);
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let (y0, x0) = (y0 as isize, x0 as isize);
    let px = |yy: isize, xx: isize| {
        if yy < 0 || xx < 0 || yy >= h || xx >= w {
            0.0
        } else {
            img.at(c, yy as usize, xx as usize)
        }
    };
    let top = px(y0, x0) * (1.0 - fx) + px(y0, x0 + 1) * fx;
    let bottom = px(y0 + 1, x0) * (1.0 - fx) + px(y0 + 1, x0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The segmentation recipe, each part drawn independently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegAugment {
    /// Random left-right flips.
    pub hflip: bool,
    /// Random top-bottom flips.
    pub vflip: bool,
    /// Random multiples of 90° (a non-square sample changes shape).
    pub rot90: bool,
    /// Small-angle rotation drawn uniformly from `[-max_degrees, max_degrees]` (0 = off).
    pub max_degrees: f32,
    /// Label given to mask pixels rotated in from outside the image.
    pub mask_fill: u8,
    /// A random crop of this `(height, width)` last (`None` = none).
    pub crop: Option<(usize, usize)>,
}

impl SegAugment {
    /// One augmented copy of sample `index` (checked first).
    pub fn apply<R: Rng + ?Sized>(
        &self,
        s: &SegSample,
        index: usize,
        rng: &mut R,
    ) -> Result<SegSample, AugmentError> {
        s.check(index)?;
        if let Some((h, w)) = self.crop {
            // Quarter turns may swap the sides, so both orientations must fit.
            let (ih, iw) = (s.image.height, s.image.width);
            let fits = h <= ih && w <= iw && (!self.rot90 || (h <= iw && w <= ih));
            if !fits || h == 0 || w == 0 {
                return Err(AugmentError::Unfit {
                    index,
                    problem: format!("crop {h}x{w} does not fit the {ih}x{iw} image"),
                });
            }
        }
        let mut out = s.clone();
        if self.hflip && rng.random_bool(0.5) {
            out = out.hflip();
        }
        if self.vflip && rng.random_bool(0.5) {
            out = out.vflip();
        }
        if self.rot90 {
            let k = rng.random_range(0..4usize);
            out = out.rot90(k);
        }
        if self.max_degrees > 0.0 {
            let a = rng.random_range(-self.max_degrees..=self.max_degrees);
            out = out.rotate(a, self.mask_fill);
        }
        if let Some((h, w)) = self.crop {
            let y = rng.random_range(0..=out.image.height - h);
            let x = rng.random_range(0..=out.image.width - w);
            out = out.crop(y, x, h, w);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Detection.

/// An image with its object boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct DetSample {
    /// The image.
    pub image: Image,
    /// Boxes in pixel coordinates of `image`.
    pub boxes: Vec<BBox>,
}

impl DetSample {
    /// Refuses a malformed image, and a box that is not finite, has negative or zero size, or
    /// reaches outside the image; the error names the sample, the box and the numbers.
    pub fn check(&self, index: usize) -> Result<(), AugmentError> {
        self.image.check(index)?;
        let (w, h) = (self.image.width as f32, self.image.height as f32);
        for (box_index, b) in self.boxes.iter().enumerate() {
            let bad = |problem: String| AugmentError::BadBox {
                index,
                box_index,
                problem,
            };
            let coords = [b.x0, b.y0, b.x1, b.y1];
            if coords.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("coordinates {coords:?} are not all finite")));
            }
            if b.width() <= 0.0 || b.height() <= 0.0 {
                return Err(bad(format!(
                    "negative or empty size {}x{} (x0 {} x1 {}, y0 {} y1 {})",
                    b.width(),
                    b.height(),
                    b.x0,
                    b.x1,
                    b.y0,
                    b.y1
                )));
            }
            if b.x0 < 0.0 || b.y0 < 0.0 || b.x1 > w || b.y1 > h {
                return Err(bad(format!(
                    "({}, {})-({}, {}) reaches outside the {w}x{h} (WxH) image",
                    b.x0, b.y0, b.x1, b.y1
                )));
            }
        }
        Ok(())
    }

    /// Mirror left-right, boxes with it.
    pub fn hflip(&self) -> DetSample {
        let w = self.image.width as f32;
        DetSample {
            image: hflip(&self.image),
            boxes: self
                .boxes
                .iter()
                .map(|b| BBox {
                    x0: w - b.x1,
                    x1: w - b.x0,
                    ..*b
                })
                .collect(),
        }
    }

    /// Resize by `factor` (bilinear, sampling at pixel centres); boxes scale by the exact
    /// ratio of the new to the old size and are clipped to the new image.
    pub fn scale(&self, factor: f32) -> DetSample {
        let (h, w) = (self.image.height, self.image.width);
        let oh = ((h as f32 * factor).round() as usize).max(1);
        let ow = ((w as f32 * factor).round() as usize).max(1);
        let (ry, rx) = (oh as f32 / h as f32, ow as f32 / w as f32);
        let mut image = Image::zeros(self.image.channels, oh, ow);
        for c in 0..self.image.channels {
            for y in 0..oh {
                // Pixel centres line up: out centre y + 0.5 maps to source (y + 0.5) / ry;
                // clamped so edges replicate instead of fading to the zero border.
                let sy = ((y as f32 + 0.5) / ry - 0.5).clamp(0.0, h as f32 - 1.0);
                for x in 0..ow {
                    let sx = ((x as f32 + 0.5) / rx - 0.5).clamp(0.0, w as f32 - 1.0);
                    image.data[(c * oh + y) * ow + x] = bilinear(&self.image, c, sy, sx);
                }
            }
        }
        let boxes = self
            .boxes
            .iter()
            .map(|b| BBox {
                x0: (b.x0 * rx).clamp(0.0, ow as f32),
                x1: (b.x1 * rx).clamp(0.0, ow as f32),
                y0: (b.y0 * ry).clamp(0.0, oh as f32),
                y1: (b.y1 * ry).clamp(0.0, oh as f32),
                class: b.class,
            })
            .filter(|b| b.width() > 0.0 && b.height() > 0.0)
            .collect();
        DetSample { image, boxes }
    }

    /// The `h × w` window at `(y, x)`. Each box is clipped to the window and kept when at
    /// least `min_visible` of its area and at least one pixel each way remain (see the
    /// module page); the others are dropped.
    pub fn crop(&self, y: usize, x: usize, h: usize, w: usize, min_visible: f32) -> DetSample {
        let (fx, fy) = (x as f32, y as f32);
        let boxes = self
            .boxes
            .iter()
            .filter_map(|b| {
                let c = BBox {
                    x0: b.x0.max(fx) - fx,
                    y0: b.y0.max(fy) - fy,
                    x1: b.x1.min(fx + w as f32) - fx,
                    y1: b.y1.min(fy + h as f32) - fy,
                    class: b.class,
                };
                let visible =
                    c.width() >= 1.0 && c.height() >= 1.0 && c.area() >= min_visible * b.area();
                visible.then_some(c)
            })
            .collect();
        DetSample {
            image: crop(&self.image, y, x, h, w),
            boxes,
        }
    }
}

/// The detection recipe: flip, scale, crop, in that order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetAugment {
    /// Random left-right flips.
    pub hflip: bool,
    /// Scale factor drawn uniformly from `[lo, hi]` (`(1, 1)` = off).
    pub scale: (f32, f32),
    /// A random crop of this `(height, width)` after scaling (`None` = none); an image
    /// smaller than the crop is cropped to its own size on that side.
    pub crop: Option<(usize, usize)>,
    /// Share of a box's area that must stay inside the crop for the box to be kept.
    pub min_visible: f32,
}

impl DetAugment {
    /// One augmented copy of sample `index` (checked first).
    pub fn apply<R: Rng + ?Sized>(
        &self,
        s: &DetSample,
        index: usize,
        rng: &mut R,
    ) -> Result<DetSample, AugmentError> {
        s.check(index)?;
        let (lo, hi) = self.scale;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return Err(AugmentError::Unfit {
                index,
                problem: format!("scale range ({lo}, {hi}) is not 0 < lo <= hi"),
            });
        }
        let mut out = s.clone();
        if self.hflip && rng.random_bool(0.5) {
            out = out.hflip();
        }
        if hi > lo || lo != 1.0 {
            let f = if hi > lo {
                rng.random_range(lo..=hi)
            } else {
                lo
            };
            out = out.scale(f);
        }
        if let Some((h, w)) = self.crop {
            let (h, w) = (h.min(out.image.height), w.min(out.image.width));
            let y = rng.random_range(0..=out.image.height - h);
            let x = rng.random_range(0..=out.image.width - w);
            out = out.crop(y, x, h, w, self.min_visible);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ramp(c: usize, h: usize, w: usize) -> Image {
        let data = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
        Image::new(c, h, w, data, 0).unwrap()
    }

    #[test]
    fn pad_crop_shifts_with_zero_fill_and_is_seeded() {
        let img = ramp(1, 3, 3);
        // Identity at the centre offset.
        assert_eq!(pad_crop_at(&img, 2, 2, 2), img);
        // Window one pixel up-left of the image: a zero row and column enter at top-left.
        let s = pad_crop_at(&img, 2, 1, 1);
        assert_eq!(s.data, vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        // Window at the far corner: the image's bottom-right pixel lands top-left.
        let s = pad_crop_at(&img, 2, 4, 4);
        assert_eq!(s.data, vec![9., 0., 0., 0., 0., 0., 0., 0., 0.]);
        let a = ClassifyAugment { pad: 2, flip: true };
        let img = ramp(2, 28, 28);
        let draw = |seed| {
            let mut r = StdRng::seed_from_u64(seed);
            (0..8).map(|_| a.apply(&img, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // Every output is some shift, possibly mirrored, of the input.
        for out in draw(3) {
            let found = (0..=4).any(|dy| {
                (0..=4).any(|dx| {
                    let s = pad_crop_at(&img, 2, dy, dx);
                    out == s || out == hflip(&s)
                })
            });
            assert!(found);
        }
    }

    #[test]
    fn flips_and_quarter_turns_move_pixels_where_they_should() {
        let img = ramp(1, 2, 3); // [[1,2,3],[4,5,6]]
        assert_eq!(hflip(&img).data, vec![3., 2., 1., 6., 5., 4.]);
        assert_eq!(vflip(&img).data, vec![4., 5., 6., 1., 2., 3.]);
        let r = rot90(&img, 1); // clockwise: [[4,1],[5,2],[6,3]]
        assert_eq!((r.height, r.width), (3, 2));
        assert_eq!(r.data, vec![4., 1., 5., 2., 6., 3.]);
        assert_eq!(rot90(&img, 2).data, vec![6., 5., 4., 3., 2., 1.]);
        assert_eq!(rot90(&rot90(&img, 1), 3), img);
        assert_eq!(hflip(&hflip(&img)), img);
        assert_eq!(crop(&img, 1, 1, 1, 3).data, vec![5., 6., 0.]);
    }

    /// An image whose value at every pixel is 10 × its mask label (two channels), with a few
    /// labelled blocks, so alignment can be checked pixel by pixel.
    fn seg_sample(h: usize, w: usize) -> SegSample {
        let mut mask = vec![0u8; h * w];
        for y in 0..h {
            for x in 0..w {
                mask[y * w + x] = match (y * 3 / h, x * 4 / w) {
                    (0, 0) => 1,
                    (1, 2) | (1, 3) => 2,
                    (2, 1) => 3,
                    _ => 0,
                };
            }
        }
        let plane: Vec<f32> = mask.iter().map(|&m| m as f32 * 10.0).collect();
        let mut data = plane.clone();
        data.extend(plane.iter().map(|v| v + 1.0));
        SegSample {
            image: Image::new(2, h, w, data, 0).unwrap(),
            mask: Mask {
                height: h,
                width: w,
                data: mask,
            },
        }
    }

    /// Share of pixels where the image shows the mask's label; `channels` 1 checks channel 0
    /// only (rotations fill both with 0, which channel 1's `+1` would miss).
    fn aligned_in(s: &SegSample, channels: usize) -> f64 {
        let (h, w) = (s.mask.height, s.mask.width);
        let mut ok = 0;
        for y in 0..h {
            for x in 0..w {
                let m = s.mask.at(y, x) as f32 * 10.0;
                if (0..channels).all(|c| (s.image.at(c, y, x) - m - c as f32).abs() < 1e-4) {
                    ok += 1;
                }
            }
        }
        ok as f64 / (h * w) as f64
    }

    fn aligned(s: &SegSample) -> f64 {
        aligned_in(s, 2)
    }

    #[test]
    fn segmentation_masks_stay_aligned_with_their_images() {
        let s = seg_sample(24, 32);
        assert_eq!(aligned(&s), 1.0);
        for k in 0..4 {
            let r = s.rot90(k);
            assert_eq!(aligned(&r), 1.0, "rot90 {k}");
        }
        assert_eq!(aligned(&s.hflip()), 1.0);
        assert_eq!(aligned(&s.vflip()), 1.0);
        assert_eq!(aligned(&s.crop(3, 5, 10, 12)), 1.0);
        // Small angles: bilinear image vs nearest mask agree away from label edges (a one-pixel
        // band along each edge blends), and a mask shifted by one pixel would fail this.
        let big = seg_sample(96, 128);
        let r = big.rotate(9.0, 0);
        assert!(aligned_in(&r, 1) > 0.95, "{}", aligned_in(&r, 1));
        let mut shifted = r.clone();
        shifted.mask = big.rotate(9.0, 0).crop(0, 2, 96, 128).mask;
        assert!(aligned_in(&shifted, 1) < aligned_in(&r, 1) - 0.02);
        let r = s.rotate(9.0, 0);
        // The mask holds only labels of the input (never blended values).
        assert!(r.mask.data.iter().all(|m| [0, 1, 2, 3].contains(m)));
        // Rotating a mask actually moves it.
        assert_ne!(r.mask, s.mask);
        let a = SegAugment {
            hflip: true,
            vflip: true,
            rot90: true,
            max_degrees: 0.0,
            mask_fill: 0,
            crop: Some((16, 16)),
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut shapes = std::collections::BTreeSet::new();
        for i in 0..20 {
            let o = a.apply(&s, i, &mut rng).unwrap();
            assert_eq!((o.image.height, o.image.width), (16, 16));
            assert_eq!(aligned(&o), 1.0, "draw {i}");
            shapes.insert(o.mask.data.clone());
        }
        assert!(shapes.len() > 10, "augmentations vary: {}", shapes.len());
        let b = SegAugment {
            max_degrees: 15.0,
            ..a
        };
        let mut r1 = StdRng::seed_from_u64(5);
        let mut r2 = StdRng::seed_from_u64(5);
        assert_eq!(
            b.apply(&s, 0, &mut r1).unwrap(),
            b.apply(&s, 0, &mut r2).unwrap()
        );
    }

    #[test]
    fn a_mask_of_another_size_is_refused_with_its_index() {
        let mut s = seg_sample(8, 8);
        s.mask = Mask {
            height: 8,
            width: 6,
            data: vec![0; 48],
        };
        let e = s.check(4).unwrap_err();
        assert!(matches!(e, AugmentError::MaskSize { index: 4, .. }), "{e}");
        let t = e.to_string();
        assert!(
            t.contains("sample 4") && t.contains("8x6") && t.contains("8x8"),
            "{t}"
        );
        let a = SegAugment {
            hflip: true,
            vflip: false,
            rot90: false,
            max_degrees: 0.0,
            mask_fill: 0,
            crop: None,
        };
        assert!(a.apply(&s, 4, &mut StdRng::seed_from_u64(0)).is_err());
        let s = seg_sample(8, 8);
        let big = SegAugment {
            crop: Some((9, 4)),
            ..a
        };
        let e = big.apply(&s, 2, &mut StdRng::seed_from_u64(0)).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }

    /// A 40×60 image with two objects painted as 1.0 on a 0 background, boxes around them.
    fn det_sample() -> DetSample {
        let (h, w) = (40, 60);
        let boxes = vec![
            BBox {
                x0: 4.0,
                y0: 6.0,
                x1: 20.0,
                y1: 18.0,
                class: 1,
            },
            BBox {
                x0: 40.0,
                y0: 20.0,
                x1: 56.0,
                y1: 38.0,
                class: 2,
            },
        ];
        let mut img = Image::zeros(1, h, w);
        for b in &boxes {
            for y in b.y0 as usize..b.y1 as usize {
                for x in b.x0 as usize..b.x1 as usize {
                    img.data[y * w + x] = 1.0;
                }
            }
        }
        DetSample { image: img, boxes }
    }

    /// Mean pixel value inside a box (1.0 = all object).
    fn coverage(s: &DetSample, b: &BBox) -> f32 {
        let (mut sum, mut n) = (0.0, 0);
        for y in b.y0.ceil() as usize..b.y1.floor() as usize {
            for x in b.x0.ceil() as usize..b.x1.floor() as usize {
                sum += s.image.at(0, y, x);
                n += 1;
            }
        }
        if n == 0 { 0.0 } else { sum / n as f32 }
    }

    fn inside(s: &DetSample) -> bool {
        s.check(0).is_ok()
    }

    #[test]
    fn detection_boxes_stay_inside_and_keep_their_objects() {
        let s = det_sample();
        s.check(0).unwrap();
        let f = s.hflip();
        assert!(inside(&f));
        assert_eq!(f.boxes[0].x0, 40.0);
        for b in &f.boxes {
            assert_eq!(coverage(&f, b), 1.0);
        }
        let g = s.scale(0.5);
        assert_eq!((g.image.height, g.image.width), (20, 30));
        assert!(inside(&g));
        for b in &g.boxes {
            assert!(coverage(&g, b) > 0.9, "{b:?} {}", coverage(&g, b));
        }
        let g = s.scale(1.7);
        assert!(inside(&g));
        for b in &g.boxes {
            assert!(coverage(&g, b) > 0.9);
        }
        // A crop that keeps all of box 0 and 100 of box 1's 288 pixels: with min_visible 0.5
        // box 1 is dropped, with 0.3 it is kept, clipped to the crop edge.
        let c = s.crop(0, 0, 30, 50, 0.5);
        assert_eq!(c.boxes.len(), 1);
        assert_eq!(c.boxes[0].class, 1);
        let c = s.crop(0, 0, 30, 50, 0.3);
        assert_eq!(c.boxes.len(), 2);
        assert_eq!(c.boxes[1].x1, 50.0);
        assert_eq!(c.boxes[1].y1, 30.0);
        for b in &c.boxes {
            assert!(inside(&c));
            assert_eq!(coverage(&c, b), 1.0);
        }
        // A crop that misses an object drops its box.
        let c = s.crop(20, 30, 20, 30, 0.0);
        assert_eq!(c.boxes.len(), 1);
        assert_eq!(c.boxes[0].class, 2);
        let a = DetAugment {
            hflip: true,
            scale: (0.6, 1.5),
            crop: Some((32, 32)),
            min_visible: 0.4,
        };
        let mut rng = StdRng::seed_from_u64(11);
        let mut kept = 0;
        for i in 0..50 {
            let o = a.apply(&s, i, &mut rng).unwrap();
            assert!(inside(&o), "draw {i}: {:?}", o.boxes);
            for b in &o.boxes {
                // Clipped boxes lie on the object; at least `min_visible` of each was kept.
                assert!(
                    coverage(&o, b) > 0.85,
                    "draw {i}: {b:?} {}",
                    coverage(&o, b)
                );
                kept += 1;
            }
            // Every object still at least half-visible has its box.
            let visible: usize = (0..o.image.height * o.image.width)
                .filter(|&p| o.image.data[p] > 0.5)
                .count();
            if visible == 0 {
                assert!(o.boxes.is_empty());
            }
        }
        assert!(kept > 20, "{kept}");
    }

    #[test]
    fn bad_boxes_are_refused_with_sample_and_box_index() {
        let mut s = det_sample();
        s.boxes[1].x1 = 61.0;
        let e = s.check(3).unwrap_err().to_string();
        assert!(
            e.contains("sample 3, box 1") && e.contains("outside"),
            "{e}"
        );
        let mut s = det_sample();
        s.boxes[0].x1 = 2.0;
        let e = s.check(0).unwrap_err().to_string();
        assert!(e.contains("box 0") && e.contains("negative"), "{e}");
        let mut s = det_sample();
        s.boxes[0].y0 = -1.0;
        assert!(s.check(0).is_err());
        s.boxes[0].y0 = f32::NAN;
        assert!(s.check(0).unwrap_err().to_string().contains("finite"));
        let a = DetAugment {
            hflip: false,
            scale: (1.0, 1.0),
            crop: None,
            min_visible: 0.5,
        };
        assert!(a.apply(&s, 0, &mut StdRng::seed_from_u64(0)).is_err());
        let img = Image::new(1, 2, 2, vec![0.0; 3], 9).unwrap_err();
        assert!(img.to_string().contains("image 9"), "{img}");
    }
}
