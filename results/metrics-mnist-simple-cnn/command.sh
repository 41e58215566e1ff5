#!/bin/bash
# The metrics on MNIST SimpleCNN for the seed's methods and the baselines; rerun to resume.
cd /work/main
/work/whitebox-metrics-bin metrics --checkpoint weights/mnist/simple-cnn.safetensors \
  --methods vbp,ib,deconvnet,gb,ig,gc,gbgc,random,sobel \
  --metrics road,insertion,deletion,pixel-flipping,faithfulness-correlation,infidelity,sensitivity-max,mprt,smprt,emprt,random-logit \
  --indices 0..200 --data-dir /work/shared/data --out results/metrics-mnist-simple-cnn \
  --roar-kar results/mnist-simple-cnn
