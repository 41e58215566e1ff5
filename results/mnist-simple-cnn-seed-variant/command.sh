#!/bin/bash
# The seed's ROAR/KAR protocol (--seed-variant: training images masked with black, validation and test images left
# unmodified) at the reduced scale of results/mnist-simple-cnn, so the seed's published curves compare like with
# like; rerun to resume.
set -e
cd "$(dirname "$0")/../.."
B=${WHITEBOX:-whitebox}
A="--checkpoint weights/mnist/simple-cnn.safetensors --seed-variant --limit 4000 --test-limit 2000 --epochs 3 \
   --lr 0.05 --schedule cosine --thresholds 0.1,0.3,0.5,0.7,0.9 --data-dir ${WHITEBOX_DATA:-data} \
   --out results/mnist-simple-cnn-seed-variant"
$B roar $A && $B kar $A
$B report results/mnist-simple-cnn-seed-variant
