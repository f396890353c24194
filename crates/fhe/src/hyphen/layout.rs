//! Slot layouts for feature maps: where channel c, pixel (y, x) of a C × h × h map sits in
//! the n slots of one or more ciphertexts.
//!
//! Every layout here cuts the n slots into blocks of S = wr² slots, each a wr × wr raster.
//! A map whose logical size h is wr/k (after log2 k stride-2 layers) keeps the raster and
//! interleaves k² channels in it: channel phase (a, b) sits at raster row k·y + a, column
//! k·x + b. This is Lee et al.'s k × k multiplexing (hyphen.md §3.1) and the "2D gap
//! packing" of the HyPHEN reconstruction (§6.5 [R]): the gaps a strided convolution leaves
//! are filled with other channels instead of compacting the raster. What differs between the
//! layouts is which channel group each block holds:
//!
//! * [`Kind::Ca`] (channel-aligned, §6.1 [R]): block j holds channel group ⌊j/ρ⌋; the ρ copies
//!   of a group are adjacent (copy-minor), so a rotation by ρ·S walks through the groups.
//! * [`Kind::Ra`] (replication-aligned): ciphertext m, block j holds group m·g + (j mod g);
//!   the pattern of g groups repeats over all blocks.
//! * [`Kind::Mp`] (Lee et al.'s multiplexed layout, §3.1): copy-major, t sheets per copy.

/// Slot count and raster of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Slots per ciphertext (N/2).
    pub n: usize,
    /// Raster width; a block has wr² slots.
    pub wr: usize,
}

impl Geometry {
    /// Slots per block.
    pub fn s(&self) -> usize {
        self.wr * self.wr
    }

    /// Blocks per ciphertext.
    pub fn blocks(&self) -> usize {
        self.n / self.s()
    }
}

/// Which channel group each block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Channel-aligned with ρ adjacent copies of each group.
    Ca {
        /// Copies per group.
        rho: usize,
    },
    /// Replication-aligned: g groups per ciphertext, repeated.
    Ra {
        /// Groups per ciphertext.
        g: usize,
    },
    /// Multiplexed (Lee et al.): p copies of t sheets.
    Mp {
        /// Sheets (groups) per copy.
        t: usize,
        /// Copies.
        p: usize,
    },
}

/// A feature-map layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Slots and raster.
    pub geo: Geometry,
    /// Gap: channels interleaved k × k in the raster.
    pub k: usize,
    /// Channels.
    pub c: usize,
    /// Block assignment.
    pub kind: Kind,
}

/// A C × h × w tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    /// Channels.
    pub c: usize,
    /// Height (= width).
    pub h: usize,
    /// Values, index (c·h + y)·h + x.
    pub v: Vec<f64>,
}

impl Map {
    /// A zero map.
    pub fn zeros(c: usize, h: usize) -> Self {
        Map {
            c,
            h,
            v: vec![0.0; c * h * h],
        }
    }

    /// Value at (c, y, x).
    pub fn at(&self, c: usize, y: usize, x: usize) -> f64 {
        self.v[(c * self.h + y) * self.h + x]
    }

    /// Mutable value at (c, y, x).
    pub fn at_mut(&mut self, c: usize, y: usize, x: usize) -> &mut f64 {
        &mut self.v[(c * self.h + y) * self.h + x]
    }

    /// Largest absolute difference to `o`.
    pub fn max_diff(&self, o: &Map) -> f64 {
        self.v
            .iter()
            .zip(&o.v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }
}

impl Layout {
    /// Channel-aligned layout with as many copies as fit: ρ = blocks / (next power of two of
    /// the group count).
    pub fn ca(geo: Geometry, k: usize, c: usize) -> Self {
        let groups = c.div_ceil(k * k).next_power_of_two();
        let rho = (geo.blocks() / groups).max(1);
        Layout {
            geo,
            k,
            c,
            kind: Kind::Ca { rho },
        }
    }

    /// Replication-aligned layout with g groups per ciphertext.
    pub fn ra(geo: Geometry, k: usize, c: usize, g: usize) -> Self {
        Layout {
            geo,
            k,
            c,
            kind: Kind::Ra { g },
        }
    }

    /// Lee et al.'s multiplexed layout (k, h, c, t, p) with h = wr/k.
    pub fn mp(geo: Geometry, k: usize, c: usize) -> Self {
        let t = c.div_ceil(k * k);
        let h = geo.wr / k;
        let p = 1usize << (geo.n / (k * k * h * h * t)).ilog2();
        Layout {
            geo,
            k,
            c,
            kind: Kind::Mp { t, p },
        }
    }

    /// Logical height (= width) of the map.
    pub fn h(&self) -> usize {
        self.geo.wr / self.k
    }

    /// Ciphertexts the layout needs.
    pub fn num_cts(&self) -> usize {
        match self.kind {
            Kind::Ca { .. } | Kind::Mp { .. } => 1,
            Kind::Ra { g } => self.c.div_ceil(g * self.k * self.k),
        }
    }

    /// Copies of each channel in one ciphertext.
    pub fn copies(&self) -> usize {
        match self.kind {
            Kind::Ca { rho } => rho,
            Kind::Ra { g } => self.geo.blocks() / g,
            Kind::Mp { p, .. } => p,
        }
    }

    /// The channel at ciphertext `ct`, block `j`, phase `phase` (= a·k + b), if any.
    pub fn channel(&self, ct: usize, j: usize, phase: usize) -> Option<usize> {
        let kk = self.k * self.k;
        let group = match self.kind {
            Kind::Ca { rho } => (ct == 0).then_some(j / rho)?,
            Kind::Ra { g } => ct * g + j % g,
            Kind::Mp { t, p } => {
                let per_copy = self.geo.blocks() / p;
                let u = j % per_copy;
                (ct == 0 && u < t && j / per_copy < p).then_some(u)?
            }
        };
        let ch = group * kk + phase;
        (ch < self.c).then_some(ch)
    }

    /// Raster offset of logical pixel (y, x) at `phase` inside a block.
    pub fn pos(&self, y: usize, x: usize, phase: usize) -> usize {
        let (a, b) = (phase / self.k, phase % self.k);
        (self.k * y + a) * self.geo.wr + self.k * x + b
    }

    /// (y, x, phase) of a raster offset.
    pub fn unpos(&self, off: usize) -> (usize, usize, usize) {
        let (r, col) = (off / self.geo.wr, off % self.geo.wr);
        (
            r / self.k,
            col / self.k,
            (r % self.k) * self.k + col % self.k,
        )
    }

    /// The slot vectors of `m` (every copy filled).
    pub fn encode(&self, m: &Map) -> Vec<Vec<f64>> {
        let s = self.geo.s();
        let mut out = vec![vec![0.0; self.geo.n]; self.num_cts()];
        for (ct, v) in out.iter_mut().enumerate() {
            for (i, slot) in v.iter_mut().enumerate() {
                let (y, x, ph) = self.unpos(i % s);
                if let Some(c) = self.channel(ct, i / s, ph)
                    && c < m.c
                {
                    *slot = m.at(c, y, x);
                }
            }
        }
        out
    }

    /// The map read back from slot vectors (the first copy of each channel).
    pub fn decode(&self, cts: &[Vec<f64>]) -> Map {
        let h = self.h();
        let s = self.geo.s();
        let mut m = Map::zeros(self.c, h);
        let mut seen = vec![false; self.c];
        for (ct, v) in cts.iter().enumerate() {
            for j in 0..self.geo.blocks() {
                for ph in 0..self.k * self.k {
                    if let Some(c) = self.channel(ct, j, ph)
                        && !seen[c]
                    {
                        seen[c] = true;
                        for y in 0..h {
                            for x in 0..h {
                                *m.at_mut(c, y, x) = v[j * s + self.pos(y, x, ph)];
                            }
                        }
                    }
                }
            }
        }
        m
    }

    /// Whether every channel has a slot (the layout is not too large for the ciphertexts).
    pub fn fits(&self) -> bool {
        let kk = self.k * self.k;
        let groups = self.c.div_ceil(kk);
        match self.kind {
            Kind::Ca { rho } => groups * rho <= self.geo.blocks(),
            Kind::Ra { g } => g <= self.geo.blocks(),
            Kind::Mp { t, p } => t * p <= self.geo.blocks(),
        }
    }
}
