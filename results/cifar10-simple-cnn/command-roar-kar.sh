#!/bin/bash
# ROAR and KAR on CIFAR-10 for the shipped SimpleCNN: the seed's seven methods and the baselines random, Sobel and
# ConvOutput, reduced scale (4,000 training + 1,000 validation images, 1,000 test images, 8 epochs at lr 0.05 with
# cosine annealing, thresholds 0.1/0.3/0.5/0.7/0.9, one seed; as results/cifar10-cam and results/cifar10-cbam);
# Grad-CAM and ConvOutput first, for the by-model figure. Rerun to resume.
set -e
cd "$(dirname "$0")/../.."
B=${WHITEBOX:-whitebox}
A="--checkpoint weights/cifar10/simple-cnn.safetensors --methods gc,co,vbp,ib,deconvnet,gb,ig,gbgc,random,sobel \
   --limit 5000 --test-limit 1000 --epochs 8 --lr 0.05 --schedule cosine --thresholds 0.1,0.3,0.5,0.7,0.9 \
   --data-dir ${WHITEBOX_DATA:-data} --out results/cifar10-simple-cnn"
$B roar $A && $B kar $A
$B report results/cifar10-simple-cnn
