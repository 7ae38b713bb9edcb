name=$1; shift
ncdpo train --algo ncdpo --env Hopper-v5 --seed 1 --total-env-steps 100000 --out-dir /tmp/sweep --run-name $name --overwrite \
  --env.n-envs 16 --ppo.n-steps 128 --ppo.minibatch-size 256 --ppo.update-epochs 10 --horizon 1 --act-steps 1 --torch-threads 1 --save-every 1000 --progress false \
  --ppo.actor-lr 3e-4 --diffusion.denoising-steps 10 --diffusion.clip-last-step false "$@" > /tmp/sweep/$name.log 2>&1
