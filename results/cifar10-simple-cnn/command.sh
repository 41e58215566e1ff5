#!/bin/bash
# Selectivity on CIFAR-10 with the seed's protocol (its 10 % sample: 1,000 test images; 50 steps of one pixel;
# black fill; the seed's seven methods), the shipped SimpleCNN. Rerun to resume: finished methods are skipped and
# the one in progress continues from its last step.
cd /work/main
nice -n 5 /work/whitebox-roar-bin selectivity --checkpoint weights/cifar10/simple-cnn.safetensors \
  --data-dir /work/shared/data --out results/cifar10-simple-cnn
