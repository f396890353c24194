//! The ten Jerlov water types and the underwater image-formation model.
//!
//! Per colour channel c (Akkaynak & Treibitz, "A Revised Underwater Image Formation Model",
//! CVPR 2018):
//!
//! ```text
//! I_c = J_c · e^(−β_c^D · z) + B_c^∞ · (1 − e^(−β_c^B · z))
//! ```
//!
//! with `J` the unattenuated scene radiance, `z` the range from the camera in metres, `β^D` the
//! direct-signal attenuation, `β^B` the backscatter coefficient and `B^∞` the veiling light
//! (the colour of water seen to infinity).
//!
//! The per-metre residual energy ratios `N_λ` are UWCNN's table (Li, Anwar & Porikli, Pattern
//! Recognition 2020, `saeed-anwar/UWCNN`, `Figs/Types_table.png`; copied in
//! `shared/papers/adod.md`): transmission over `d` metres is `N_λ^d`, so `β^D_c = −ln N_c`.
//!
//! **Split coefficients.** UWCNN uses `N_λ` for both terms. We split them, as the revised model
//! asks: `β^B_c = (1 − f)·β^D_c + f·mean_c(β^D)` with `f = backscatter_flatten` (default 0.5;
//! 0 gives UWCNN's single coefficient). This flattening is our reconstruction of Akkaynak &
//! Treibitz's observation that backscatter is much less wavelength-dependent than the direct
//! signal; the value 0.5 is a choice, not a measurement.
//!
//! **Veiling light.** `B^∞_c = ω · E_c`: the downwelling sunlight that reached the scene's
//! depth `h` below the surface (`E_c = N_c^h`), times a scattering albedo `ω` that grows with
//! turbidity (coastal water scatters more). Its dominant channel is therefore the table's
//! least attenuated one: blue for oceanic types, green for the middle coastal ones, red-yellow
//! for type 9.

use std::fmt;
use std::str::FromStr;

/// A Jerlov water type (oceanic I–III, coastal 1–9), in UWCNN's table order (clearest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaterType {
    I,
    IA,
    IB,
    II,
    III,
    C1,
    C3,
    C5,
    C7,
    C9,
}

/// `N_λ` per metre, rows in the table's order (blue, green, red), columns as [`WaterType::ALL`].
const N_BLUE: [f32; 10] = [
    0.982, 0.975, 0.968, 0.940, 0.890, 0.875, 0.800, 0.670, 0.500, 0.290,
];
const N_GREEN: [f32; 10] = [
    0.961, 0.955, 0.950, 0.925, 0.885, 0.885, 0.820, 0.730, 0.610, 0.460,
];
const N_RED: [f32; 10] = [
    0.805, 0.804, 0.830, 0.800, 0.750, 0.750, 0.710, 0.670, 0.620, 0.550,
];

impl WaterType {
    /// All ten, clearest first.
    pub const ALL: [WaterType; 10] = [
        WaterType::I,
        WaterType::IA,
        WaterType::IB,
        WaterType::II,
        WaterType::III,
        WaterType::C1,
        WaterType::C3,
        WaterType::C5,
        WaterType::C7,
        WaterType::C9,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The name as Jerlov writes it: `I`, `IA`, `IB`, `II`, `III`, `1`, `3`, `5`, `7`, `9`.
    pub fn name(self) -> &'static str {
        ["I", "IA", "IB", "II", "III", "1", "3", "5", "7", "9"][self.index()]
    }

    /// The lower-case name used in report keys (`map50_ib`, `map50_7`).
    pub fn key(self) -> String {
        self.name().to_ascii_lowercase()
    }

    /// Per-metre residual energy ratio `N_λ` as `[red, green, blue]`.
    pub fn residual_ratio(self) -> [f32; 3] {
        let i = self.index();
        [N_RED[i], N_GREEN[i], N_BLUE[i]]
    }

    /// Whether the type is one of the coastal ones (1–9).
    pub fn is_coastal(self) -> bool {
        self.index() >= 5
    }

    /// Parses a comma-separated list (`I,IA,3,7`), naming the entry that is not a type.
    pub fn parse_list(s: &str) -> Result<Vec<WaterType>, String> {
        let mut out: Vec<WaterType> = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let w: WaterType = t.parse()?;
            // Each type names one image set (`i_*.png`): a repeat would list the same files twice.
            if out.contains(&w) {
                return Err(format!("water type {w} is given twice"));
            }
            out.push(w);
        }
        Ok(out)
    }
}

impl fmt::Display for WaterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WaterType {
    type Err = String;

    /// Case-insensitive; `C7` and `7` are the same coastal type.
    fn from_str(s: &str) -> Result<Self, String> {
        let up = s.trim().to_ascii_uppercase();
        let up = up.strip_prefix('C').unwrap_or(&up);
        WaterType::ALL
            .iter()
            .copied()
            .find(|t| t.name() == up)
            .ok_or_else(|| {
                format!(
                    "unknown water type {} (known: I, IA, IB, II, III, 1, 3, 5, 7, 9)",
                    crate::error::quote(s)
                )
            })
    }
}

/// The optical state of the water one frame is rendered in. Everything that drifts along a
/// camera path lives here; the scene layout does not.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Water {
    /// Per-metre residual energy ratio `[r, g, b]`, in (0, 1].
    pub residual: [f32; 3],
    /// Multiplies every attenuation coefficient (1 = the table; > 1 more turbid).
    pub turbidity: f32,
    /// `f` in `β^B = (1 − f)·β^D + f·mean(β^D)` (0 = UWCNN's single coefficient).
    pub backscatter_flatten: f32,
    /// Depth of the scene below the surface in metres (sunlight travels this far down).
    pub surface_depth_m: f32,
    /// Power of a camera-mounted light (0 = none); it falls off as `1/d²` and is attenuated
    /// over the way out, as `N^d`.
    pub artificial_light: f32,
}

impl Water {
    /// Jerlov type `t` at `surface_depth_m`, table coefficients, no artificial light.
    pub fn of_type(t: WaterType, surface_depth_m: f32) -> Water {
        Water {
            residual: t.residual_ratio(),
            turbidity: 1.0,
            backscatter_flatten: 0.5,
            surface_depth_m,
            artificial_light: 0.0,
        }
    }

    /// Why these values are not physical, if they are not.
    pub fn check(&self) -> Result<(), String> {
        if self.residual.iter().any(|n| !(*n > 0.0 && *n <= 1.0)) {
            return Err(format!(
                "water: residual {:?} outside (0, 1]",
                self.residual
            ));
        }
        let finite = [
            self.turbidity,
            self.backscatter_flatten,
            self.surface_depth_m,
            self.artificial_light,
        ];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) || self.turbidity <= 0.0 {
            return Err(format!(
                "water: turbidity ({}) must be > 0; flatten, depth and light (≥ 0, finite): {:?}",
                self.turbidity, finite
            ));
        }
        if self.backscatter_flatten > 1.0 {
            return Err(format!(
                "water: backscatter_flatten {} outside [0, 1]",
                self.backscatter_flatten
            ));
        }
        Ok(())
    }

    /// Interpolates two states at `t ∈ [0, 1]`: coefficients `β` linearly (so `N`
    /// geometrically), the rest linearly. Used to drift water along a camera path.
    pub fn lerp(&self, other: &Water, t: f32) -> Water {
        let t = t.clamp(0.0, 1.0);
        let mix = |a: f32, b: f32| a + (b - a) * t;
        let mut residual = [0.0; 3];
        for (c, r) in residual.iter_mut().enumerate() {
            *r = (self.residual[c].ln() * (1.0 - t) + other.residual[c].ln() * t).exp();
        }
        Water {
            residual,
            turbidity: mix(self.turbidity, other.turbidity),
            backscatter_flatten: mix(self.backscatter_flatten, other.backscatter_flatten),
            surface_depth_m: mix(self.surface_depth_m, other.surface_depth_m),
            artificial_light: mix(self.artificial_light, other.artificial_light),
        }
    }

    /// Direct-signal attenuation `β^D_c` per metre `[r, g, b]`.
    pub fn beta_direct(&self) -> [f32; 3] {
        self.residual.map(|n| -n.ln() * self.turbidity)
    }

    /// Backscatter coefficient `β^B_c` per metre `[r, g, b]`.
    pub fn beta_backscatter(&self) -> [f32; 3] {
        let d = self.beta_direct();
        let mean = (d[0] + d[1] + d[2]) / 3.0;
        let f = self.backscatter_flatten;
        d.map(|b| (1.0 - f) * b + f * mean)
    }

    /// Downwelling sunlight reaching the scene, `E_c = N_c^(h·turbidity)` (surface = 1).
    pub fn ambient(&self) -> [f32; 3] {
        let b = self.beta_direct();
        b.map(|b| (-b * self.surface_depth_m).exp())
    }

    /// Veiling light `B^∞_c = ω·E_c`, with a scattering albedo `ω` rising with turbidity from
    /// 0.35 (clearest) towards 0.85.
    pub fn veiling_light(&self) -> [f32; 3] {
        let b = self.beta_direct();
        let mean_beta = (b[0] + b[1] + b[2]) / 3.0;
        let omega = 0.35 + 0.5 * (1.0 - (-2.0 * mean_beta).exp());
        self.ambient().map(|e| omega * e)
    }

    /// The observed colour of a scene point of radiance `j` at range `z` metres.
    pub fn observe(&self, j: [f32; 3], z: f32) -> [f32; 3] {
        let bd = self.beta_direct();
        let bb = self.beta_backscatter();
        let binf = self.veiling_light();
        let mut out = [0.0; 3];
        for c in 0..3 {
            out[c] = j[c] * (-bd[c] * z).exp() + binf[c] * (1.0 - (-bb[c] * z).exp());
        }
        out
    }
}
