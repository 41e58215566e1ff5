//! The `whitebox` command line: fetch data, train, evaluate and inspect image classifiers.

mod allocator;
mod chart;
mod datasets;
mod evaluate;
mod explain;
mod fsutil;
mod inspect;
mod method_params;
mod numbers;
mod train;
mod ui;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand, ValueEnum};
use method_params::MethodParams;
use std::path::PathBuf;
use whitebox_core::attribution::{Ensemble, Estimator, Score, Settings};
use whitebox_core::data::DatasetKind;
use whitebox_core::evaluation::{Fill, Ranking};
use whitebox_core::models::{Arch, ModelSpec};
use whitebox_core::render::Colormap;
use whitebox_core::train::{OptimizerKind, Schedule, TrainConfig};

#[derive(Parser)]
#[command(name = "whitebox", version, about = "Train, evaluate and explain small image classifiers (MNIST, CIFAR-10).")]
struct Cli {
    /// Print no progress or notes, only results.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    F16,
}

#[derive(Args)]
struct DataDir {
    /// Data directory (default: $WHITEBOX_DATA, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ShardArgs {
    /// Run only shard I of N (`I/N`): every N-th unit. Default: from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or
    /// JOB_COMPLETION_INDEX (with --shard-count), else all units.
    #[arg(long)]
    shard: Option<String>,
    /// Number of shards when the index comes from the environment.
    #[arg(long)]
    shard_count: Option<usize>,
}

/// Training hyper-parameters shared by `train`, `roar` and `kar` (defaults: the seed's).
#[derive(Args)]
struct TrainingFlags {
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.01, value_parser = numbers::positive, allow_negative_numbers = true)]
    lr: f64,
    /// Learning-rate schedule: the seed's constant rate, or cosine annealing.
    #[arg(long, value_enum, default_value = "constant")]
    schedule: Schedule,
    #[arg(long, default_value_t = 223)]
    seed: u64,
}

impl TrainingFlags {
    /// The seed's configuration for `dataset` with these flags.
    fn config(&self, dataset: DatasetKind) -> Result<TrainConfig> {
        Ok(TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            schedule: self.schedule,
            seed: self.seed,
            ..TrainConfig::seed_defaults(dataset)
        })
    }
}

/// The samples and noise of the ensembles among `--methods`.
#[derive(Args)]
struct EnsembleFlags {
    /// Samples per ensemble map (for methods such as sg:gb, sg-sq:gb, sg-var:ig).
    #[arg(long, default_value_t = 50)]
    ensemble_n: usize,
    /// Ensemble noise: σ as a fraction of each image's value range.
    #[arg(long, default_value_t = 0.15, allow_negative_numbers = true)]
    noise: f64,
}

impl EnsembleFlags {
    fn settings(&self) -> Result<evaluate::EnsembleSettings> {
        evaluate::EnsembleSettings::new(self.ensemble_n, self.noise)
    }
}

#[derive(Args)]
struct SweepCli {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Comma-separated methods, each METHOD or ENSEMBLE:METHOD (e.g. gb,sg:gb,sg-sq:gb,sg-var:gb); default: the
    /// seed's seven and the baselines random, sobel, co.
    #[arg(long, default_value = "vbp,ib,deconvnet,gb,ig,gc,gbgc,random,sobel,co")]
    methods: String,
    #[command(flatten)]
    ensemble: EnsembleFlags,
    /// Fractions of pixels removed, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = numbers::fraction,
        allow_negative_numbers = true,
        default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    )]
    thresholds: Vec<f64>,
    /// Trainings per setting, with seeds --seed, --seed + 1, …; the report shows mean ± std.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    #[command(flatten)]
    training: TrainingFlags,
    /// Where the maps are computed and the models retrained: the CPU, or the GPU through wgpu (Vulkan, Metal or
    /// DX12; SGD). The unit files are the same either way.
    #[arg(long, value_parser = ["cpu", "wgpu"], default_value = "cpu")]
    backend: String,
    /// With `--backend wgpu`: the adapter whose name contains NAME (see `whitebox info --adapters`).
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// Use only the first N training images (split 80/20 into train and validation).
    #[arg(long)]
    limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// What a removed pixel becomes: the data set's mean (Hooker et al.) or black.
    #[arg(long, value_enum)]
    fill: Option<Fill>,
    #[arg(long, value_enum, default_value = "signed")]
    ranking: Ranking,
    /// The seed's protocol: mask the training images only, with black; validate and test on unmodified images.
    #[arg(long)]
    seed_variant: bool,
    /// Output directory, shared by ROAR and KAR (default: runs/roar-kar-<dataset>-<model>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    shard: ShardArgs,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    params: MethodParams,
}

#[derive(Subcommand)]
enum Command {
    /// Download and verify a data set.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
    /// Train a model; rerunning the same command resumes an interrupted run.
    Train {
        #[arg(long, value_enum)]
        dataset: DatasetKind,
        #[arg(long, value_enum, default_value = "simple-cnn")]
        model: Arch,
        #[command(flatten)]
        training: TrainingFlags,
        #[arg(long, value_enum, default_value = "sgd")]
        optimizer: OptimizerKind,
        #[arg(long, default_value_t = 0.9, value_parser = numbers::momentum, allow_negative_numbers = true)]
        momentum: f64,
        #[arg(long, default_value_t = 5e-4, value_parser = numbers::non_negative, allow_negative_numbers = true)]
        weight_decay: f64,
        /// Random crops and flips (default: on for CIFAR-10, off for MNIST, as the seed).
        #[arg(long)]
        augment: Option<bool>,
        /// Use only the first N training images.
        #[arg(long)]
        limit: Option<usize>,
        /// Output directory (default: runs/<dataset>-<model>-seed<S>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the training steps run: the CPU, or the GPU through wgpu (Vulkan, Metal or DX12; every model, SGD).
        /// Checkpoints, logs and resuming are the same either way.
        #[arg(long, value_parser = ["cpu", "wgpu"], default_value = "cpu")]
        backend: String,
        /// With `--backend wgpu`: the adapter whose name contains NAME (see `whitebox info --adapters`).
        #[arg(long, value_name = "NAME")]
        adapter: Option<String>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Test accuracy of a checkpoint, overall and per class.
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data set (default: the checkpoint's).
        #[arg(long, value_enum)]
        dataset: Option<DatasetKind>,
        /// Evaluate on the first N test images only.
        #[arg(long)]
        limit: Option<usize>,
        /// Where the forward passes run: the CPU, or the GPU through wgpu.
        #[arg(long, value_parser = ["cpu", "wgpu"], default_value = "cpu")]
        backend: String,
        /// With `--backend wgpu`: the adapter whose name contains NAME (see `whitebox info --adapters`).
        #[arg(long, value_name = "NAME")]
        adapter: Option<String>,
        #[command(flatten)]
        data: DataDir,
    },
    /// The attribution methods: id, paper and parameters (with --json, the registry as the page reads it).
    Methods {
        #[arg(long)]
        json: bool,
    },
    /// Parameter count and layer list of an architecture.
    Info {
        #[arg(long, value_enum, required_unless_present = "adapters")]
        model: Option<Arch>,
        #[arg(long, value_enum, required_unless_present = "adapters")]
        dataset: Option<DatasetKind>,
        /// List the GPU adapters that `--backend wgpu --adapter NAME` can choose from.
        #[arg(long, conflicts_with_all = ["model", "dataset"])]
        adapters: bool,
    },
    /// Attribution maps for test images: raw tensors and/or PNG pictures.
    Attribute {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data set (default: the checkpoint's).
        #[arg(long, value_enum)]
        dataset: Option<DatasetKind>,
        /// METHOD or ENSEMBLE:METHOD (the spelling the evaluations use), e.g. gb or sg-sq:gb; `whitebox methods`
        /// lists the methods and their parameters.
        #[arg(long, value_parser = parse_estimator)]
        method: Estimator,
        /// Wrap the method in an ensemble (the same as writing ENSEMBLE:METHOD).
        #[arg(long, value_enum)]
        ensemble: Option<Ensemble>,
        /// Ensemble samples.
        #[arg(long, default_value_t = 50)]
        n: usize,
        /// Ensemble noise level: σ = noise × (max − min) of each image.
        #[arg(long, default_value_t = 0.15, value_parser = numbers::noise, allow_negative_numbers = true)]
        noise: f64,
        /// Explain the class logit or its softmax probability.
        #[arg(long, value_enum, default_value = "logit")]
        target: Score,
        /// Explain this class instead of the predicted one.
        #[arg(long)]
        class: Option<u32>,
        /// Test images: `0..8`, `3,5,7`, `..100`.
        #[arg(long, default_value = "0..8")]
        indices: String,
        /// Model inputs per internal batch (IG steps, ensemble samples, perturbed copies).
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write attributions (N×C×H×W), inputs, targets and indices to this safetensors file.
        #[arg(long)]
        raw: Option<PathBuf>,
        /// With --raw, also write what a perturbation method drew for each image (`draws/<name>/<index>`: RISE's
        /// masks, LIME's and KernelSHAP's coalitions, the features, the occlusion windows).
        #[arg(long, requires = "raw")]
        draws: bool,
        /// Write one PNG per image (input, map, overlay) to this directory.
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "viridis")]
        colormap: Colormap,
        /// Where the gradients are computed: the CPU, or the GPU through wgpu (Vulkan, Metal or DX12; SimpleCNN,
        /// CAM and CBAM).
        #[arg(long, value_parser = ["cpu", "wgpu"], default_value = "cpu")]
        backend: String,
        /// With `--backend wgpu`: the adapter whose name contains NAME (see `whitebox info --adapters`).
        #[arg(long, value_name = "NAME")]
        adapter: Option<String>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        params: MethodParams,
    },
    /// The seed's coherence figure (a test image per class × every method), the seed's per-layer figure (ConvOutput
    /// at every layer), the per-layer Grad-CAM figure (<layers-out>-gc.png) and, for RAN and WARN, their own
    /// attention maps (<out>-attention.png).
    Coherence {
        /// One or more checkpoints of the same data set, drawn side by side.
        #[arg(long, required = true)]
        checkpoint: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Per-layer ConvOutput figure (default: <out>-layers.png); the Grad-CAM one goes beside it (…-gc.png).
        #[arg(long)]
        layers_out: Option<PathBuf>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Selectivity (the seed's, after Montavon et al.): remove the most relevant pixel, recompute the map, repeat;
    /// record accuracy and the true class's score per step. Resumable and shardable: one unit per method.
    Selectivity {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Comma-separated methods, each METHOD or ENSEMBLE:METHOD (e.g. gb,sg-sq:gb); default: the seed's seven.
        #[arg(long, default_value = "vbp,ib,deconvnet,gb,ig,gc,gbgc")]
        methods: String,
        #[command(flatten)]
        ensemble: EnsembleFlags,
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Pixels removed per step (1 as the seed; more for a faster variant).
        #[arg(long, default_value_t = 1)]
        pixels_per_step: usize,
        /// Fraction of the test set, drawn with --sample-seed (the seed: 10 %).
        #[arg(long, default_value_t = 0.1, value_parser = numbers::sample, allow_negative_numbers = true)]
        sample: f64,
        #[arg(long, default_value_t = 0)]
        sample_seed: u64,
        /// What a removed pixel becomes: black as the seed, or the data set's mean.
        #[arg(long, value_enum, default_value = "zero")]
        fill: Fill,
        #[arg(long, value_enum, default_value = "signed")]
        ranking: Ranking,
        /// Output directory (default: runs/selectivity-<dataset>-<model>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the maps and forward passes run: the CPU, or the GPU through wgpu (SimpleCNN, CAM and CBAM).
        #[arg(long, value_parser = ["cpu", "wgpu"], default_value = "cpu")]
        backend: String,
        /// With `--backend wgpu`: the adapter whose name contains NAME (see `whitebox info --adapters`).
        #[arg(long, value_name = "NAME")]
        adapter: Option<String>,
        #[command(flatten)]
        shard: ShardArgs,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        params: MethodParams,
    },
    /// Faithfulness and sanity metrics without retraining (ROAD, insertion/deletion, pixel flipping, faithfulness
    /// correlation, infidelity, max-sensitivity, MPRT, sMPRT, eMPRT, random logit) for methods on test images.
    /// Resumable and shardable: one unit per metric and method.
    Metrics {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Comma-separated methods, each METHOD or ENSEMBLE:METHOD (e.g. gb,sg-sq:gb).
        #[arg(long, default_value = "vbp,ib,deconvnet,gb,ig,gc,gbgc,random,sobel")]
        methods: String,
        /// Comma-separated metrics: road, insertion, deletion, pixel-flipping, faithfulness-correlation,
        /// infidelity, sensitivity-max, mprt, smprt, emprt, random-logit.
        #[arg(
            long,
            default_value = "road,insertion,deletion,pixel-flipping,faithfulness-correlation,infidelity,sensitivity-max,mprt,emprt,random-logit"
        )]
        metrics: String,
        /// Test images: indices and ranges, e.g. 0..100 or 3,7,10..20.
        #[arg(long, default_value = "0..100")]
        indices: String,
        #[command(flatten)]
        ensemble: EnsembleFlags,
        /// ROAD: comma-separated fractions of pixels removed.
        #[arg(long, default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")]
        road_fractions: String,
        /// Steps of the insertion, deletion and pixel-flipping curves.
        #[arg(long, default_value_t = 28)]
        curve_steps: usize,
        /// Perturbations per image for infidelity and max-sensitivity.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Faithfulness correlation: random subsets per image.
        #[arg(long, default_value_t = 100)]
        fc_runs: usize,
        /// Faithfulness correlation: pixels per subset (default: 1/16 of the image).
        #[arg(long, default_value_t = 0)]
        fc_subset: usize,
        /// sMPRT: noisy copies per map (the clean input is one of them).
        #[arg(long, default_value_t = 10)]
        smprt_samples: usize,
        /// A ROAR/KAR sweep's output directory: each method's mean accuracy under ROAR and KAR joins the summary
        /// and its rank-agreement table.
        #[arg(long)]
        roar_kar: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory (default: runs/metrics-<dataset>-<model>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        shard: ShardArgs,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        params: MethodParams,
    },
    /// ROAR (Hooker et al. 2019): remove the most relevant pixels of train and test images, retrain, test.
    Roar(SweepCli),
    /// KAR (Hooker et al. 2019): remove the least relevant pixels of train and test images, retrain, test.
    Kar(SweepCli),
    /// Merge the results of a Selectivity / ROAR / KAR directory (all shards) into figures and a markdown table;
    /// several ROAR/KAR directories (say one per model) are overlaid in one figure.
    Report {
        /// One evaluation directory, or several ROAR/KAR directories to overlay (then --out is required).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Output directory (default: DIR/report).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these ROAR/KAR methods, comma-separated (e.g. gc,co,cam).
        #[arg(long)]
        methods: Option<String>,
    },
    /// Rewrite a checkpoint with another float type (e.g. f16 to ship it).
    Convert {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "f16")]
        dtype: DtypeArg,
    },
}

#[derive(Subcommand)]
enum DataAction {
    /// Download, verify (SHA-256) and store a data set in the data directory.
    Fetch {
        #[arg(value_enum)]
        dataset: DatasetKind,
        /// Base URL or directory to fetch from instead of the canonical sources.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Write the demo page's gallery: the first N test images of each class, as records of one label byte and the
    /// image's bytes (channel-major).
    Gallery {
        #[arg(value_enum)]
        dataset: DatasetKind,
        /// Images per class.
        #[arg(long, default_value_t = 3)]
        per_class: usize,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        data: DataDir,
    },
}

fn run(cli: Cli) -> Result<()> {
    ui::set_quiet(cli.quiet);
    if let Some(t) = cli.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        rayon_init(t);
    }
    match cli.command {
        Command::Data { action: DataAction::Fetch { dataset, from, data } } => {
            let dir = datasets::data_dir(data.data_dir.as_deref());
            let path = datasets::fetch(dataset, &dir, from.as_deref())?;
            println!("{}", path.display());
        }
        Command::Data { action: DataAction::Gallery { dataset, per_class, out, data } } => {
            let dir = datasets::data_dir(data.data_dir.as_deref());
            let test = datasets::load(dataset, &dir)?.test;
            let bytes = datasets::gallery(&test, per_class)?;
            fsutil::write_atomic(&out, &bytes)?;
            println!("{}: {} images", out.display(), bytes.len() / (1 + test.image_len()));
        }
        Command::Train {
            dataset,
            model,
            training,
            optimizer,
            momentum,
            weight_decay,
            augment,
            limit,
            out,
            backend,
            adapter,
            data,
        } => {
            let spec = ModelSpec { arch: model, dataset };
            let defaults = training.config(dataset)?;
            let config = TrainConfig {
                optimizer,
                momentum,
                weight_decay,
                augment: augment.unwrap_or(defaults.augment),
                ..defaults
            };
            let seed = config.seed;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("runs/{dataset}-{}-seed{seed}", spec.arch)));
            train::run(train::TrainArgs {
                spec,
                config,
                limit,
                out,
                data_dir: datasets::data_dir(data.data_dir.as_deref()),
                device: Device::Cpu,
                gpu: explain::open_gpu(&backend, adapter.as_deref())?,
            })?;
        }
        Command::Eval { checkpoint, dataset, limit, backend, adapter, data } => {
            let dir = datasets::data_dir(data.data_dir.as_deref());
            let gpu = explain::open_gpu(&backend, adapter.as_deref())?;
            inspect::eval(&checkpoint, dataset, &dir, limit, gpu, &Device::Cpu)?;
        }
        Command::Attribute {
            checkpoint,
            dataset,
            method,
            ensemble,
            n,
            noise,
            target,
            class,
            indices,
            batch,
            seed,
            raw,
            draws,
            png,
            colormap,
            backend,
            adapter,
            data,
            params,
        } => {
            let ensemble = match (method.ensemble, ensemble) {
                (Some(a), Some(b)) if a != b => {
                    bail!("--method {method} and --ensemble {} name two ensembles", b.id())
                }
                (a, b) => a.or(b),
            };
            let explanation = whitebox_core::attribution::Explanation {
                method: method.method,
                ensemble,
                samples: n,
                noise_level: noise,
                settings: Settings { params: params.0, batch, seed },
                score: target,
            };
            explanation.validate()?;
            explain::attribute(
                explain::AttributeArgs {
                    checkpoint,
                    dataset,
                    data_dir: datasets::data_dir(data.data_dir.as_deref()),
                    indices,
                    class,
                    explanation,
                    raw,
                    draws,
                    png,
                    colormap,
                    gpu: explain::open_gpu(&backend, adapter.as_deref())?,
                },
                &Device::Cpu,
            )?;
        }
        Command::Coherence { checkpoint, out, layers_out, data } => {
            let dir = datasets::data_dir(data.data_dir.as_deref());
            explain::coherence(&checkpoint, &out, layers_out.as_deref(), &dir, &Device::Cpu)?;
        }
        Command::Selectivity {
            checkpoint,
            methods,
            ensemble,
            steps,
            pixels_per_step,
            sample,
            sample_seed,
            fill,
            ranking,
            out,
            backend,
            adapter,
            shard,
            data,
            params,
        } => {
            use whitebox_core::evaluation::SelectivityConfig;
            let spec = inspect::load_checkpoint(&checkpoint, &Device::Cpu)?.spec;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("runs/selectivity-{}-{}", spec.dataset, spec.arch)));
            evaluate::selectivity::run(evaluate::selectivity::SelectivityArgs {
                checkpoint,
                methods: evaluate::parse_methods(&methods)?,
                ensemble: ensemble.settings()?,
                config: SelectivityConfig { steps, pixels_per_step, fill, ranking, batch: 500 },
                sample,
                sample_seed,
                params: params.0,
                out: out.clone(),
                shard: evaluate::shard_from(shard.shard.as_deref(), shard.shard_count)?,
                data_dir: datasets::data_dir(data.data_dir.as_deref()),
                gpu: explain::open_gpu(&backend, adapter.as_deref())?,
            })?;
            report_and_print(&out)?;
        }
        Command::Metrics {
            checkpoint,
            methods,
            metrics,
            indices,
            ensemble,
            road_fractions,
            curve_steps,
            samples,
            fc_runs,
            fc_subset,
            smprt_samples,
            roar_kar,
            seed,
            out,
            shard,
            data,
            params,
        } => {
            let spec = inspect::load_checkpoint(&checkpoint, &Device::Cpu)?.spec;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("runs/metrics-{}-{}", spec.dataset, spec.arch)));
            let road_fractions = road_fractions
                .split(',')
                .map(|f| {
                    f.trim().parse::<f64>().map_err(|_| anyhow::anyhow!("--road-fractions: '{f}' is not a number"))
                })
                .collect::<Result<Vec<_>>>()?;
            evaluate::metrics::run(evaluate::metrics::MetricsArgs {
                checkpoint,
                methods: evaluate::parse_methods(&methods)?,
                metrics: evaluate::metrics::parse_metrics(&metrics)?,
                ensemble: ensemble.settings()?,
                params: params.0,
                indices,
                config: evaluate::metrics::MetricsConfig {
                    road_fractions,
                    curve_steps,
                    samples,
                    fc_runs,
                    fc_subset,
                    smprt_samples,
                    smprt_noise: 0.1,
                    seed,
                },
                out: out.clone(),
                shard: evaluate::shard_from(shard.shard.as_deref(), shard.shard_count)?,
                data_dir: datasets::data_dir(data.data_dir.as_deref()),
                roar_kar,
            })?;
            print!("{}", evaluate::metrics::summary(&out)?);
            report_and_print(&out)?;
        }
        Command::Roar(args) => sweep(whitebox_core::evaluation::Mode::Roar, args)?,
        Command::Kar(args) => sweep(whitebox_core::evaluation::Mode::Kar, args)?,
        Command::Report { dirs, out, methods } => {
            let methods = methods
                .map(|m| m.split(',').map(|s| Estimator::parse(s.trim())).collect::<whitebox_core::Result<Vec<_>>>())
                .transpose()?;
            for path in evaluate::report::write(&dirs, out.as_deref(), methods.as_deref())? {
                println!("{}", path.display());
            }
        }
        Command::Methods { json } => inspect::methods(json)?,
        Command::Info { adapters: true, .. } => {
            let all = whitebox_core::gpu::block_on(whitebox_core::gpu::Gpu::adapters());
            if all.is_empty() {
                bail!("no GPU adapter (on Linux, install a Vulkan driver; mesa-vulkan-drivers gives lavapipe)");
            }
            all.iter().for_each(|a| println!("{a}"));
        }
        Command::Info { model: Some(arch), dataset: Some(dataset), .. } => inspect::info(ModelSpec { arch, dataset })?,
        Command::Info { .. } => bail!("give --model and --dataset, or --adapters"),
        Command::Convert { checkpoint, out, dtype } => {
            let dtype = match dtype {
                DtypeArg::F32 => DType::F32,
                DtypeArg::F16 => DType::F16,
            };
            inspect::convert(&checkpoint, &out, dtype)?;
        }
    }
    Ok(())
}

/// Rewrites the directory's report after a worker finishes (every worker does; the last one sees every unit).
fn report_and_print(out: &std::path::Path) -> Result<()> {
    match evaluate::report::write(&[out.to_path_buf()], None, None) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
        }
        Err(e) => ui::note(format!("no report yet: {e:#}")),
    }
    Ok(())
}

fn sweep(mode: whitebox_core::evaluation::Mode, a: SweepCli) -> Result<()> {
    let spec = inspect::load_checkpoint(&a.checkpoint, &Device::Cpu)?.spec;
    let config = a.training.config(spec.dataset)?;
    let fill = match (a.fill, a.seed_variant) {
        (Some(f), _) => f,
        (None, true) => Fill::Zero,
        (None, false) => Fill::Mean,
    };
    let out = a.out.unwrap_or_else(|| PathBuf::from(format!("runs/roar-kar-{}-{}", spec.dataset, spec.arch)));
    evaluate::remove_retrain::run(evaluate::remove_retrain::SweepArgs {
        checkpoint: a.checkpoint,
        mode,
        methods: evaluate::parse_methods(&a.methods)?,
        ensemble: a.ensemble.settings()?,
        thresholds: a.thresholds,
        repeats: a.repeats,
        config,
        limit: a.limit,
        test_limit: a.test_limit,
        fill,
        ranking: a.ranking,
        seed_variant: a.seed_variant,
        params: a.params.0,
        out: out.clone(),
        shard: evaluate::shard_from(a.shard.shard.as_deref(), a.shard.shard_count)?,
        data_dir: datasets::data_dir(a.data.data_dir.as_deref()),
        gpu: explain::open_gpu(&a.backend, a.adapter.as_deref())?,
    })?;
    report_and_print(&out)
}

fn parse_estimator(s: &str) -> Result<Estimator> {
    Ok(Estimator::parse(s)?)
}

fn rayon_init(threads: usize) {
    // Ignored when the pool already exists (it does not at start-up).
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
}

fn main() {
    allocator::keep_freed_memory();
    // Behave like other command-line tools when the reader of our output goes away (`whitebox eval | head`).
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
