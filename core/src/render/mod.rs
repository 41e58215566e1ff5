//! Turning attributions into pictures: channel aggregation, percentile clipping and [0, 1] scaling (the display
//! conventions of Smilkov et al. 2017 and Captum's `visualization`), colormaps, overlays on the input, labelled
//! grids, and PNG encoding. Pure Rust, so the browser uses the same code.

mod canvas;
mod colormap;

pub use canvas::Canvas;
pub use colormap::Colormap;

use crate::data::DatasetKind;
use crate::{Error, Result};

/// How the channels of a map are merged into one value per pixel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aggregation {
    /// max over channels of |a| (default).
    #[default]
    MaxAbs,
    /// Σ over channels of |a|.
    SumAbs,
}

/// Values per channel of a channel-major map, or an error when `map` does not split into `channels`.
fn plane_len(map: &[f32], channels: usize) -> Result<usize> {
    if channels == 0 || !map.len().is_multiple_of(channels) {
        return Err(Error::InvalidArgument(format!("{} values do not split into {channels} channels", map.len())));
    }
    Ok(map.len() / channels)
}

/// One map of `C×H×W` values (channel-major) → `H×W` values in [0, 1]: aggregate channels, clip at the
/// `percentile`-th percentile (e.g. 99.0) and divide by it. An all-zero map stays zero.
pub fn normalize(map: &[f32], channels: usize, aggregation: Aggregation, percentile: f32) -> Result<Vec<f32>> {
    let plane = plane_len(map, channels)?;
    if !(0.0..=100.0).contains(&percentile) {
        return Err(Error::InvalidArgument(format!("percentile {percentile} is outside [0, 100]")));
    }
    let merged: Vec<f32> = (0..plane)
        .map(|p| {
            let values = (0..channels).map(|c| map[c * plane + p].abs());
            match aggregation {
                Aggregation::MaxAbs => values.fold(0.0, f32::max),
                Aggregation::SumAbs => values.sum(),
            }
        })
        .collect();
    let mut sorted: Vec<f32> = merged.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let top = match sorted.len() {
        0 => 0.0,
        // A sparse map's percentile can be zero: then its maximum scales it.
        n => Some(sorted[((percentile / 100.0) * (n - 1) as f32).round() as usize])
            .filter(|&t| t > 0.0)
            .unwrap_or(sorted[n - 1]),
    };
    Ok(merged.iter().map(|&v| if top > 0.0 && v.is_finite() { (v / top).min(1.0) } else { 0.0 }).collect())
}

/// One map of `C×H×W` values → `H×W` values in [0, 1] by min–max scaling of the channel mean: for maps whose sign
/// is not evidence for or against (CAM, feature-map means), where |a| would saturate.
pub fn normalize_min_max(map: &[f32], channels: usize) -> Result<Vec<f32>> {
    let plane = plane_len(map, channels)?;
    let mean: Vec<f32> =
        (0..plane).map(|p| (0..channels).map(|c| map[c * plane + p]).sum::<f32>() / channels as f32).collect();
    let (lo, hi) = mean.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    Ok(mean.iter().map(|&v| if hi > lo { (v - lo) / (hi - lo) } else { 0.0 }).collect())
}

/// A map's values for display in [0, 1], as its method's descriptor asks (see [`scale_for_display`]).
pub fn display_values(map: &[f32], channels: usize, method: crate::attribution::Method) -> Result<Vec<f32>> {
    scale_for_display(map, channels, method.descriptor().display)
}

/// Min–max scaled where the sign is not evidence for or against (CAM, a model's own attention), else |a|
/// aggregated by channel max and scaled by the 99th percentile.
pub fn scale_for_display(
    map: &[f32],
    channels: usize,
    display: crate::attribution::registry::Display,
) -> Result<Vec<f32>> {
    match display {
        crate::attribution::registry::Display::MinMax => normalize_min_max(map, channels),
        crate::attribution::registry::Display::AbsMax => normalize(map, channels, Aggregation::MaxAbs, 99.0),
    }
}

/// The input image (normalised `C×H×W` values of `kind`) back to RGB bytes.
pub fn denormalize_rgb(x: &[f32], kind: DatasetKind) -> Vec<[u8; 3]> {
    let c = kind.channels();
    let plane = x.len() / c;
    let byte = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    (0..plane)
        .map(|p| {
            let ch = |k: usize| byte(x[k * plane + p] * kind.std()[k] + kind.mean()[k]);
            if c == 1 {
                let g = ch(0);
                [g, g, g]
            } else {
                [ch(0), ch(1), ch(2)]
            }
        })
        .collect()
}

/// A heat map (values in [0, 1]) in `colormap`.
pub fn heat_rgb(values: &[f32], colormap: Colormap) -> Vec<[u8; 3]> {
    values.iter().map(|&v| colormap.rgb(v)).collect()
}

/// `heat` over `image`, each pixel mixed by `opacity × value` (so cold pixels show the image).
pub fn overlay(image: &[[u8; 3]], values: &[f32], colormap: Colormap, opacity: f32) -> Vec<[u8; 3]> {
    image
        .iter()
        .zip(values)
        .map(|(px, &v)| {
            let heat = colormap.rgb(v);
            let a = (opacity * v).clamp(0.0, 1.0);
            [0, 1, 2].map(|k| (px[k] as f32 * (1.0 - a) + heat[k] as f32 * a).round() as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_by_hand() -> Result<()> {
        // Channels [1, −2, 0] and [−3, 0.5, 0]: max-abs gives [3, 2, 0], sum-abs [4, 2.5, 0].
        let map = [1.0, -2.0, 0.0, -3.0, 0.5, 0.0];
        assert_eq!(normalize(&map, 2, Aggregation::MaxAbs, 100.0)?, vec![1.0, 2.0 / 3.0, 0.0]);
        assert_eq!(normalize(&map, 2, Aggregation::SumAbs, 100.0)?, vec![1.0, 0.625, 0.0]);
        // Clipping at the median: [3, 2, 0] → median 2 → [1, 1, 0].
        assert_eq!(normalize(&map, 2, Aggregation::MaxAbs, 50.0)?, vec![1.0, 1.0, 0.0]);
        assert_eq!(normalize(&[0.0; 4], 1, Aggregation::MaxAbs, 99.0)?, vec![0.0; 4]);
        // A map that is zero at its 50th percentile is scaled by its maximum.
        assert_eq!(
            normalize(&[0.0, 0.0, 0.0, -4.0, 2.0], 1, Aggregation::MaxAbs, 50.0)?,
            vec![0.0, 0.0, 0.0, 1.0, 0.5]
        );
        assert!(normalize(&map, 4, Aggregation::MaxAbs, 99.0).is_err());
        Ok(())
    }

    #[test]
    fn min_max_by_hand() -> Result<()> {
        assert_eq!(normalize_min_max(&[2.0, 4.0, 6.0], 1)?, vec![0.0, 0.5, 1.0]);
        // Two channels averaged first: [1, 3] and [3, 5] → [2, 4] → [0, 1].
        assert_eq!(normalize_min_max(&[1.0, 3.0, 3.0, 5.0], 2)?, vec![0.0, 1.0]);
        assert_eq!(normalize_min_max(&[7.0; 3], 1)?, vec![0.0; 3]);
        Ok(())
    }

    #[test]
    fn overlay_keeps_the_image_where_the_map_is_cold() {
        let img = [[10, 20, 30], [10, 20, 30]];
        let out = overlay(&img, &[0.0, 1.0], Colormap::Gray, 1.0);
        assert_eq!(out, vec![[10, 20, 30], [255, 255, 255]]);
    }

    #[test]
    fn denormalize_inverts_the_normalisation() {
        let v = (200.0 / 255.0 - 0.1307) / 0.3081;
        assert_eq!(denormalize_rgb(&[v], DatasetKind::Mnist), vec![[200, 200, 200]]);
    }
}
