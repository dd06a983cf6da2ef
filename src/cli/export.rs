//! `jina-wasm export`: a Flow as Kubernetes manifests or a Docker Compose file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::export::{Plan, compose, kubernetes};

/// Write a Flow out for a cluster engine: Kubernetes manifests or a Docker
/// Compose file, from the same resolved Flow that `jina-wasm flow` runs.
///
/// Every unit (the gateway, each Pod's head, its shards or replicas, each
/// singleton Pea) runs the one `jina-wasm` image with its own arguments; the
/// executors come from a second image whose /executors/ holds the `.wasm`
/// files (`docker build --target executors`). docs/kubernetes.md explains
/// building the images, applying and scaling.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Kubernetes manifests, one file per unit, into OUTDIR.
    Kubernetes {
        /// The Flow YAML file.
        flow: PathBuf,
        /// The directory to write (created if missing).
        outdir: PathBuf,
        /// The namespace of every object (a Namespace object is written too).
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        images: Images,
        /// Size of each shard's (and stateful Pea's) persistent volume.
        #[arg(long, default_value = "1Gi")]
        volume_size: String,
        /// StorageClass of those volumes [default: the cluster's default].
        #[arg(long)]
        storage_class: Option<String>,
    },
    /// A Docker Compose file.
    DockerCompose {
        /// The Flow YAML file.
        flow: PathBuf,
        /// The Compose file to write.
        file: PathBuf,
        #[command(flatten)]
        images: Images,
    },
}

/// The two images of an export.
#[derive(Debug, Clone, Args)]
pub struct Images {
    /// The `jina-wasm` image every unit runs (the repository's Dockerfile).
    #[arg(long, default_value = concat!("jina-wasm:", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    /// An image holding the Flow's executors in /executors/ (the Dockerfile's
    /// `executors` target, or `FROM jina-wasm` + `COPY *.wasm /executors/`).
    #[arg(long, default_value = concat!("jina-wasm-executors:", env!("CARGO_PKG_VERSION")))]
    pub executors_image: String,
}

impl ExportCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            ExportCommand::Kubernetes {
                flow,
                outdir,
                namespace,
                images,
                volume_size,
                storage_class,
            } => {
                if let Some(ns) = &namespace
                    && (ns.is_empty()
                        || ns.len() > 63
                        || !ns
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                {
                    anyhow::bail!(
                        "--namespace `{ns}`: a namespace is lower-case letters, digits and `-`, at most 63"
                    );
                }
                let quantity =
                    volume_size.trim_end_matches(['K', 'M', 'G', 'T', 'P', 'E', 'i', 'k']);
                if quantity.is_empty()
                    || quantity.parse::<f64>().is_err()
                    || !volume_size.starts_with(|c: char| c.is_ascii_digit())
                {
                    anyhow::bail!(
                        "--volume-size `{volume_size}`: not a Kubernetes quantity such as 1Gi or 500Mi"
                    );
                }
                let plan = Plan::new(&flow)?;
                let options = kubernetes::Options {
                    namespace,
                    image: images.image,
                    executors_image: images.executors_image,
                    volume_size,
                    storage_class,
                };
                let files = kubernetes::write(&plan, &options, &outdir)?;
                eprintln!(
                    "wrote {} files to {}: {}",
                    files.len(),
                    outdir.display(),
                    files.join(", ")
                );
                eprintln!(
                    "executors the image must hold in /executors/: {}",
                    plan.executors
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            ExportCommand::DockerCompose { flow, file, images } => {
                let plan = Plan::new(&flow)?;
                compose::write(
                    &plan,
                    &compose::Options {
                        image: images.image,
                        executors_image: images.executors_image,
                    },
                    &file,
                )?;
                eprintln!("wrote {}", file.display());
                eprintln!(
                    "executors the image must hold in /executors/: {}",
                    plan.executors
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
