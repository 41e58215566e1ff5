#!/bin/bash
# The device check for issues 19/20, prepared and run as one call: the real-GPU training bench (bench-backends),
# a full MNIST SimpleCNN epoch through `--backend wgpu`, then RAN-56 on all of MNIST for the time left.
# Run from the repository root of the device machine with $OUT set (the device tool sets it); COMMIT names the commit
# the binaries were built from. Carried: .gl/ (the Vulkan loader's .deb files), .dev/ (whitebox.xz and bench-backends.xz,
# release builds; data/mnist/ with the four IDX files). Everything it measures lands in $OUT.
set -u
T0=$(date +%s)
LIMIT=${LIMIT:-470}
A=${ADAPTER:-NVIDIA}
BENCH=${BENCH:---threads 16 --batch 128 --steps 5 --models simple-cnn,cam,cbam,ran,warn}
el() { echo "== [$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/log.txt"; }
[ -n "${SKIP_GL:-}" ] || { for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; }
if ! ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | grep -qi nvidia; then
    [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] &&
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
mkdir -p .dev/bin
for b in whitebox bench-backends; do xz -dc ".dev/$b.xz" > ".dev/bin/$b"; chmod +x ".dev/bin/$b"; done
B=$PWD/.dev/bin
export CARGO_MANIFEST_DIR=$PWD/native WHITEBOX_SHARED_DATA=$PWD/.dev/data WHITEBOX_DATA=$PWD/.dev/data
{
    echo "# commit: ${COMMIT:-?}"
    echo "# date: $(date -u +%FT%TZ)"
    echo "# machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
} | tee -a "$OUT/log.txt"
el "adapters"
"$B/whitebox" info --adapters 2>&1 | tee -a "$OUT/log.txt"
"$B/whitebox" info --adapters 2>&1 | grep -qi "$A" || { el "no $A adapter: stop"; exit 3; }

el "bench-backends $BENCH --adapter $A"
timeout 170 "$B/bench-backends" $BENCH --adapter "$A" 2>&1 | tee "$OUT/bench-backends.txt"
el "bench-backends exit ${PIPESTATUS[0]}"

el "simple-cnn, all of MNIST, 3 epochs, --backend wgpu"
timeout 100 "$B/whitebox" train --dataset mnist --model simple-cnn --epochs 3 --batch-size 128 --lr 0.01 --seed 223 \
    --backend wgpu --adapter "$A" --data-dir .dev/data --out /tmp/sc 2>&1 | tr '\r' '\n' | tail -5 | tee -a "$OUT/log.txt"
cp /tmp/sc/log.json "$OUT/simple-cnn-log.json" 2>/dev/null
el "simple-cnn done"

line=$(grep -E '^\| ran \|' "$OUT/bench-backends.txt")
cpu=$(echo "$line" | awk -F'|' '{print $3+0}'); gpu=$(echo "$line" | awk -F'|' '{print $4+0}')
backend="--backend wgpu --adapter $A"
awk "BEGIN{exit !(${cpu:-0} > ${gpu:-0})}" && backend="--backend cpu --threads 16"
left=$(( LIMIT - ($(date +%s) - T0) ))
el "ran-56, all of MNIST, the seed's settings, $backend, for $left s"
ran() {
    timeout "$1" "$B/whitebox" train --dataset mnist --model ran --epochs 30 --batch-size 128 --lr 0.01 --seed 223 \
        $2 --data-dir .dev/data --out /tmp/ran 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -5 | tee -a "$OUT/log.txt"
    return "${PIPESTATUS[0]}"
}
ran "$left" "$backend"; status=$?
el "ran exit $status"
left=$(( LIMIT - ($(date +%s) - T0) ))
if [ "$status" != 124 ] && [ "$status" != 0 ] && [ "$left" -gt 60 ] && [ "$backend" != "--backend cpu --threads 16" ]; then
    el "ran-56 again on the CPU trainer for $left s"
    ran "$left" "--backend cpu --threads 16"
fi
cp /tmp/ran/log.json "$OUT/ran-log.json" 2>/dev/null
if [ -f /tmp/ran/best.safetensors ]; then
    "$B/whitebox" convert --checkpoint /tmp/ran/best.safetensors --out /tmp/ran-f16.safetensors --dtype f16 &&
        split -b 15M -d /tmp/ran-f16.safetensors "$OUT/ran-f16.part" && sha256sum /tmp/ran-f16.safetensors | tee -a "$OUT/log.txt"
fi
el "end"
