#!/bin/bash
# The seed's protocol (--seed-variant) by model on CIFAR-10: SimpleCNN and CBAM with Grad-CAM and ConvOutput, CAM
# with its CAM, overlaid from the three sweeps; runs (or resumes) the sweeps first, CAM's (cheapest) first.
set -e
cd "$(dirname "$0")/../.."
for m in cam simple-cnn cbam; do bash results/cifar10-$m-seed-variant/command.sh; done
${WHITEBOX:-whitebox} report results/cifar10-simple-cnn-seed-variant results/cifar10-cam-seed-variant \
  results/cifar10-cbam-seed-variant --methods gc,co,cam --out results/cifar10-models-seed-variant
