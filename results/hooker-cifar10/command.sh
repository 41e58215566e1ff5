#!/bin/bash
# Hooker et al. (2019) estimators under ROAR on CIFAR-10, reduced scale; rerun to resume.
cd /work/main
nice -n 5 /work/whitebox-roar-bin roar --checkpoint weights/cifar10/simple-cnn.safetensors \
  --methods vbp,sg:vbp,sg-sq:vbp,sg-var:vbp,gb,sg:gb,sg-sq:gb,sg-var:gb,ig,sg:ig,sg-sq:ig,sg-var:ig,random,sobel \
  --ensemble-n 10 --noise 0.15 --ig-steps 16 --ranking absolute --fill mean --repeats 2 \
  --limit 5000 --test-limit 1000 --epochs 8 --lr 0.05 --schedule cosine --thresholds 0.1,0.5,0.9 \
  --data-dir /work/shared/data --out results/hooker-cifar10
