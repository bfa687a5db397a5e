# The settings the image walkthrough and its follow-ups share (sourced; ROOT is the repository).
# shellcheck disable=SC2034
M="--set data.name=mnist --set data.path=$ROOT/../shared/data/mnist --set data.image_size=14
   --set evaluate.n_samples=500 --set evaluate.train_samples=200 --set threads=1"
FAST="--set sampler.kind=fastdpm --set sampler.steps=10 --set sampler.fastdpm.approach=VAR
  --set sampler.fastdpm.schedule=quadratic --set sampler.fastdpm.kappa=1 --set sampler.fastdpm.reverse=ddpm
  --set sampler.noise_at_last_step=true"
# the walkthrough's fine-tuning settings (the paper's image preset at a small size), without the learning rate
SFT="--preset images --set finetune.batch_size=32 --set finetune.critic_channels=[32,64,128]
  --set finetune.baseline_hidden=[256,256,64] --set finetune.lr_critic=2e-4 --set finetune.lr_baseline=2e-4
  --set finetune.eval_every=50"
