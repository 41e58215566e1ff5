#!/bin/bash
# The seed's protocol (--seed-variant) for cam on CIFAR-10 with cam, at the reduced scale of results/cifar10-cam
# (4,000 training + 1,000 validation images, 1,000 test images, 8 epochs, lr 0.05 cosine, five thresholds); rerun to
# resume.
set -e
cd "$(dirname "$0")/../.."
B=${WHITEBOX:-whitebox}
A="--checkpoint weights/cifar10/cam.safetensors --methods cam --seed-variant --limit 5000 --test-limit 1000 --epochs 8 \
   --lr 0.05 --schedule cosine --thresholds 0.1,0.3,0.5,0.7,0.9 --data-dir ${WHITEBOX_DATA:-data} \
   --out results/cifar10-cam-seed-variant"
$B roar $A && $B kar $A
$B report results/cifar10-cam-seed-variant
