//! Native tests of the engine: the same functions the browser calls, checked against core directly, and the golden
//! file the browser test compares with.

use super::*;
use whitebox_core::attribution::predict;

fn engine(k: usize) -> Engine {
    Engine::new(parity::WEIGHTS[k].1).unwrap()
}

/// Probabilities sum to one and pick the class core predicts; the engine's map equals `Explanation::run` on the
/// same normalised input.
#[test]
fn engine_equals_core() -> Res<()> {
    let e = engine(0);
    let pixels = parity::digit(0);
    let p = e.probabilities(&pixels)?;
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let x = normalized(&pixels, DatasetKind::Mnist).map_err(err)?;
    let class = predict(e.model.as_ref(), &x).map_err(err)?[0];
    let argmax = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
    assert_eq!(argmax, class);
    assert_eq!(class, 7, "the first MNIST test digit is a 7");
    let request = Request::new("ig", "sg", 4, 0.1, 6, -1, "logit")?;
    let mut task = e.explain(&pixels, &request, 7)?;
    let mut steps = 0;
    while !task.step()? {
        steps += 1;
    }
    assert_eq!(steps, 1, "4 samples × 6 IG steps run as two steps of at most 16 inputs");
    let want = request.explanation.run(e.model.as_ref(), &x, &[7], &mut |_| {}).map_err(err)?;
    let want = want.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)?;
    let got = task.map()?;
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(want.iter().zip(&got).all(|(a, b)| (a - b).abs() <= 1e-5 * scale));
    Ok(())
}

#[test]
fn bad_requests_are_errors() {
    let e = engine(0);
    assert!(Engine::new(b"not a checkpoint").err().unwrap().contains("not a safetensors file"));
    assert!(e.probabilities(&[0.0; 10]).unwrap_err().contains("expects 1×28×28 = 784 pixel values, got 10"));
    assert!(Request::new("nope", "", 1, 0.1, 1, -1, "logit").err().unwrap().contains("unknown method"));
    assert!(Request::new("vbp", "sg", 0, 0.1, 1, -1, "logit").err().unwrap().contains("samples"));
    assert!(Request::new("ig", "", 1, 0.1, 0, -1, "logit").err().unwrap().contains("steps"));
    let cam = Request::new("cam", "", 1, 0.1, 1, -1, "logit").unwrap();
    let mut task = e.explain(&[0.0; 784], &cam, 0).unwrap();
    assert!(task.step().unwrap_err().contains("CAM head"));
    let gc = Request::new("gc", "", 1, 0.1, 1, 40, "logit").unwrap();
    assert!(e.explain(&[0.0; 784], &gc, 0).and_then(|mut t| t.step()).unwrap_err().contains("layer 40"));
    assert!(e.explain(&[0.0; 784], &gc, 10).and_then(|mut t| t.step()).unwrap_err().contains("outside 0..10"));
    assert!(render_map(&[0.0; 4], &[0.0; 3], "mnist", "vbp", "hot", 1.0, true).unwrap_err().contains("4 pixel values"));
}

/// The overlay keeps the image where the map is zero and shows the colormap where it peaks.
#[test]
fn render_map_by_hand() -> Res<()> {
    let mut pixels = vec![0.5; 784];
    pixels[0] = 1.0;
    let mut map = vec![0.0; 784];
    map[10] = -3.0; // |a| is shown: the one pixel is the peak
    let rgba = render_map(&pixels, &map, "mnist", "vbp", "gray", 1.0, true)?;
    assert_eq!(&rgba[0..4], &[255, 255, 255, 255]);
    assert_eq!(&rgba[4..8], &[128, 128, 128, 255]);
    assert_eq!(&rgba[40..44], &[255, 255, 255, 255]);
    Ok(())
}

/// The golden file the browser test compares with is what this build computes natively. Set
/// `WHITEBOX_BLESS=1` to rewrite it after an intended change.
#[test]
fn native_golden_is_current() -> Res<()> {
    let cases = parity::compute()?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/native.safetensors");
    if std::env::var_os("WHITEBOX_BLESS").is_some() {
        std::fs::write(&path, parity::to_bytes(&cases)).map_err(err)?;
    }
    let golden = std::fs::read(&path)
        .map_err(|e| format!("{}: {e} (run with WHITEBOX_BLESS=1 to create it)", path.display()))?;
    let (worst, case) = parity::compare(&cases, &golden, 1e-5)?;
    assert!(cases.len() >= 3 * 15, "{} cases", cases.len());
    println!("native vs golden: worst relative error {worst:e} ({case})");
    Ok(())
}
