#!/bin/bash
# ROAR and KAR for RAN-56 on MNIST with Grad-CAM and ConvOutput maps (the seed's "ROAR/KAR by model"), at the reduced
# scale of results/mnist-simple-cnn and results/mnist-cbam (same images, epochs, schedule and thresholds, RAN's own
# learning rate and batch size); rerun to resume. The checkpoint is not in the repository (56 MB in f16): it is the
# RAN-56 trained on all of MNIST on an H200 (results/attention-models/ran-mnist-h200/: command, log, test accuracy
# 0.9897, SHA-256); RAN_CHECKPOINT names it.
set -e
cd "$(dirname "$0")/../.."
B=${WHITEBOX:-whitebox}
# RAN retrains at the seed's rate on batches of 32: at the SimpleCNN family's lr 0.05 on batches of 128 its
# retraining diverged (first epoch's loss 9.9, test accuracy 0.18 with nothing removed).
A="--checkpoint ${RAN_CHECKPOINT:-runs/mnist-ran-h200/best-f16.safetensors} --methods gc,co --limit 4000 --test-limit 2000 \
   --epochs 3 --batch-size 32 --lr 0.01 --schedule cosine --thresholds 0.1,0.3,0.5,0.7,0.9 \
   --data-dir ${WHITEBOX_DATA:-data} --out results/mnist-ran"
$B roar $A && $B kar $A
$B report results/mnist-ran
