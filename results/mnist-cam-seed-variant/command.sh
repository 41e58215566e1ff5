#!/bin/bash
# The seed's protocol (--seed-variant) for CAM with its CAM maps on MNIST, at the reduced scale of results/mnist-simple-cnn; rerun to resume.
set -e
cd "$(dirname "$0")/../.."
B=${WHITEBOX:-whitebox}
A="--checkpoint weights/mnist/cam.safetensors --methods cam --seed-variant --limit 4000 --test-limit 2000 --epochs 3 --lr 0.05 --schedule cosine --thresholds 0.1,0.3,0.5,0.7,0.9 \
   --data-dir ${WHITEBOX_DATA:-data} --out results/mnist-cam-seed-variant"
$B roar $A && $B kar $A
$B report results/mnist-cam-seed-variant
