. bench/device_setup.sh
pj_ext_build 2>&1 | tail -1
(cd bench && timeout 130 python3 profile_step.py --mnist $MNIST --config pd32 --batch 8192 --steps 1 --precision tf32x3 --fold-products 0,1 2>&1 | grep -v "Warning\|warn\|cum_matrix\|Compiling\|it/s" | head -40)
timeout 400 python3 bench/vs_pyjuice.py --mnist $MNIST --configs pd32,pd64,pd128 --batch 8192 --precisions tf32x3 --jsonl $OUT/run75.jsonl 2>&1 | grep "^|\|rror"
