//! Data sets as the papers and the seed use them: MNIST (LeCun et al. 1998) and CIFAR-10 (Krizhevsky 2009).
//!
//! Parsing works on bytes, so it runs natively and in WebAssembly alike. Every length, magic number and count is
//! checked; a bad file gives [`crate::Error::Data`] naming the file and what was wrong.

mod cifar10;
mod drawing;
mod images;
mod indices;
mod mnist;
mod photo;

pub use cifar10::{parse_cifar10_batch, parse_cifar10_tar_gz, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES};
pub use drawing::mnist_from_drawing;
pub use images::{train_validation_split, ImageSet, Split};
pub use indices::parse_indices;
pub use mnist::{
    gunzip_if_needed, gunzip_limited, mnist_set, parse_idx_images, parse_idx_labels, MAX_INFLATED, MNIST_FILES,
};
pub use photo::input_from_image;

use serde::{Deserialize, Serialize};

/// The data sets whitebox knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DatasetKind {
    Mnist,
    Cifar10,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::Cifar10];

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// The data set's name as people write it.
    pub fn title(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "MNIST",
            DatasetKind::Cifar10 => "CIFAR-10",
        }
    }

    pub fn parse(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "cifar10" => Ok(DatasetKind::Cifar10),
            other => {
                Err(crate::Error::InvalidArgument(format!("unknown dataset '{other}' (expected mnist or cifar10)")))
            }
        }
    }

    pub fn channels(self) -> usize {
        match self {
            DatasetKind::Mnist => 1,
            DatasetKind::Cifar10 => 3,
        }
    }

    /// Height and width of one image.
    pub fn side(self) -> usize {
        match self {
            DatasetKind::Mnist => 28,
            DatasetKind::Cifar10 => 32,
        }
    }

    /// Per-channel normalisation mean, as the seed applies it.
    pub fn mean(self) -> &'static [f32] {
        match self {
            DatasetKind::Mnist => &[0.1307],
            DatasetKind::Cifar10 => &[0.4914, 0.4822, 0.4465],
        }
    }

    /// Per-channel normalisation standard deviation, as the seed applies it. For CIFAR-10 the seed uses the widely
    /// copied (0.2023, 0.1994, 0.2010), not the true training-set std (0.2470, 0.2435, 0.2616); weights trained here
    /// expect the seed's values.
    pub fn std(self) -> &'static [f32] {
        match self {
            DatasetKind::Mnist => &[0.3081],
            DatasetKind::Cifar10 => &[0.2023, 0.1994, 0.2010],
        }
    }

    /// Class names in the seed's table layout.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => [
                "0 - zero",
                "1 - one",
                "2 - two",
                "3 - three",
                "4 - four",
                "5 - five",
                "6 - six",
                "7 - seven",
                "8 - eight",
                "9 - nine",
            ],
            DatasetKind::Cifar10 => {
                ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
            }
        }
    }

    pub fn num_classes(self) -> usize {
        10
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
