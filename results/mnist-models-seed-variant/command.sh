#!/bin/bash
# The seed's "ROAR/KAR by model" figure under its own protocol (--seed-variant): SimpleCNN with Grad-CAM and ConvOutput, CAM with its
# CAM, CBAM with Grad-CAM and ConvOutput, overlaid from the three sweeps (each made by its own command.sh).
set -e
cd "$(dirname "$0")/../.."
${WHITEBOX:-whitebox} report results/mnist-simple-cnn-seed-variant results/mnist-cam-seed-variant results/mnist-cbam-seed-variant --methods gc,co,cam \
  --out results/mnist-models-seed-variant
