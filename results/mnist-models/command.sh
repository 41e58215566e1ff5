#!/bin/bash
# The seed's "ROAR/KAR by model" figure: SimpleCNN with Grad-CAM and ConvOutput, CAM with its
# CAM, CBAM with Grad-CAM and ConvOutput, overlaid from the three sweeps (each made by its own command.sh).
set -e
cd "$(dirname "$0")/../.."
${WHITEBOX:-whitebox} report results/mnist-simple-cnn results/mnist-cam results/mnist-cbam --methods gc,co,cam \
  --out results/mnist-models
