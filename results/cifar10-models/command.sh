#!/bin/bash
# The seed's "ROAR/KAR by model" figure on CIFAR-10: SimpleCNN with Grad-CAM and ConvOutput, CAM with its CAM, CBAM
# with Grad-CAM and ConvOutput, overlaid from the three sweeps (each made by its own command script).
set -e
cd "$(dirname "$0")/../.."
${WHITEBOX:-whitebox} report results/cifar10-simple-cnn results/cifar10-cam results/cifar10-cbam --methods gc,co,cam \
  --out results/cifar10-models
