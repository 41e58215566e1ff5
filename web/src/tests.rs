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
    let x = normalized(&pixels, DatasetKind::Mnist)?;
    let class = predict(e.model.as_ref(), &x).map_err(err)?[0];
    let argmax = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
    assert_eq!(argmax, class);
    assert_eq!(class, 7, "the first MNIST test digit is a 7");
    let request = Request::new("ig", "sg", 4, 0.1, r#"{"ig-steps": 6}"#, "logit")?;
    let mut task = e.explain(&pixels, &request, 7)?;
    let mut steps = 0;
    while !task.step()? {
        steps += 1;
    }
    assert_eq!(steps, 1, "4 samples × 6 IG steps run as two steps of at most 16 inputs");
    let want = request.explanation.run(e.model.as_ref(), &x, &[7], &mut |_| {}).map_err(err)?;
    let want = want.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)?;
    let got = task.map()?;
    assert!(whitebox_core::testing::max_rel_error(&got, &want, f32::MIN_POSITIVE) <= 1e-5);
    Ok(())
}

#[test]
fn bad_requests_are_errors() {
    let e = engine(0);
    assert!(Engine::new(b"not a checkpoint").err().unwrap().contains("not a safetensors file"));
    assert!(e.probabilities(&[0.0; 10]).unwrap_err().contains("expects 1×28×28 = 784 pixel values, got 10"));
    assert!(Request::new("nope", "", 1, 0.1, "", "logit").err().unwrap().contains("unknown method"));
    assert!(Request::new("vbp", "sg", 0, 0.1, "", "logit").err().unwrap().contains("samples"));
    assert!(Request::new("ig", "", 1, 0.1, r#"{"ig-steps": 0}"#, "logit").err().unwrap().contains("steps"));
    let cam = Request::new("cam", "", 1, 0.1, "", "logit").unwrap();
    assert!(e.explain(&[0.0; 784], &cam, 0).and_then(|mut t| t.step()).unwrap_err().contains("CAM head"));
    let gc = Request::new("gc", "", 1, 0.1, r#"{"layer": 40}"#, "logit").unwrap();
    assert!(e.explain(&[0.0; 784], &gc, 0).and_then(|mut t| t.step()).unwrap_err().contains("layer 40"));
    let gc = Request::new("gc", "", 1, 0.1, r#"{"layer": 8}"#, "logit").unwrap();
    assert!(e.explain(&[0.0; 784], &gc, 10).and_then(|mut t| t.step()).unwrap_err().contains("outside 0..10"));
    assert!(render_map(&[0.0; 4], &[0.0; 3], "mnist", "vbp", "hot", 1.0, true).unwrap_err().contains("4 pixel values"));
}

/// Non-finite and out-of-range numbers from the page are errors that say which value and why.
#[test]
fn bad_numbers_are_errors() {
    let e = engine(0);
    let mut pixels = parity::digit(0);
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (-0.5, "-0.5"), (1.5, "1.5")] {
        pixels[100] = bad;
        let msg = format!("pixel value 100 is {shown}, not a number in [0, 1]");
        assert!(e.probabilities(&pixels).unwrap_err().contains(&msg));
        let vbp = Request::new("vbp", "", 1, 0.1, "", "logit").unwrap();
        assert!(e.explain(&pixels, &vbp, 0).err().unwrap().contains(&msg));
    }
    for noise in [f64::NAN, f64::INFINITY, -0.1, 10.5] {
        assert!(Request::new("vbp", "sg", 4, noise, "", "logit").err().unwrap().contains("noise level"));
    }
    let [samples, _] = request_limits()[..] else { panic!("two limits") };
    assert!(Request::new("vbp", "sg", samples as usize, 0.1, "", "logit").is_ok());
    assert!(Request::new("vbp", "sg", samples as usize + 1, 0.1, "", "logit").is_err());
    assert!(Request::new("ig", "", 1, 0.1, r#"{"ig-steps": 1000}"#, "logit").is_ok());
    let too_many = Request::new("ig", "", 1, 0.1, r#"{"ig-steps": 1001}"#, "logit").err().unwrap();
    assert!(too_many.contains("--ig-steps must be within 1..=1000"), "{too_many}");
    assert!(Request::new("ig", "", 1, 0.1, r#"{"ig-steps": 2.5}"#, "logit").is_err());
    assert!(Request::new("ig", "", 1, 0.1, r#"{"nope": 1}"#, "logit").err().unwrap().contains("no method has"));
    assert!(Request::new("ig", "", 1, 0.1, "{", "logit").err().unwrap().contains("method parameters"));
    let digit = parity::digit(0);
    for opacity in [f32::NAN, -0.1, 1.1] {
        let err = render_map(&digit, &digit, "mnist", "vbp", "hot", opacity, true).unwrap_err();
        assert!(err.contains("opacity must be a number in [0, 1]"), "{err}");
    }
}

/// The option lists the page shows are the ones the engine parses.
#[test]
fn option_lists_parse() {
    for e in ensemble_list() {
        assert!(Ensemble::parse(e.split(':').next().unwrap()).is_ok(), "{e}");
    }
    for c in colormap_list() {
        assert!(Colormap::parse(&c).is_ok(), "{c}");
    }
    let datasets: Vec<String> = dataset_list().iter().map(|d| d.split(':').next().unwrap().to_string()).collect();
    for m in model_list() {
        let (dataset, arch) = m.split(':').next().unwrap().split_once('/').expect("dataset/arch");
        assert!(DatasetKind::parse(dataset).is_ok() && datasets.iter().any(|d| d == dataset), "{m}");
        assert!(whitebox_core::models::Arch::parse(arch).is_ok(), "{m}");
    }
    assert_eq!(colormap_list()[0], "hot", "the page's default colormap comes first");
}

#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![8 => 0f32..=1.0, 1 => any::<f32>(), 1 => Just(f32::NAN), 1 => Just(f32::NEG_INFINITY)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any image the page sends (right length or not, any floats): probabilities that sum to one exactly when
        /// every pixel is a number in [0, 1], else a clear error; never a panic.
        #[test]
        fn any_image_input(pixels in proptest::collection::vec(value(), 780..790)) {
            let e = engine(0);
            match e.probabilities(&pixels) {
                Ok(p) => {
                    prop_assert!(pixels.len() == 784 && pixels.iter().all(|v| (0.0..=1.0).contains(v)));
                    prop_assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
                }
                Err(msg) => prop_assert!(msg.contains("pixel value") || msg.contains("expects 1×28×28")),
            }
        }

        /// Any drawing the page sends: a digit in [0, 1], nothing, or an error; never a panic.
        #[test]
        fn any_drawing(ink in proptest::collection::vec(value(), 0..2000), width in 0usize..60) {
            let height = ink.len().checked_div(width).unwrap_or(0);
            match mnist_from_drawing(&ink, width, height) {
                Ok(Some(d)) => prop_assert!(d.len() == 784 && d.iter().all(|v| (0.0..=1.0).contains(v))),
                Ok(None) => {}
                Err(msg) => prop_assert!(msg.contains("drawing")),
            }
        }
    }
}

/// The page offers exactly the shipped weights: each offered model's file is where the page fetches it, for that
/// architecture and data set, and every file under `weights/` is offered.
#[test]
fn the_page_offers_the_shipped_weights() -> Res<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../weights");
    let offered: Vec<String> = model_list().iter().map(|m| m.split(':').next().unwrap().to_string()).collect();
    for id in &offered {
        let path = root.join(format!("{id}.safetensors"));
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let e = Engine::new(&bytes)?;
        assert_eq!(&format!("{}/{}", e.dataset(), e.arch()), id);
    }
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).map_err(err)? {
        let dir = dir.map_err(err)?.path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).map_err(err)? {
                let f = f.map_err(err)?.path();
                let (d, a) = (dir.file_name().unwrap().to_string_lossy(), f.file_stem().unwrap().to_string_lossy());
                files.push(format!("{d}/{a}"));
            }
        }
    }
    files.sort();
    let mut sorted = offered.clone();
    sorted.sort();
    assert_eq!(files, sorted, "weights/ holds exactly the offered models");
    Ok(())
}

/// CIFAR-10: every method's map of a colour image renders over it (one-channel maps such as Grad-CAM's too), and an
/// opened picture reaches the engine as its 3×32×32 input.
#[test]
fn cifar_maps_render() -> Res<()> {
    for (name, e, pixels) in parity::gpu_models()?.into_iter().filter(|(n, ..)| n.starts_with("cifar10")) {
        assert_eq!(e.class_names()[3], "cat");
        for &m in Method::all() {
            if !e.applicable_methods().iter().any(|id| id == m.id()) {
                continue;
            }
            let request = Request::new(m.id(), "", 1, 0.1, r#"{"ig-steps": 4}"#, "logit")?;
            let mut task = e.explain(&pixels, &request, 3)?;
            while !task.step()? {}
            let map = task.map()?;
            let rgba = render_map(&pixels, &map, "cifar10", m.id(), "hot", 0.8, true)
                .map_err(|e| format!("{name} {m:?}: {e}"))?;
            assert_eq!(rgba.len(), 32 * 32 * 4, "{name} {m:?}");
            assert_eq!(display_values(&map, 3, m.id())?.len(), 32 * 32, "{name} {m:?}");
        }
    }
    let photo: Vec<u8> = (0..50 * 40).flat_map(|i| [(i % 256) as u8, 9, 200, 255]).collect();
    let input = input_from_image("cifar10", &photo, 50, 40)?.expect("an image");
    assert_eq!(input.len(), 3 * 32 * 32);
    assert!(input_from_image("svhn", &photo, 50, 40).unwrap_err().contains("unknown dataset"));
    assert!(input_from_image("mnist", &photo, 50, 41).unwrap_err().contains("needs 8200 bytes"));
    Ok(())
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

/// The page's live metrics and sanity check: a faithful map (VBP) deletes faster than a random one and ROAD's MoRF
/// falls with the fraction removed; re-initialising no layer keeps the model, re-initialising every layer destroys
/// the map (low rank correlation), and asking for more layers than there are is an error.
#[test]
fn live_metrics_and_the_sanity_check() -> Res<()> {
    let e = engine(0);
    let pixels = parity::digit(0);
    let map_of = |e: &Engine, method: &str| -> Res<Vec<f32>> {
        let request = Request::new(method, "", 1, 0.0, r#"{"ig-steps": 8}"#, "logit")?;
        let mut task = e.explain(&pixels, &request, 7)?;
        while !task.step()? {}
        task.map()
    };
    let vbp = map_of(&e, "vbp")?;
    let random = map_of(&e, "random")?;
    let names = live_metric_names();
    let (m, r) = (e.live_metrics(&pixels, &vbp, 7)?, e.live_metrics(&pixels, &random, 7)?);
    assert_eq!((m.len(), r.len()), (names.len(), names.len()));
    assert!(m.iter().chain(&r).all(|v| v.is_finite()), "{m:?} {r:?}");
    assert!(m[0] < r[0], "deletion AUC: VBP {} should fall faster than random {}", m[0], r[0]);
    assert!(m[0] >= 0.0 && m[1] <= 1.0);
    assert!(m[4] < m[2], "ROAD MoRF should fall with the fraction removed: {m:?}");
    assert!(e.live_metrics(&pixels, &vbp[1..], 7).is_err());

    let layers = e.parameter_layers()?;
    assert_eq!(layers.len(), 8);
    let same = e.randomised(0, 1)?;
    assert_eq!(same.probabilities(&pixels)?, e.probabilities(&pixels)?);
    assert!((map_similarity(&vbp, &map_of(&same, "vbp")?)? - 1.0).abs() < 1e-12);
    let top = e.randomised(1, 1)?;
    assert_ne!(top.probabilities(&pixels)?, e.probabilities(&pixels)?);
    let all = e.randomised(layers.len(), 1)?;
    let destroyed = map_similarity(&vbp, &map_of(&all, "vbp")?)?;
    assert!(destroyed < 0.5, "VBP of a fully re-initialised model: ρ = {destroyed}");
    assert!(e.randomised(layers.len() + 1, 1).is_err());
    assert!(map_similarity(&vbp, &vbp[1..]).is_err());
    Ok(())
}
