. bench/device_setup.sh
pj_ext_build 2>&1 | tail -1
cd bench
for c in hclt64 hclt32 rat64; do timeout 100 python3 peak_memory.py --mnist $MNIST --config $c --batch 512 --top 14 2>&1 | grep -v "Warning\|warn\|cum_matrix\|Compiling\|it/s"; done
timeout 150 python3 profile_step.py --mnist $MNIST --config hclt128 --batch 512 --steps 3 --precision tf32x3 2>&1 | grep -v "Warning\|warn\|cum_matrix\|Compiling\|it/s" | head -30
timeout 200 python3 profile_step.py --mnist $MNIST --config pd128 --batch 8192 --steps 1 --precision tf32x3 2>&1 | grep -v "Warning\|warn\|cum_matrix\|Compiling\|it/s" | head -30
