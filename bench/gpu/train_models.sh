#!/usr/bin/env bash
# On a lent GPU machine (device tool): train the bundled ResNet-20 and the quantization-sensitive
# MobileNetV2 with qdeploy's own trainer. Data arrives packed in .gpu/ (bench/gpu/pack_cifar.py).
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 bench/gpu/unpack_cifar.py /tmp/cifar10 train=.gpu/train.npz test=.gpu/test.npz
R20_EPOCHS=${R20_EPOCHS:-60}; MBV2_EPOCHS=${MBV2_EPOCHS:-30}
python3 -m qdeploy train --arch resnet20-cifar --preset fast --epochs "$R20_EPOCHS" --lr 0.4 --batch-size 512 \
  --data /tmp/cifar10 --out /tmp/r20 --device cuda 2>&1 | grep -v "it/s" | tee /tmp/r20.log
python3 -m qdeploy train --arch mobilenetv2-cifar --preset fast --epochs "$MBV2_EPOCHS" --lr 0.2 --batch-size 256 \
  --weight-decay 4e-5 --data /tmp/cifar10 --out /tmp/mbv2 --device cuda 2>&1 | grep -v "it/s" | tee /tmp/mbv2.log
for m in r20 mbv2; do
  mkdir -p $OUT/$m
  cp /tmp/$m/best.pth /tmp/$m/best.json /tmp/$m/history.json /tmp/$m/curves.png $OUT/$m/
done
