//! Colormaps for heat maps: gray, hot, jet and viridis (matplotlib's, sampled at nine points).

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Colormap {
    Gray,
    Hot,
    Jet,
    #[default]
    Viridis,
}

const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

impl Colormap {
    pub const ALL: [Colormap; 4] = [Colormap::Hot, Colormap::Viridis, Colormap::Jet, Colormap::Gray];

    pub fn id(self) -> &'static str {
        match self {
            Colormap::Gray => "gray",
            Colormap::Hot => "hot",
            Colormap::Jet => "jet",
            Colormap::Viridis => "viridis",
        }
    }

    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "gray" | "grey" => Ok(Colormap::Gray),
            "hot" => Ok(Colormap::Hot),
            "jet" => Ok(Colormap::Jet),
            "viridis" => Ok(Colormap::Viridis),
            other => {
                Err(crate::Error::InvalidArgument(format!("unknown colormap '{other}' (gray, hot, jet, viridis)")))
            }
        }
    }

    /// The colour of `v` (clamped to [0, 1]).
    pub fn rgb(self, v: f32) -> [u8; 3] {
        let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
        let byte = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
        match self {
            Colormap::Gray => [byte(v); 3],
            Colormap::Hot => [byte(3.0 * v), byte(3.0 * v - 1.0), byte(3.0 * v - 2.0)],
            Colormap::Jet => {
                let f = |c: f32| byte(1.5 - (4.0 * v - c).abs());
                [f(3.0), f(2.0), f(1.0)]
            }
            Colormap::Viridis => {
                let t = v * 8.0;
                let i = (t.floor() as usize).min(7);
                let f = t - i as f32;
                let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
                [0, 1, 2].map(|k| (a[k] + (b[k] - a[k]) * f).round() as u8)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_points() {
        assert_eq!(Colormap::Gray.rgb(0.0), [0, 0, 0]);
        assert_eq!(Colormap::Hot.rgb(1.0), [255, 255, 255]);
        assert_eq!(Colormap::Jet.rgb(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.rgb(1.0), [128, 0, 0]);
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
        assert_eq!(Colormap::Viridis.rgb(f32::NAN), [68, 1, 84]);
    }
}
